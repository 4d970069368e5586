// The memory and speed options in words and checked before they leave the window, and the memory planner's answer
// as the model picker's one line ("fits on the GPU" / "fits with offload (...)" / "does not fit: ...").
import type { MemoryOptions, Part, Placement, PlacementChoice, Plan } from "./bindings";
import { formatMemory } from "./api";

/** The placement keys the form edits (sd.cpp places all text encoders together). */
export const PLACEMENT_GROUPS = ["diffusion", "text_encoders", "vae"] as const;
export type PlacementGroup = (typeof PLACEMENT_GROUPS)[number];

/** The text encoders, which a request may also place one by one. */
export const ENCODERS = ["clip_l", "clip_g", "t5xxl", "llm"] as const;

const PART_NAMES: Record<string, string> = {
  diffusion: "diffusion",
  text_encoders: "text encoders",
  vae: "VAE",
  clip_l: "clip_l",
  clip_g: "clip_g",
  t5xxl: "t5xxl",
  llm: "llm",
};

/** The empty value: nothing set, everything left to the model card, the settings and the planner. */
export function emptyMemory(): MemoryOptions {
  return { placement: {} };
}

/** Any value (a remix, a settings file) as the form holds it: always an object with a `placement` object. */
export function normalMemory(value: MemoryOptions | null | undefined): MemoryOptions {
  return { ...(value ?? {}), placement: { ...(value?.placement ?? {}) } };
}

/** Only what is set: no `null`, no "auto" placement; `placement` only when it places something. */
export function compactMemory(value: MemoryOptions | null | undefined): MemoryOptions {
  const out: MemoryOptions = {};
  const placement: Record<string, PlacementChoice> = {};
  for (const [key, choice] of Object.entries(value?.placement ?? {})) {
    if (choice && choice !== "auto") placement[key] = choice;
  }
  if (Object.keys(placement).length) out.placement = placement;
  for (const key of ["vram_budget_gib", "vae_tiling", "vae_tile_size", "vae_tile_overlap", "flash_attn", "mmap", "cache"] as const) {
    const v = value?.[key];
    if (v !== null && v !== undefined) (out as Record<string, unknown>)[key] = v;
  }
  return out;
}

export function isEmptyMemory(value: MemoryOptions | null | undefined): boolean {
  return Object.keys(compactMemory(value)).length === 0;
}

/** Where the form's select shows a group: its own key, or (text encoders) the first encoder placed alone. */
export function groupChoice(value: MemoryOptions | null | undefined, group: PlacementGroup): PlacementChoice {
  const placement = value?.placement ?? {};
  if (placement[group]) return placement[group];
  if (group === "text_encoders") {
    for (const e of ENCODERS) if (placement[e]) return placement[e];
  }
  return "auto";
}

/** The options with `group` placed at `choice` ("auto" removes it; text encoders replace any placed alone). */
export function withPlacement(value: MemoryOptions, group: PlacementGroup, choice: PlacementChoice): MemoryOptions {
  const placement = { ...(value.placement ?? {}) };
  delete placement[group];
  if (group === "text_encoders") for (const e of ENCODERS) delete placement[e];
  if (choice !== "auto") placement[group] = choice;
  return { ...value, placement };
}

const onOff = (v: boolean) => (v ? "on" : "off");

/** One short line of what is set, e.g. "diffusion offload · VAE tiling on (512 px) · step cache fast". */
export function memorySummary(value: MemoryOptions | null | undefined): string {
  const m = compactMemory(value);
  const parts: string[] = [];
  for (const [key, choice] of Object.entries(m.placement ?? {})) parts.push(`${PART_NAMES[key] ?? key} ${choice}`);
  if (m.vram_budget_gib != null) parts.push(`VRAM budget ${m.vram_budget_gib} GiB`);
  const tile = [
    m.vae_tile_size != null ? `${m.vae_tile_size} px` : null,
    m.vae_tile_overlap != null ? `overlap ${m.vae_tile_overlap}` : null,
  ].filter(Boolean);
  if (m.vae_tiling != null) parts.push(`VAE tiling ${m.vae_tiling}${tile.length ? ` (${tile.join(", ")})` : ""}`);
  else if (tile.length) parts.push(`VAE tiles ${tile.join(", ")}`);
  if (m.flash_attn != null) parts.push(`flash attention ${onOff(m.flash_attn)}`);
  if (m.mmap != null) parts.push(`mmap ${onOff(m.mmap)}`);
  if (m.cache != null) parts.push(`step cache ${m.cache}`);
  return parts.join(" · ");
}

