// The Generate form's hires fix (A1111's "Hires. fix"): a second, larger pass over a text-to-image result.
import type { GenerateForm, HiresUpscaler } from "./bindings";

/** The scales offered; a remixed form may carry another one (1 to 4), which is offered too. */
export const HIRES_SCALES = [1.5, 2, 3, 4] as const;

/** The scale a newly enabled hires pass starts at. */
export const DEFAULT_HIRES_SCALE = 2;

/** How much the second pass repaints when the form leaves it out (the core's default). */
export const DEFAULT_HIRES_DENOISE = 0.7;

/** Every upscaler with its name in words, the core's default first. */
export const HIRES_UPSCALERS: readonly [HiresUpscaler, string][] = [
  ["latent", "Latent"],
  ["latent_nearest", "Latent (nearest)"],
  ["latent_nearest_exact", "Latent (nearest-exact)"],
  ["latent_antialiased", "Latent (antialiased)"],
  ["latent_bicubic", "Latent (bicubic)"],
  ["latent_bicubic_antialiased", "Latent (bicubic antialiased)"],
  ["lanczos", "Lanczos"],
  ["nearest", "Nearest"],
];

/** A built-in upscaler or `"model"` (an ESRGAN model from the models folders, named by `hires_model`). */
export function isHiresUpscaler(value: unknown): value is HiresUpscaler {
  return value === "model" || HIRES_UPSCALERS.some(([v]) => v === value);
}

/** The upscaler in words: a built-in one's name, or the ESRGAN model's id. */
export function upscalerName(value: HiresUpscaler | null | undefined, model?: string | null): string {
  if (value === "model") return model ?? "an upscaling model";
  return HIRES_UPSCALERS.find(([v]) => v === (value ?? "latent"))?.[1] ?? String(value);
}

/** The prefix of the Upscaler menu's options that name an ESRGAN model ("model:<id>"). */
const MODEL_CHOICE = "model:";

/** The Upscaler menu's value for the form: a built-in upscaler, or "model:<id>". */
export function hiresChoice(form: Pick<GenerateForm, "hires_upscaler" | "hires_model">): string {
  if (form.hires_upscaler === "model") return `${MODEL_CHOICE}${form.hires_model ?? ""}`;
  return form.hires_upscaler ?? "latent";
}

/** Sets the form's upscaler (and its model) from an Upscaler menu value. */
export function applyHiresChoice(form: Pick<GenerateForm, "hires_upscaler" | "hires_model">, value: string): void {
  if (value.startsWith(MODEL_CHOICE)) {
    form.hires_upscaler = "model";
    form.hires_model = value.slice(MODEL_CHOICE.length);
  } else {
    form.hires_upscaler = value as HiresUpscaler;
    form.hires_model = null;
  }
}

/**
 * The ESRGAN models the Upscaler menu offers, as [value, name]: every upscaling model the core lists (the built-in
 * resamplers, named apart, left out), and the form's own model even when the list does not (yet) hold it, so a
 * remixed form shows what it will use.
 */
export function hiresModelChoices(upscalers: readonly string[], builtins: readonly string[], current: string | null | undefined): [string, string][] {
  const ids = upscalers.filter((u) => !builtins.includes(u));
  if (current && !ids.some((id) => id.toLowerCase() === current.toLowerCase())) ids.push(current);
  return ids.map((id) => [`${MODEL_CHOICE}${id}`, id]);
}

/** The hires pass's size: each side times `scale`, rounded to a multiple of 8 as the core rounds it. */
export function hiresSize(width: number, height: number, scale: number): { width: number; height: number } {
  const side = (v: number) => Math.max(8, Math.round((v * scale) / 8) * 8);
  return { width: side(width), height: side(height) };
}

/** The scale as a user reads it: "2×", "1.5×". */
export function scaleText(scale: number): string {
  return `${Number(scale.toFixed(2))}×`;
}

/** The hires fields a request carries: `hires_scale` null when the pass is off (or with an init image), the others
 * only when set (`hires_model` only with the "model" upscaler). */
export function hiresRequest(
  form: GenerateForm,
): Pick<GenerateForm, "hires_scale" | "hires_upscaler" | "hires_model" | "hires_steps" | "hires_denoise"> {
  if (form.hires_scale == null || form.init_image) return { hires_scale: null };
  return {
    hires_scale: form.hires_scale,
    ...(form.hires_upscaler != null ? { hires_upscaler: form.hires_upscaler } : {}),
    ...(form.hires_upscaler === "model" && form.hires_model ? { hires_model: form.hires_model } : {}),
    ...(form.hires_steps != null ? { hires_steps: form.hires_steps } : {}),
    ...(form.hires_denoise != null ? { hires_denoise: form.hires_denoise } : {}),
  };
}
