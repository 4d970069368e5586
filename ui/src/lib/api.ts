// Thin helpers over the generated bindings: unwrap typed results into exceptions the panels catch, turn any error
// into a readable sentence, and build the URLs of gallery images.
import { convertFileSrc } from "@tauri-apps/api/core";
import type { AppError, CatalogEntry } from "./bindings";

export type Result<T> = { status: "ok"; data: T } | { status: "error"; error: AppError };

/** The command's value, or throws its AppError. */
export async function call<T>(pending: Promise<Result<T>>): Promise<T> {
  const result = await pending;
  if (result.status === "error") throw result.error;
  return result.data;
}

export function isAppError(e: unknown): e is AppError {
  return typeof e === "object" && e !== null && "message" in e && "field" in e;
}

/** A sentence for any failure: an AppError, an Error, or what Tauri rejects with (a string). */
export function errorText(e: unknown): string {
  if (isAppError(e)) return e.field ? `${label(e.field)}: ${e.message}` : e.message;
  if (e instanceof Error) return e.message;
  if (typeof e === "string") return e;
  return "Something went wrong; see the log for details.";
}

const LABELS: Record<string, string> = {
  model: "Model",
  prompt: "Prompt",
  negative_prompt: "Negative prompt",
  width: "Width",
  height: "Height",
  steps: "Steps",
  cfg_scale: "CFG scale",
  sampler: "Sampler",
  scheduler: "Scheduler",
  seed: "Seed",
  count: "Count",
  loras: "LoRA",
  init_image: "Init image",
  mask: "Mask",
  strength: "Strength",
  hires: "Hires fix",
  "hires.scale": "Hires scale",
  "hires.width": "Hires width",
  "hires.height": "Hires height",
  "hires.steps": "Hires steps",
  "hires.denoising_strength": "Denoising strength",
  "hires.upscaler": "Upscaler",
  upscaler: "Upscaler",
  scale: "Scale",
  control: "ControlNet",
  control_model: "ControlNet model",
  "control.model": "ControlNet model",
  control_image: "Control image",
  "control.image": "Control image",
  control_module: "Preprocessor",
  "control.module": "Preprocessor",
  control_strength: "Control strength",
  "control.strength": "Control strength",
  control_low: "Low threshold",
  "control.low_threshold": "Low threshold",
  control_high: "High threshold",
  "control.high_threshold": "High threshold",
  memory: "Memory & speed defaults",
  model_keep_alive: "Keep an idle model loaded for",
  vram_budget_gib: "VRAM budget",
  vae_tiling: "VAE tiling",
  vae_tile_size: "Tile size",
  vae_tile_overlap: "Tile overlap",
  flash_attn: "Flash attention",
  mmap: "Memory-map weights",
  cache: "Step cache",
  weight_type: "Weight type",
  part: "Part",
  output: "File name",
  models_dir: "Models folder",
  extra_models_dirs: "Other model folders",
  outputs_dir: "Outputs folder",
  ollama_url: "Ollama URL",
  vram_policy: "Before each render",
  after_queue: "When the queue is empty",
  gateway_enabled: "Ollama gateway",
  gateway_port: "Gateway port",
  api_enabled: "Local API",
  api_host: "Host",
  api_port: "Port",
  api_key: "API key",
  threads: "CPU threads",
  theme: "Theme",
  hf_token: "Hugging Face token",
};

export function label(field: string): string {
  if (LABELS[field]) return LABELS[field];
  if (field.startsWith("loras")) return "LoRA";
  if (field.startsWith("memory.placement.")) return `Where ${field.slice("memory.placement.".length).replaceAll("_", " ")} runs`;
  if (field.startsWith("memory.")) return label(field.slice("memory.".length));
  return field.replaceAll("_", " ");
}

/** Who sent a job (`JobInfo.source`), in words. */
export function sourceName(source: string): string {
  const names: Record<string, string> = {
    app: "this app",
    openai: "Open WebUI / OpenAI API",
    a1111: "AUTOMATIC1111 API",
    "a1111-txt2img": "AUTOMATIC1111 API",
    "a1111-img2img": "AUTOMATIC1111 API (img2img)",
    api: "DiffuGen API",
    cli: "DiffuGen command line",
    legacy: "DiffuGen API (old endpoints)",
  };
  return names[source] ?? source;
}

/** `gallery://` URL of an image's thumbnail or full file (served by the app, only for gallery images). */
export function galleryUrl(kind: "thumb" | "image", id: number): string {
  return convertFileSrc(`${kind}-${id}`, "gallery");
}

/** "1 step", "20 steps": a count with its noun, singular for one. */
export function plural(count: number, noun: string, nouns = `${noun}s`): string {
  return `${count.toLocaleString()} ${count === 1 ? noun : nouns}`;
}

/**
 * An amount of memory (VRAM, RAM) the way the core and GPU tools write it: binary units, "3.2 GiB", and "480 MiB"
 * under a tenth of a GiB. File sizes on disk use {@link formatBytes}.
 */
export function formatMemory(bytes: number | null | undefined): string {
  if (bytes == null || !isFinite(bytes)) return "–";
  const gib = bytes / 2 ** 30;
  if (bytes > 0 && gib < 0.1) return `${Math.max(1, Math.round(bytes / 2 ** 20))} MiB`;
  return `${gib.toFixed(1)} GiB`;
}

/** A file's size on disk, in decimal units as file managers and download pages write them: "1.3 GB". */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes == null || !isFinite(bytes)) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value.toFixed(value >= 100 || unit === 0 ? 0 : 1)} ${units[unit]}`;
}

export function formatSeconds(seconds: number | null | undefined): string {
  if (seconds == null || !isFinite(seconds)) return "–";
  if (seconds < 60) return `${Math.max(0, Math.round(seconds))} s`;
  const m = Math.floor(seconds / 60);
  const s = Math.round(seconds % 60);
  return `${m} min ${s.toString().padStart(2, "0")} s`;
}

export function formatDate(unix: number | null | undefined): string {
  if (unix == null) return "–";
  return new Date(unix * 1000).toLocaleString();
}

/** A catalog model's download size: its files together (each pinned to the byte). */
export function catalogBytes(entry: CatalogEntry): number {
  return entry.files.reduce((n, f) => n + (f.bytes ?? 0), 0);
}

/** What a catalog download fetches, one line per file: where it lands, its size, the SHA-256 it is checked against. */
export function catalogFiles(entry: CatalogEntry): string {
  return entry.files
    .map((f) => {
      const name = f.url.split("/").pop() ?? f.url;
      return `${f.folder ? `${f.folder}/` : ""}${name}: ${formatBytes(f.bytes)}, sha256 ${f.sha256}`;
    })
    .join("\n");
}