export interface MemoryProblem {
  /** The option to blame, as the core names it below `memory.` (e.g. `vae_tile_size`). */
  field: string;
  message: string;
}

/** What the core would refuse anyway, said before a request is made. */
export function checkMemory(value: MemoryOptions | null | undefined): MemoryProblem | null {
  const m = value ?? {};
  const budget = m.vram_budget_gib;
  if (budget != null && (!Number.isFinite(budget) || budget <= 0)) {
    return { field: "vram_budget_gib", message: "The VRAM budget must be a positive number of GiB, or empty for none." };
  }
  const size = m.vae_tile_size;
  if (size != null && (!Number.isInteger(size) || size < 32 || size > 2048 || size % 32 !== 0)) {
    return { field: "vae_tile_size", message: "The tile size must be a multiple of 32 pixels, from 32 to 2048." };
  }
  const overlap = m.vae_tile_overlap;
  if (overlap != null && (!Number.isFinite(overlap) || overlap < 0 || overlap > 0.5)) {
    return { field: "vae_tile_overlap", message: "The tile overlap must be from 0 to 0.5 (a fraction of a tile)." };
  }
  return null;
}

export type Fit = "gpu" | "offload" | "cpu" | "none";

const TEXT_ENCODER_PARTS: string[] = [...ENCODERS];

function groupPlacement(plan: Plan, group: PlacementGroup): Placement | undefined {
  if (group === "text_encoders") {
    for (const e of TEXT_ENCODER_PARTS) if (plan.placement[e]) return plan.placement[e];
    return undefined;
  }
  return plan.placement[group];
}

function firstSentence(text: string): string {
  const sentence = text.split(/\.\s/)[0].replace(/\.$/, "");
  return sentence;
}

/** The plan as the model picker's line. */
export function fitLine(plan: Plan): { fit: Fit; text: string } {
  if (!plan.fits) {
    const why = plan.advice[0] ?? plan.reasons[0] ?? "not enough free memory";
    return { fit: "none", text: `Does not fit: ${firstSentence(why)}` };
  }
  if (plan.vram_available_bytes == null) return { fit: "cpu", text: "Runs on the CPU (no GPU found)" };
  const details: string[] = [];
  const te = groupPlacement(plan, "text_encoders");
  if (te === "cpu") details.push("text encoders on the CPU");
  if (te === "offload") details.push("text encoders offloaded");
  const diffusion = groupPlacement(plan, "diffusion");
  if (diffusion === "cpu") details.push("diffusion model on the CPU");
  if (diffusion === "offload") {
    details.push(plan.max_vram_gib != null ? `diffusion weights streamed under ${plan.max_vram_gib} GiB` : "diffusion model offloaded");
  }
  const vae = groupPlacement(plan, "vae");
  if (vae === "cpu") details.push("VAE on the CPU");
  if (vae === "offload") details.push("VAE offloaded");
  if (plan.vae_tiling) details.push("VAE tiled");
  if (details.length === 0) return { fit: "gpu", text: "Fits on the GPU" };
  return { fit: "offload", text: `Fits with offload (${details.join(", ")})` };
}

/** "peak ~3.8 GiB VRAM, ~1.9 GiB RAM"; a plan that uses no VRAM (the CPU) names the RAM only. */
export function planPeaks(plan: Plan): string {
  const ram = `~${formatMemory(plan.estimated_ram_peak_bytes)} RAM`;
  if (!plan.estimated_vram_peak_bytes) return `peak ${ram}`;
  return `peak ~${formatMemory(plan.estimated_vram_peak_bytes)} VRAM, ${ram}`;
}

/** The parts of a model a smaller copy can be made of, from its card's components (none for one-file checkpoints). */
export function convertibleParts(components: { component: string }[]): Part[] {
  if (components.some((c) => c.component === "model")) return [];
  const names: Record<string, Part> = {
    diffusion_model: "diffusion",
    vae: "vae",
    clip_l: "clip_l",
    clip_g: "clip_g",
    t5xxl: "t5xxl",
    llm: "llm",
  };
  const parts: Part[] = [];
  for (const c of components) {
    const part = names[c.component];
    if (part && !parts.includes(part)) parts.push(part);
  }
  return parts;
}
