// Refining a gallery image: img2img of the image itself at a low strength, with its own prompt, model, parameters and
// seed, queued like any render. The strength the user picked is kept for the session (the detail view sets it, and
// Generate's results use the same one).
import { commands } from "./bindings";
import type { Entry } from "./bindings";
import { call, errorText, isAppError } from "./api";
import { plainText } from "./errors";
import { refreshQueue, toast, trackOwnJob } from "./state.svelte";

/** The strength a refine uses until the user picks another (the core's own default). */
export const DEFAULT_REFINE_STRENGTH = 0.35;
export const REFINE_MIN = 0.05;
export const REFINE_MAX = 1;
export const REFINE_STEP = 0.05;

/** Why an image cannot be refined, when its record has no generation parameters (no model). */
export const REFINE_NEEDS_PARAMETERS = "Refine needs the image's generation parameters";

export const refining = $state({
  /** The strength picked this session. */
  strength: DEFAULT_REFINE_STRENGTH,
});

/** `value` as a strength the control offers: within 0.05–1, on a 0.05 step (the default when it is not a number). */
export function refineStrength(value: number): number {
  if (!Number.isFinite(value)) return DEFAULT_REFINE_STRENGTH;
  const stepped = Math.round(value / REFINE_STEP) * REFINE_STEP;
  return Number(Math.min(REFINE_MAX, Math.max(REFINE_MIN, stepped)).toFixed(2));
}

/** Keeps `value` (made a valid strength) as the session's refine strength. */
export function setRefineStrength(value: number): void {
  refining.strength = refineStrength(value);
}

/** Back to the default strength (a new session; the tests). */
export function resetRefining(): void {
  refining.strength = DEFAULT_REFINE_STRENGTH;
}

/** "0.35": a strength as the user reads it. */
export function strengthText(strength: number): string {
  return strength.toFixed(2);
}

/** Why image `entry` cannot be refined, or `null` when it can (its record names the model it was made with). */
export function refineBlocker(entry: Entry | null | undefined): string | null {
  if (!entry) return null;
  return entry.model == null || entry.model === "" ? REFINE_NEEDS_PARAMETERS : null;
}

/**
 * Queues the refine of gallery image `id` at `strength`. The job is this window's own (Generate shows its progress and
 * result, as for an image it generated); a calm toast says it is queued, and a refusal is told in an error toast in
 * the core's words. Answers the job's id, or `null` when the core refused.
 */
export async function refineImage(id: number, strength: number = refining.strength): Promise<string | null> {
  const at = refineStrength(strength);
  try {
    const job = await call(commands.galleryRefine(id, at));
    trackOwnJob(job, `Refine of image #${id} at strength ${strengthText(at)}`);
    toast(`Refining at strength ${strengthText(at)} — it's in the queue`);
    void refreshQueue().catch(() => {});
    return job;
  } catch (e) {
    const raw = isAppError(e) ? e.message : errorText(e);
    const plain = plainText(raw);
    toast(`Can't refine: ${plain ?? raw}`, "error", undefined, plain ? raw : null);
    return null;
  }
}
