// The Generate form's ControlNet (SD 1.x models): a ControlNet model, a control image, the preprocessor that turns
// the image into a control map (none: a map made elsewhere; canny: edges), how strongly the map steers, and canny's
// thresholds.
import type { ControlModule, Family, GenerateForm } from "./bindings";

/** How strongly the map steers when the form sets nothing (the core's default). */
export const DEFAULT_CONTROL_STRENGTH = 1;

/** canny's thresholds when the form sets none (the core's defaults, 1..255 of the gradient). */
export const DEFAULT_CONTROL_LOW = 100;
export const DEFAULT_CONTROL_HIGH = 200;

/** Every preprocessor with its name in words and what it does. */
export const CONTROL_MODULES: readonly [ControlModule, string, string][] = [
  ["none", "None", "a map made elsewhere (depth, pose, lineart…), used as it is"],
  ["canny", "Canny", "the image's edges, white on black"],
];

/** The one family the ControlNet runs with in this stable-diffusion.cpp. */
export const CONTROL_FAMILY: Family = "sd1";

/** The folder of the models folder a ControlNet file goes in. */
export const CONTROL_FOLDER = "controlnet/";

/** Whether a model of `family` can take a ControlNet; an unknown model (`undefined`) is left to the core. */
export function controlFits(family: Family | null | undefined): boolean {
  return family == null || family === CONTROL_FAMILY;
}

export function moduleName(module: ControlModule | null | undefined): string {
  return CONTROL_MODULES.find(([m]) => m === (module ?? "none"))?.[1] ?? String(module);
}

/** The thresholds canny runs with: the form's, or the defaults. */
export function thresholds(form: Pick<GenerateForm, "control_low" | "control_high">): { low: number; high: number } {
  return { low: form.control_low ?? DEFAULT_CONTROL_LOW, high: form.control_high ?? DEFAULT_CONTROL_HIGH };
}

/** The control fields a request carries: all of them when a model and an image are set and the model fits, none
 * otherwise; the strength and the thresholds only when set (canny's only with canny). */
export function controlRequest(
  form: GenerateForm,
  fits: boolean,
): Pick<GenerateForm, "control_model" | "control_image" | "control_module" | "control_strength" | "control_low" | "control_high"> {
  if (!fits || !form.control_model || !form.control_image) return {};
  const module = form.control_module ?? "none";
  return {
    control_model: form.control_model,
    control_image: form.control_image,
    control_module: module,
    ...(form.control_strength != null ? { control_strength: form.control_strength } : {}),
    ...(module === "canny" && form.control_low != null ? { control_low: form.control_low } : {}),
    ...(module === "canny" && form.control_high != null ? { control_high: form.control_high } : {}),
  };
}

/** The form without any ControlNet: no model, image, preprocessor, strength or thresholds. */
export function clearControl(form: GenerateForm): void {
  form.control_model = null;
  form.control_image = null;
  form.control_module = null;
  form.control_strength = null;
  form.control_low = null;
  form.control_high = null;
}

/** Which of the section's controls a field the core (or the form) names belongs to. */
export type ControlSpot = "model" | "image" | "module" | "strength" | "low" | "high" | "section";

export function controlSpot(field: string | null | undefined): ControlSpot {
  switch (field) {
    case "control_model":
    case "control.model":
      return "model";
    case "control_image":
    case "control.image":
      return "image";
    case "control_module":
    case "control.module":
      return "module";
    case "control_strength":
    case "control.strength":
      return "strength";
    case "control_low":
    case "control.low_threshold":
      return "low";
    case "control_high":
    case "control.high_threshold":
      return "high";
    default:
      return "section";
  }
}

/** Whether a field the core names is one of the ControlNet's. */
export function isControlField(field: string | null | undefined): boolean {
  return !!field && (field === "control" || field.startsWith("control.") || field.startsWith("control_"));
}

/** The core's words for the thresholds (`low_threshold`, A1111's `threshold_a`) as a user reads them. */
export function controlWords(message: string): string {
  return message
    .replace(/\b(low_threshold|threshold_a)\b/g, "low threshold")
    .replace(/\b(high_threshold|threshold_b)\b/g, "high threshold");
}
