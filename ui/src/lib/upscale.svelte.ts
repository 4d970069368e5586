// Upscaling a gallery image: what the core offers (Lanczos, Nearest, then the ESRGAN models in the models folders),
// the upscaler the user picked (kept for the session), and the job itself, queued like any other.
import { commands } from "./bindings";
import type { Upscaled } from "./bindings";
import { call, errorText, isAppError } from "./api";
import { plainText } from "./errors";
import { baseName } from "./gallery";
import { refreshQueue, toast, trackOwnJob } from "./state.svelte";

/** The resamplers every core has: no model to load. */
export const BUILTIN_UPSCALERS = ["Lanczos", "Nearest"];

/** The enlargements the detail view offers. */
export const UPSCALE_FACTORS = [2, 4] as const;

export const upscaling = $state({
  /** What `upscalers` answered last (the built-in ones until it has). */
  upscalers: [...BUILTIN_UPSCALERS] as string[],
  /** The upscaler the user picked this session; `null` until they pick one (the default is then used). */
  chosen: null as string | null,
});

/** The upscaler offered first: the first ESRGAN model when there is one (it gives sharper results), else Lanczos. */
export function defaultUpscaler(upscalers: string[]): string {
  return upscalers.find((u) => !BUILTIN_UPSCALERS.includes(u)) ?? "Lanczos";
}

/** The upscaler to use now: the one picked this session while it is still offered, else the default. */
export function currentUpscaler(): string {
  const { chosen, upscalers } = upscaling;
  return chosen !== null && upscalers.includes(chosen) ? chosen : defaultUpscaler(upscalers);
}

/** Reads the upscalers again (a model may have been added); a core that cannot answer leaves the built-in ones. */
export async function loadUpscalers(): Promise<string[]> {
  try {
    const list = await commands.upscalers();
    upscaling.upscalers = Array.isArray(list) && list.length ? list : [...BUILTIN_UPSCALERS];
  } catch {
    upscaling.upscalers = [...BUILTIN_UPSCALERS];
  }
  return upscaling.upscalers;
}

/** Back to nothing picked (a new session; the tests). */
export function resetUpscaling(): void {
  upscaling.upscalers = [...BUILTIN_UPSCALERS];
  upscaling.chosen = null;
}

/** "2", "1.5": a scale as the user reads it. */
export function scaleText(scale: number): string {
  return String(Number(scale.toFixed(2)));
}

/**
 * Queues the enlargement of gallery image `id` by `scale` with `upscaler`. The job is this window's own (Generate
 * shows its progress and result, as for an image it generated); a calm toast says it is queued, and a refusal is told
 * in an error toast in the core's words. Answers the job's id, or `null` when the core refused.
 */
export async function upscaleImage(id: number, scale: number, upscaler: string): Promise<string | null> {
  try {
    const job = await call(commands.upscaleGalleryImage(id, scale, upscaler));
    trackOwnJob(job, `Upscale ×${scaleText(scale)} of image #${id} with ${upscaler}`);
    toast(`Upscaling ×${scaleText(scale)} with ${upscaler} — it's in the queue`);
    void refreshQueue().catch(() => {});
    return job;
  } catch (e) {
    const raw = isAppError(e) ? e.message : errorText(e);
    const plain = plainText(raw);
    toast(`Can't upscale: ${plain ?? raw}`, "error", undefined, plain ? raw : null);
    return null;
  }
}

/**
 * How an upscaled image was made, in words: "Upscaled ×2 from 512×512 with Lanczos". A record without its scale
 * gets it from the sizes (`width` is the upscaled image's).
 */
export function upscaledText(upscale: Upscaled, width: number): string {
  const scale = upscale.scale ?? (upscale.source_width > 0 ? width / upscale.source_width : null);
  const by = scale != null && Number.isFinite(scale) ? ` ×${scaleText(scale)}` : "";
  return `Upscaled${by} from ${upscale.source_width}×${upscale.source_height} with ${upscale.upscaler}`;
}

/** The source file's name, for an image upscaled from a file rather than from the gallery. */
export function sourceFileName(upscale: Upscaled): string | null {
  return upscale.source_file ? baseName(upscale.source_file) : null;
}
