// A job's progress as the Generate panel and the queue show it. The percent comes from what the job has done — its
// phase, and within sampling the step of the image — never from the time since it was queued, so a job that waited
// in the queue does not start at 40 %. The ETA is the core's estimate (measured step times), counted down between
// its events so it moves every second, not only when a step ends.
import type { JobEvent } from "./bindings";

/** Where each phase starts and ends on the bar, in percent. Sampling gets nearly all of it. */
const BANDS = {
  queued: [0, 0],
  preparing: [1, 3],
  freeing_vram: [1, 3],
  loading_model: [3, 10],
  encoding_prompt: [10, 12],
  sampling: [12, 95],
  // An upscale job has no prompt to encode, no steps and no decoding: enlarging is nearly all of its work.
  upscaling: [10, 97],
  decoding: [95, 98],
  saving: [98, 99],
  done: [100, 100],
} as const;

/** A whole count of at least `min` (a missing or malformed field counts as `min`). */
function count(value: unknown, min: number): number {
  return typeof value === "number" && Number.isFinite(value) ? Math.max(min, Math.floor(value)) : min;
}

/** How far an upscaling event is through its job, 0..1: the tiles of this pass, the passes of this image, the images. */
function upscaleFraction(event: Extract<JobEvent, { phase: "upscaling" }>): number {
  const images = count(event.images, 1);
  const passes = count(event.passes, 1);
  const image = Math.min(images, count(event.image, 1));
  const pass = Math.min(passes, count(event.pass, 1));
  const tiles = count(event.tiles, 0);
  const within = tiles > 0 ? Math.min(1, count(event.tile, 0) / tiles) : 0;
  return (image - 1 + (pass - 1 + within) / passes) / images;
}

/**
 * What an upscaling event reads as: "Upscaling — tile 3 of 9", with the pass and the image when there are several
 * ("Upscaling — image 2 of 3, pass 2 of 2, tile 3 of 9"); just "Upscaling" while the tile count is not known.
 */
export function upscalingStatus(event: Extract<JobEvent, { phase: "upscaling" }>): string {
  const parts: string[] = [];
  const images = count(event.images, 1);
  const passes = count(event.passes, 1);
  const tiles = count(event.tiles, 0);
  const tile = count(event.tile, 0);
  if (images > 1) parts.push(`image ${Math.min(images, count(event.image, 1))} of ${images}`);
  if (passes > 1) parts.push(`pass ${Math.min(passes, count(event.pass, 1))} of ${passes}`);
  // Tile 0 announces a pass: no tile is being worked on yet.
  if (tiles > 0 && tile > 0) parts.push(`tile ${Math.min(tiles, tile)} of ${tiles}`);
  return parts.length ? `Upscaling — ${parts.join(", ")}` : "Upscaling";
}

/**
 * Which pass of a hires fix a sampling event is in: 1 of 2, then 2 of 2; 1 of 1 without a hires fix (absent fields
 * read as 1, as from a core that does not send them).
 */
export function samplingPass(event: Extract<JobEvent, { phase: "sampling" }>): { pass: number; passes: number } {
  const passes = count(event.passes, 1);
  return { pass: Math.min(passes, count(event.pass, 1)), passes };
}

/**
 * What a sampling event reads as: "Sampling", or "Sampling image 2 of 3" for a batch; with a hires fix the pass too,
 * as upscaling names its passes ("Sampling — pass 2 of 2", "Sampling — image 2 of 3, pass 2 of 2").
 */
export function samplingStatus(event: Extract<JobEvent, { phase: "sampling" }>): string {
  const images = count(event.images, 1);
  const image = Math.min(images, count(event.image, 1));
  const { pass, passes } = samplingPass(event);
  if (passes <= 1) return images > 1 ? `Sampling image ${image} of ${images}` : "Sampling";
  const parts: string[] = [];
  if (images > 1) parts.push(`image ${image} of ${images}`);
  parts.push(`pass ${pass} of ${passes}`);
  return `Sampling — ${parts.join(", ")}`;
}

/**
 * The percent `event` puts the job at, given where it was (`previous`): never lower while the job runs (sd.cpp
 * loads the diffusion model after sampling has begun, and a later image restarts its steps at 0), `null` for events
 * that say nothing about progress.
 */
export function stagePercent(event: JobEvent, previous: number | null): number | null {
  let percent: number | null;
  switch (event.phase) {
    case "queued":
      return 0;
    case "loading_model": {
      const [from, to] = BANDS.loading_model;
      const part = event.tensors_total > 0 ? event.tensors_loaded / event.tensors_total : 0;
      percent = from + (to - from) * part;
      break;
    }
    case "sampling": {
      const [from, to] = BANDS.sampling;
      const images = Math.max(1, event.images);
      const within = event.steps > 0 ? Math.min(1, event.step / event.steps) : 0;
      percent = from + ((to - from) * (event.image - 1 + within)) / images;
      break;
    }
    case "upscaling": {
      const [from, to] = BANDS.upscaling;
      percent = from + (to - from) * upscaleFraction(event);
      break;
    }
    case "preparing":
    case "freeing_vram":
    case "encoding_prompt":
    case "decoding":
    case "saving":
    case "done":
      percent = BANDS[event.phase][0];
      break;
    default:
      // plan, warning, preview, failed, cancelled, and any phase this window does not know yet: progress stays
      // where it was.
      return previous;
  }
  if (!Number.isFinite(percent)) return previous;
  return Math.max(previous ?? 0, percent);
}

/** Seconds left when the core sent no estimate: the steps left (this image's and the next ones') at the last rate. */
export function stepEta(event: JobEvent): number | null {
  if (event.phase !== "sampling" || event.seconds_per_step == null || event.steps <= 0) return null;
  const left = event.steps - event.step + (event.images - event.image) * event.steps;
  return Math.max(0, left) * event.seconds_per_step;
}

/** What is left of an estimate of `eta` seconds made at `at` (ms), at `now` (ms). */
export function etaLeft(eta: number | null, at: number | null, now: number): number | null {
  if (eta == null) return null;
  const passed = at == null ? 0 : Math.max(0, (now - at) / 1000);
  return Math.max(0, eta - passed);
}

/**
 * The ETA to show after a new estimate: the countdown in progress (`shown`, from `etaLeft`) goes on while the
 * estimate stays near it — step times are noisy, and a number that jumps 22, 18, 21, 23 s reads as broken — and the
 * estimate replaces it when they part by more than 3 s and a quarter, or when the countdown ran out with work left.
 */
export function smoothEta(shown: number | null, estimate: number | null): number | null {
  if (estimate == null) return null;
  if (shown == null || shown < 1) return estimate;
  const gap = Math.abs(estimate - shown);
  return gap > Math.max(3, shown * 0.25) ? estimate : shown;
}

/**
 * What a screen reader hears about a running job: the phase when it changes, and within sampling (or upscaling)
 * only each quarter of the way (25 %, 50 %, 75 %), not every step or tile. With a hires fix (`pass` above 1) the
 * start of the second pass is heard too, even within a quarter.
 */
export function progressKey(phase: string, percent: number | null, pass = 1): string {
  if (phase !== "sampling" && phase !== "upscaling") return phase;
  const quarter = Math.floor((percent ?? 0) / 25);
  return phase === "sampling" && pass > 1 ? `${phase}-pass${pass}-${quarter}` : `${phase}-${quarter}`;
}
