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

export function isHiresUpscaler(value: unknown): value is HiresUpscaler {
  return HIRES_UPSCALERS.some(([v]) => v === value);
}

export function upscalerName(value: HiresUpscaler | null | undefined): string {
  return HIRES_UPSCALERS.find(([v]) => v === (value ?? "latent"))?.[1] ?? String(value);
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
 * only when set. */
export function hiresRequest(form: GenerateForm): Pick<GenerateForm, "hires_scale" | "hires_upscaler" | "hires_steps" | "hires_denoise"> {
  if (form.hires_scale == null || form.init_image) return { hires_scale: null };
  return {
    hires_scale: form.hires_scale,
    ...(form.hires_upscaler != null ? { hires_upscaler: form.hires_upscaler } : {}),
    ...(form.hires_steps != null ? { hires_steps: form.hires_steps } : {}),
    ...(form.hires_denoise != null ? { hires_denoise: form.hires_denoise } : {}),
  };
}
