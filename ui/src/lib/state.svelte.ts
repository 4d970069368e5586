// The app's shared state: what the core told us (models, queue, jobs, VRAM, downloads) kept live by its events, the
// Generate form (so a remix from the gallery can fill it), and the toasts. Panels read it; only functions here and
// the panels' own handlers change it.
import { commands, events } from "./bindings";
import type {
  AppInfo,
  Board,
  ConvertEvent,
  ConvertUpdate,
  DownloadEvent,
  GenerateForm,
  JobEvent,
  JobInfo,
  LaneDevice,
  LaneInfo,
  ModelCard,
  ModelList,
  Output,
  PullInfo,
  SettingChange,
  Settings,
  VramEvent,
  VramSnapshot,
} from "./bindings";
import { call, errorText } from "./api";
import { isConnectionFailure, plainError } from "./errors";
import { dataUrlSize } from "./images";
import type { PickedImage, Size } from "./images";
import { emptyMemory, normalMemory } from "./memory";
import { isHiresUpscaler } from "./hires";
import { etaLeft, samplingPass, samplingStatus, smoothEta, stagePercent, stepEta, upscalingStatus } from "./progress";

export type View = "generate" | "gallery" | "queue" | "models" | "settings";

export interface LiveJob {
  id: string;
  state: "queued" | "running" | "done" | "failed" | "cancelled";
  phase: string;
  /** A readable line about what the job is doing. */
  status: string;
  /** The job's prompt, as the queue lists it (`null` until the queue was read with the job in it). */
  prompt: string | null;
  position: number | null;
  /** The step of the sampling; with a hires fix counted over both passes, as `steps` is. */
  step: number;
  steps: number;
  /** The hires pass the sampling is in: 1 of 2, then 2 of 2; 1 of 1 without a hires fix. */
  pass: number;
  passes: number;
  image: number;
  images: number;
  secondsPerStep: number | null;
  /** 0..100 from the phase and the step (see `stagePercent`). */
  percent: number | null;
  /** Seconds left as estimated at `etaAt` (ms); count it down with `etaLeft`. */
  eta: number | null;
  etaAt: number | null;
  preview: string | null;
  outputs: Output[];
  error: string | null;
  warnings: string[];
  /** The memory planner's answer: where each part runs and the estimated peaks. */
  plan: string | null;
}

/** Where an own job came from: made from an image rather than from the form. */
export interface JobOrigin {
  /** What it is, in words: "Upscale ×2 of image #12 with Lanczos". */
  text: string;
  /** The job Generate showed when this one was asked for. */
  from: string | null;
}

/** A smaller copy of a model being made, as its `convertProgress` events tell. */
export interface Conversion {
  id: string;
  state: "running" | "done" | "failed";
  /** 0..100 once sd.cpp has counted the tensors. */
  percent: number | null;
  output: string | null;
  /** The model id that uses the copy, once it is done. */
  modelId: string | null;
  bytes: number | null;
  seconds: number | null;
  error: string | null;
  /** Whether a dialog shows it (otherwise its end is told in a toast). */
  watched: boolean;
}

export interface Toast {
  id: number;
  text: string;
  kind: "info" | "error";
  /** The raw message behind `text`, for the curious and for bug reports. */
  detail?: string | null;
  action?: { label: string; run: () => void };
  /** An error kept for its details but folded into the toasts' count after a while, so it covers nothing. */
  folded?: boolean;
}

/** The init image's name and pixel size (the form itself holds its data URL). */
export interface InitImageInfo {
  name: string;
  size: Size | null;
}

export function emptyForm(): GenerateForm {
  return {
    model: "",
    prompt: "",
    negative_prompt: "",
    width: null,
    height: null,
    steps: null,
    cfg_scale: null,
    sampler: null,
    scheduler: null,
    seed: -1,
    count: 1,
    loras: [],
    init_image: null,
    mask: null,
    strength: null,
    resize_mode: null,
    memory: emptyMemory(),
    hires_scale: null,
    hires_upscaler: null,
    hires_model: null,
    hires_steps: null,
    hires_denoise: null,
    control_model: null,
    control_image: null,
    control_module: null,
    control_strength: null,
    control_low: null,
    control_high: null,
  };
}

export const app = $state({
  view: "generate" as View,
  info: null as AppInfo | null,
  models: null as ModelList | null,
  modelsError: null as string | null,
  settings: null as Settings | null,
  vram: null as VramSnapshot | null,
  lastSwitch: null as { to: string; milliseconds: number | null; at: number } | null,
  queue: [] as JobInfo[],
  /** When `queue` was read (ms): a waiting job's `starts_in` counts down from then. */
  queueAt: 0,
  jobs: {} as Record<string, LiveJob>,
  /** The ids `generate` answered in this window: the jobs Generate shows and Esc may cancel. Jobs from Open WebUI,
   * the API or the CLI only show in the Queue. */
  own: {} as Record<string, boolean>,
  /** The job the Generate panel follows: one of this window's own (the newest started, or the one running). */
  current: null as string | null,
  /** What an own job made from an image is ("Upscale ×2 of image #12 with Lanczos"), and the job Generate showed
   * when it was asked for, so the panel can say what replaced that result and go back to it. */
  origins: {} as Record<string, JobOrigin>,
  /** Finished, failed and cancelled jobs of every source, newest first (`queue_history`). */
  history: [] as JobInfo[],
  /** The render lanes: where each renders, the model it holds and its job (read with the queue). */
  lanes: [] as LaneInfo[],
  /** Whether the queue is paused (by this window or the HTTP API): the running job finishes, no waiting job starts. */
  paused: false,
  /** The gallery's boards, with their image counts. */
  boards: [] as Board[],
  downloads: [] as PullInfo[],
  /** Smaller copies of models being made (or made) since the app started, by conversion id. */
  conversions: {} as Record<string, Conversion>,
  toasts: [] as Toast[],
  /** Bumped whenever an image lands in (or leaves) the gallery, so the grid reloads. */
  galleryVersion: 0,
  /** The gallery entry the detail view shows. */
  detail: null as number | null,
});

export const form: GenerateForm = $state(emptyForm());

/** What the form holds beyond the request: whether the seed is locked (else each job gets a random one), and the
 * init image's and the control image's names and sizes. */
export const draft = $state({
  seedLocked: false,
  init: null as InitImageInfo | null,
  control: null as InitImageInfo | null,
  /** "Send to inpaint" asked for the mask editor: Generate shows the img2img controls and opens it. */
  inpaint: false,
});

/** A lane's device in words ("GPU 1", "CPU"); `null` for the default device, which needs no name. */
export function deviceName(device: LaneDevice | undefined): string | null {
  if (device?.kind === "gpu") return `GPU ${device.index}`;
  if (device?.kind === "cpu") return "CPU";
  return null;
}

/** Which of the Generate form's folding sections are open: kept while the user visits other panels. */
export const sections = $state({ advanced: false, memory: false, hires: false, control: false });

let nextToast = 1;

export function toast(
  text: string,
  kind: Toast["kind"] = "info",
  action?: Toast["action"],
  detail: string | null = null,
): void {
  const id = nextToast++;
  app.toasts.push({ id, text, kind, action, detail });
  // Errors stay until dismissed (the user may want to read them again, or open their details), folded into the
  // count after a while so they cover nothing for good.
  if (kind === "error") setTimeout(() => fold(id), ERROR_SHOWN_MS);
  else setTimeout(() => dismiss(id), action ? 8000 : 5000);
}

/** A failure in plain words (an OS error never shows raw: it becomes the toast's details). */
export function toastError(e: unknown): void {
  const plain = plainError(e);
  toast(plain.text, "error", undefined, plain.detail);
}

/** How long an error stays in sight before it folds into the toasts' count. */
export const ERROR_SHOWN_MS = 10_000;

function fold(id: number): void {
  const t = app.toasts.find((t) => t.id === id);
  if (t) t.folded = true;
}

export function dismiss(id: number): void {
  const index = app.toasts.findIndex((t) => t.id === id);
  if (index >= 0) app.toasts.splice(index, 1);
}

/**
 * Fills the Generate form (a remix) and shows it. A recorded seed is locked, so the remix reproduces the image; an
 * init image that came with it (img2img) is shown by the chip under `initName`.
 */
export function loadForm(values: GenerateForm, initName: string | null = null): void {
  Object.assign(form, emptyForm(), values);
  form.memory = normalMemory(values.memory);
  if (form.init_image) form.strength ??= 0.75;
  draft.seedLocked = values.seed != null && values.seed >= 0;
  draft.init = values.init_image
    ? { name: initName ?? "the original init image", size: dataUrlSize(values.init_image) }
    : null;
  draft.control = form.control_image ? { name: "the original control image", size: dataUrlSize(form.control_image) } : null;
  app.view = "generate";
}

/** Locks the form's seed to `seed` (a result's "Reuse seed"). */
export function reuseSeed(seed: number): void {
  form.seed = seed;
  draft.seedLocked = true;
}

/** Makes `image` the form's init image: img2img at strength 0.75 unless one is set; an old mask no longer fits. */
export function setInitImage(image: PickedImage): void {
  form.init_image = image.dataUrl;
  form.strength ??= 0.75;
  form.mask = null;
  draft.init = { name: image.name, size: image.size };
}

/** Back to text-to-image: no init image, mask or strength. */
export function clearInitImage(): void {
  form.init_image = null;
  form.mask = null;
  form.strength = null;
  form.resize_mode = null;
  draft.init = null;
}

/** Makes `image` the form's control image (the ControlNet's model and settings stay). */
export function setControlImage(image: PickedImage): void {
  form.control_image = image.dataUrl;
  draft.control = { name: image.name, size: image.size };
}

/** No control image (the ControlNet's model and settings stay, for the next one). */
export function clearControlImage(): void {
  form.control_image = null;
  draft.control = null;
}

/** The form's defaults (the first usable model kept), the seed random again, no init image and no ControlNet. */
export function resetForm(): void {
  Object.assign(form, emptyForm());
  form.model = usableCards(app.models)[0]?.id ?? "";
  draft.seedLocked = false;
  draft.init = null;
  draft.control = null;
}

/** How often at most the queue is asked again for its waiting jobs' estimated starts while a job runs. */
const QUEUE_ESTIMATE_EVERY_MS = 3000;

/** Where the form is kept between runs: one per data folder, so two profiles (say `DIFFUGEN_DATA_DIR` for work
 * and the default at home) each keep their own. */
export function formKey(dataDir: string): string {
  return `diffugen.generate-form.v1:${dataDir}`;
}

/** Where versions before the per-folder key kept the one form: taken over by the first folder opened, once. */
const LEGACY_FORM_KEY = "diffugen.generate-form.v1";

/** The key of this window's data folder, known once the core said where that is. */
let currentFormKey: string | null = null;

/** What of the form survives a restart: every parameter but the images (too large for the storage, and private). */
type SavedForm = Pick<
  GenerateForm,
  | "model"
  | "prompt"
  | "negative_prompt"
  | "width"
  | "height"
  | "steps"
  | "cfg_scale"
  | "sampler"
  | "scheduler"
  | "seed"
  | "count"
  | "loras"
  | "hires_scale"
  | "hires_upscaler"
  | "hires_model"
  | "hires_steps"
  | "hires_denoise"
> & { seed_locked: boolean };

function savedForm(): SavedForm {
  return {
    model: form.model,
    prompt: form.prompt,
    negative_prompt: form.negative_prompt,
    width: form.width,
    height: form.height,
    steps: form.steps,
    cfg_scale: form.cfg_scale,
    sampler: form.sampler,
    scheduler: form.scheduler,
    seed: form.seed,
    count: form.count,
    loras: form.loras.map((l) => ({ name: l.name, weight: l.weight })),
    hires_scale: form.hires_scale ?? null,
    hires_upscaler: form.hires_upscaler ?? null,
    hires_model: form.hires_model ?? null,
    hires_steps: form.hires_steps ?? null,
    hires_denoise: form.hires_denoise ?? null,
    seed_locked: draft.seedLocked,
  };
}

const isNumberOrNull = (v: unknown): v is number | null => v === null || (typeof v === "number" && Number.isFinite(v));
const isStringOrNull = (v: unknown): v is string | null => v === null || typeof v === "string";

/** The form as last saved, each field checked (what is missing or malformed keeps its default). */
function readSavedForm(key: string): Partial<SavedForm> | null {
  let raw: unknown;
  try {
    const text = localStorage.getItem(key);
    if (!text) return null;
    raw = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof raw !== "object" || raw === null) return null;
  const r = raw as Record<string, unknown>;
  const out: Partial<SavedForm> = {};
  for (const key of ["model", "prompt", "negative_prompt"] as const) {
    if (typeof r[key] === "string") out[key] = r[key];
  }
  for (const key of ["sampler", "scheduler"] as const) {
    if (isStringOrNull(r[key])) out[key] = r[key];
  }
  for (const key of ["width", "height", "steps", "cfg_scale", "seed", "count", "hires_scale", "hires_steps", "hires_denoise"] as const) {
    if (isNumberOrNull(r[key])) out[key] = r[key];
  }
  if (Array.isArray(r.loras)) {
    out.loras = r.loras
      .filter((l): l is { name: string; weight: number | null } => typeof l?.name === "string" && isNumberOrNull(l?.weight))
      .map((l) => ({ name: l.name, weight: l.weight }));
  }
  if (r.hires_upscaler === null || isHiresUpscaler(r.hires_upscaler)) out.hires_upscaler = r.hires_upscaler;
  if (isStringOrNull(r.hires_model)) out.hires_model = r.hires_model;
  // An ESRGAN upscaler without its model is no choice: the default (Latent) instead.
  if (out.hires_upscaler === "model" && !out.hires_model) {
    out.hires_upscaler = null;
    out.hires_model = null;
  }
  if (typeof r.seed_locked === "boolean") out.seed_locked = r.seed_locked;
  return out;
}

/** Puts back the form saved for the data folder `dataDir`, and saves there from now on; returns whether there
 * was one. */
export function restoreForm(dataDir: string): boolean {
  currentFormKey = formKey(dataDir);
  adoptLegacyForm(currentFormKey);
  const saved = readSavedForm(currentFormKey);
  if (!saved) return false;
  const { seed_locked, ...values } = saved;
  Object.assign(form, values);
  draft.seedLocked = (seed_locked ?? false) && form.seed != null && form.seed >= 0;
  return true;
}

/** A form saved before forms were kept per data folder moves to `key` (when that has none), so an update loses
 * nothing. */
function adoptLegacyForm(key: string): void {
  try {
    const legacy = localStorage.getItem(LEGACY_FORM_KEY);
    if (legacy === null) return;
    if (localStorage.getItem(key) === null) localStorage.setItem(key, legacy);
    localStorage.removeItem(LEGACY_FORM_KEY);
  } catch {
    // Storage unavailable: nothing to move.
  }
}

function writeForm(saved: SavedForm): void {
  // Before the data folder is known there is nowhere to save to (and nothing typed yet to lose).
  if (!currentFormKey) return;
  try {
    localStorage.setItem(currentFormKey, JSON.stringify(saved));
  } catch {
    // Storage full or unavailable: the form still works, it is just not kept.
  }
}

let stopSaving: (() => void) | null = null;

/** Saves the form whenever it changes, until the returned function is called. */
export function keepFormSaved(): () => void {
  stopSaving?.();
  const stop = $effect.root(() => {
    $effect(() => writeForm(savedForm()));
  });
  stopSaving = stop;
  return () => {
    stop();
    if (stopSaving === stop) stopSaving = null;
  };
}

export function usableCards(list: ModelList | null): ModelCard[] {
  return (list?.cards ?? []).filter((c) => !c.error);
}

/** The usable card `id` selects (by id or alias). */
export function findCard(list: ModelList | null, id: string): ModelCard | undefined {
  return usableCards(list).find((c) => c.id === id || c.aliases.includes(id));
}

export async function refreshModels(): Promise<void> {
  try {
    app.models = await call(commands.listModels());
    app.modelsError = null;
    if (!form.model) {
      const first = usableCards(app.models)[0];
      if (first) form.model = first.id;
    }
  } catch (e) {
    app.modelsError = errorText(e);
  }
}

const FOLDER_KEYS: (keyof Settings)[] = ["models_dir", "extra_models_dirs", "outputs_dir"];

/** Saves one setting through the core (which checks it); a folder change also reloads the folders shown and the
 * model list. Throws the core's error. */
export async function saveSetting(key: keyof Settings, value: string | null): Promise<SettingChange> {
  const change = await call(commands.setSetting(key, value));
  app.settings = change.settings;
  if (FOLDER_KEYS.includes(key)) {
    app.info = await commands.appInfo();
    await refreshModels();
  }
  return change;
}

let queueLoad: Promise<void> | null = null;
let queueStale = false;

/** Reloads the queue; calls made while a load is under way share one follow-up load (a change to a long queue
 * sends an event per waiting job). */
export function refreshQueue(): Promise<void> {
  if (queueLoad) {
    queueStale = true;
    return queueLoad;
  }
  queueLoad = (async () => {
    do {
      queueStale = false;
      [app.queue, app.lanes] = await Promise.all([commands.queue(), commands.queueLanes()]);
      app.queueAt = Date.now();
      for (const info of app.queue) {
        const known = app.jobs[info.id];
        if (!known) app.jobs[info.id] = fromInfo(info);
        else if (known.prompt === null) known.prompt = info.prompt;
      }
    } while (queueStale);
  })().finally(() => {
    queueLoad = null;
  });
  return queueLoad;
}

let historyLoad: Promise<void> | null = null;
let historyStale = false;

/** Reloads the finished jobs (as `refreshQueue`, calls during a load share one follow-up). */
export function refreshHistory(): Promise<void> {
  if (historyLoad) {
    historyStale = true;
    return historyLoad;
  }
  historyLoad = (async () => {
    do {
      historyStale = false;
      app.history = await commands.queueHistory();
    } while (historyStale);
  })().finally(() => {
    historyLoad = null;
  });
  return historyLoad;
}

export async function refreshBoards(): Promise<void> {
  app.boards = await call(commands.galleryBoards());
}

/** Whether this window started the job (Generate shows it, Esc may cancel it). */
export function isOwn(id: string | null | undefined): boolean {
  return !!id && app.own[id] === true;
}

const isActive = (job: LiveJob | undefined) => !!job && (job.state === "running" || job.state === "queued");

/**
 * A job `generate` just answered: it is this window's own. Generate follows it, unless it still follows another of
 * its own jobs that is queued or running (that one goes first; this one is followed when it starts).
 */
export function trackOwnJob(id: string, origin?: string): void {
  app.own[id] = true;
  if (origin) app.origins[id] = { text: origin, from: app.current !== id ? app.current : null };
  const current = app.current ? app.jobs[app.current] : undefined;
  if (!isOwn(app.current) || !isActive(current) || app.current === id) app.current = id;
}

/**
 * After a reload the window has forgotten which jobs it started: the queue's waiting and running jobs that the
 * desktop app sent (source "app") are taken as its own again, and Generate follows the one running, or when none
 * runs the one first in line (shown waiting, with its place and prompt, and Esc or Cancel cancels it, as for a job
 * started in this window; when it starts it is followed on). Only while the window knows none of its own (jobs
 * from Open WebUI, the API or the CLI stay out).
 */
export function adoptAppJobs(): void {
  if (Object.keys(app.own).length > 0) return;
  const mine = app.queue.filter((j) => j.source === "app" && (j.state === "queued" || j.state === "running"));
  for (const info of mine) app.own[info.id] = true;
  if (app.current) return;
  const running = mine.find((j) => app.jobs[j.id]?.state === "running" || j.state === "running");
  const place = (j: JobInfo) => j.position ?? Number.MAX_SAFE_INTEGER;
  const first = mine.filter((j) => j.state === "queued").reduce<JobInfo | null>((a, j) => (a && place(a) <= place(j) ? a : j), null);
  const followed = running ?? first;
  if (followed) app.current = followed.id;
}

/** Pauses or resumes the queue; the core's answer (and its `queuePaused` event) is what the window shows. */
export async function setPaused(paused: boolean): Promise<void> {
  app.paused = await commands.setQueuePaused(paused);
}

/**
 * Puts a cancelled or failed job back in line as a new job with the same request: at `position` among the waiting
 * jobs (0 = next), or last when null. The new job is this window's own when the old one was. Throws the core's error.
 */
export async function requeue(id: string, position: number | null): Promise<string> {
  const newId = await call(commands.requeueJob(id, position));
  if (isOwn(id)) trackOwnJob(newId);
  await refreshQueue();
  void refreshHistory().catch(() => {});
  return newId;
}

/**
 * Cancels a job. A waiting one can be taken back: a toast offers "Undo", which puts it back in line (as a new job)
 * where it stood among the waiting jobs. Returns whether the core cancelled it; errors are shown as toasts.
 */
export async function cancelJob(id: string): Promise<boolean> {
  const waiting = app.queue.filter((j) => j.state === "queued");
  const index = waiting.findIndex((j) => j.id === id);
  const wasWaiting = index >= 0 || (!app.queue.some((j) => j.id === id) && app.jobs[id]?.state === "queued");
  const position = index >= 0 ? index : null;
  try {
    await call(commands.cancelJob(id));
  } catch (e) {
    toastError(e);
    return false;
  }
  if (wasWaiting) {
    // Another client's job: it was told of the cancel, and putting the request back in line makes a new job that
    // client does not follow — the toast says so instead of promising an undo.
    const source = app.queue.find((j) => j.id === id)?.source;
    const foreign = source !== undefined && source !== "app" && !isOwn(id);
    toast(foreign ? "Job cancelled; the client that sent it was told" : "Job cancelled", "info", {
      label: foreign ? "Queue it again as a new job" : "Undo",
      run: () => void requeue(id, position).catch(toastError),
    });
  }
  void refreshQueue().catch(toastError);
  return true;
}

export async function refreshDownloads(): Promise<void> {
  app.downloads = await commands.listDownloads();
}

function blankJob(id: string): LiveJob {
  return {
    id,
    state: "queued",
    phase: "queued",
    status: "Waiting",
    prompt: null,
    position: null,
    step: 0,
    steps: 0,
    pass: 1,
    passes: 1,
    image: 1,
    images: 1,
    secondsPerStep: null,
    percent: null,
    eta: null,
    etaAt: null,
    preview: null,
    outputs: [],
    error: null,
    warnings: [],
    plan: null,
  };
}

/** Where a waiting job stands, in words: next, or how many jobs are ahead. */
export function waitingStatus(position: number | null): string {
  if (position === null) return "Waiting";
  return position === 0 ? "Next in line" : `Waiting (${position} ahead)`;
}

function fromInfo(info: JobInfo): LiveJob {
  const job = blankJob(info.id);
  job.state = info.state;
  job.position = info.position;
  job.outputs = info.outputs;
  job.error = info.error;
  job.prompt = info.prompt;
  if (info.last_event) applyStage(job, info.last_event);
  // A job still waiting: where it stands now (the queue's word is newer than its last event's).
  if (info.state === "queued") {
    job.state = "queued";
    job.phase = "queued";
    job.position = info.position;
    job.status = waitingStatus(info.position);
  }
  return job;
}

const PHASES: Record<string, string> = {
  enhancing_prompt: "Rewriting the prompt",
  prompt_enhanced: "Prompt rewritten",
  critique: "Scoring the result",
  preparing: "Preparing the GPU",
  freeing_vram: "Freeing VRAM",
  loading_model: "Loading the model",
  encoding_prompt: "Encoding the prompt",
  sampling: "Sampling",
  upscaling: "Upscaling",
  decoding: "Decoding",
  saving: "Saving",
  done: "Done",
  failed: "Failed",
  cancelled: "Cancelled",
};

/** A phase in words: the known ones as written above, one this window does not know yet from its name. */
export function phaseName(phase: unknown): string {
  if (typeof phase !== "string" || phase === "") return "Working";
  if (PHASES[phase]) return PHASES[phase];
  const words = phase.replaceAll("_", " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function applyStage(job: LiveJob, event: JobEvent, now = Date.now()): void {
  // The core's own percent is time-based (it counts from when the job was accepted); the bar follows the work.
  job.percent = stagePercent(event, job.percent);
  if (event.phase !== "preview" && event.phase !== "warning" && event.phase !== "plan") {
    // A new phase takes its estimate as it is; within one, the countdown goes on unless the estimate parts from it.
    const estimate = event.eta_seconds ?? stepEta(event);
    job.eta = event.phase === job.phase ? smoothEta(etaLeft(job.eta, job.etaAt, now), estimate) : estimate;
    job.etaAt = now;
  }
  switch (event.phase) {
    case "queued":
      job.state = "queued";
      job.position = event.position;
      job.status = waitingStatus(event.position);
      break;
    case "preparing":
    case "freeing_vram":
      job.state = "running";
      job.status = event.message;
      break;
    case "warning":
      job.warnings.push(event.message);
      return;
    case "plan":
      job.plan = event.summary;
      return;
    case "enhancing_prompt":
      // A waiting job's prompt can be rewritten before its turn: it is still waiting.
      job.status = `${event.model} is rewriting the prompt`;
      break;
    case "prompt_enhanced":
      job.prompt = event.prompt;
      job.status = "Prompt rewritten";
      break;
    case "critique": {
      const score = event.score == null ? "?" : Math.round(event.score);
      job.status = event.retry
        ? `Scored ${score}/10 by ${event.model}: rendering another take`
        : `Scored ${score}/10 by ${event.model}`;
      break;
    }
    case "loading_model":
      job.state = "running";
      job.status =
        event.tensors_total > 0
          ? `Loading the model (${event.tensors_loaded}/${event.tensors_total} tensors)`
          : "Loading the model";
      break;
    case "sampling": {
      job.state = "running";
      job.step = event.step;
      job.steps = event.steps;
      job.image = event.image;
      job.images = event.images;
      ({ pass: job.pass, passes: job.passes } = samplingPass(event));
      job.secondsPerStep = event.seconds_per_step ?? job.secondsPerStep;
      job.status = samplingStatus(event);
      break;
    }
    case "upscaling":
      job.state = "running";
      // Tiles are no steps: the step count and rate of a sampling before it do not describe this.
      job.step = 0;
      job.steps = 0;
      job.pass = 1;
      job.passes = 1;
      job.secondsPerStep = null;
      job.status = upscalingStatus(event);
      break;
    case "preview":
      job.preview = `data:image/png;base64,${event.png_base64}`;
      return;
    case "done":
      job.state = "done";
      job.outputs = event.outputs;
      job.percent = 100;
      job.eta = 0;
      job.status = event.outputs.length === 1 ? "Done" : `Done: ${event.outputs.length} images`;
      break;
    case "failed":
      job.state = "failed";
      job.error = event.error;
      job.status = "Failed";
      break;
    case "cancelled":
      job.state = "cancelled";
      job.error = event.reason;
      job.status = "Cancelled";
      break;
    default:
      // decoding, saving, encoding_prompt, and any phase a newer core sends that this window does not know yet.
      job.state = "running";
      job.status = phaseName((event as { phase?: unknown }).phase);
  }
  job.phase = typeof event.phase === "string" ? event.phase : "unknown";
}

export function applyJobEvent(event: JobEvent): void {
  const known = app.jobs[event.job_id];
  if (!known) app.jobs[event.job_id] = blankJob(event.job_id);
  const job = app.jobs[event.job_id];
  const before = job.state;
  applyStage(job, event);
  const ended = ["done", "failed", "cancelled"].includes(event.phase);
  // A job that starts (its first loading or upscaling event) moves from the waiting list to the running one.
  const started = before !== "running" && job.state === "running";
  // While jobs wait, their estimated starts follow the running job's latest ETA (asked again at most every 3 s).
  const newEta =
    job.state === "running" &&
    typeof event.eta_seconds === "number" &&
    Date.now() - app.queueAt > QUEUE_ESTIMATE_EVERY_MS &&
    app.queue.some((q) => q.state === "queued");
  if (!known || ended || started || event.phase === "queued" || newEta) void refreshQueue();
  if (ended) {
    void refreshHistory().catch(() => {});
    // Another client's last preview is of no more use (the Queue shows previews of running jobs only).
    if (!isOwn(event.job_id)) job.preview = null;
  }
  if (event.phase === "done") app.galleryVersion++;
  // Generate follows this window's own jobs only: when the one it shows is no longer running, the next of its own
  // that runs takes over. Jobs from Open WebUI, the API or the CLI never replace its result.
  if (!isOwn(event.job_id)) return;
  const current = app.current ? app.jobs[app.current] : undefined;
  if (job.state === "running" && (!isOwn(app.current) || !current || current.state !== "running")) {
    app.current = event.job_id;
  }
}

export function applyVramEvent(event: VramEvent): void {
  if (event.type === "snapshot") app.vram = event.snapshot;
  else if (event.type === "switch") {
    app.lastSwitch = { to: event.to, milliseconds: event.milliseconds, at: Date.now() };
  } else if (event.type === "warning") {
    // Ollama not answering is a state the VRAM chip shows calmly, not an error to shout about at every render.
    if (isConnectionFailure(event.message) && app.vram?.ollama.reachable !== true) return;
    toastError(event.message);
  }
}

export function applyDownloadEvent(event: DownloadEvent): void {
  const pull = app.downloads.find((d) => d.id === event.id);
  if (pull) pull.last_event = event;
  if (!pull || ["done", "failed", "cancelled"].includes(event.stage)) {
    void refreshDownloads();
    if (event.stage === "done" && event.file === event.files) void refreshModels();
  }
  // A failure is told wherever the user is (the Models page shows the row; another panel would not).
  if (event.stage === "failed") {
    const plain = plainError(event.error);
    toast(`Download of ${pull?.name ?? "a model"} failed: ${plain.text}`, "error", undefined, plain.detail);
  }
}

/** The conversion `id`, known from now on (its events may arrive before `convertModel` answers). */
export function trackConversion(id: string): Conversion {
  app.conversions[id] ??= {
    id,
    state: "running",
    percent: null,
    output: null,
    modelId: null,
    bytes: null,
    seconds: null,
    error: null,
    watched: false,
  };
  return app.conversions[id];
}

function applyConvert(c: Conversion, event: ConvertEvent): void {
  switch (event.event) {
    case "started":
      c.state = "running";
      c.output = event.output;
      c.percent = 0;
      break;
    case "progress":
      c.percent = event.percent ?? (event.total > 0 ? (event.done / event.total) * 100 : c.percent);
      break;
    case "done":
      c.state = "done";
      c.percent = 100;
      c.output = event.output;
      c.modelId = event.model_id;
      c.bytes = event.bytes;
      c.seconds = event.seconds;
      break;
    case "failed":
      c.state = "failed";
      c.error = event.error;
      break;
  }
}

export function applyConvertUpdate(update: ConvertUpdate): void {
  const c = trackConversion(update.id);
  applyConvert(c, update.event);
  if (update.event.event === "done") {
    void refreshModels();
    if (!c.watched) toast(`Smaller copy ready: ${update.event.model_id}`);
  } else if (update.event.event === "failed" && !c.watched) {
    const plain = plainError(update.event.error);
    toast(`Making a smaller copy failed: ${plain.text}`, "error", undefined, plain.detail);
  }
}

/** Loads everything and follows the core's events. Returns a function that stops following. */
export async function start(): Promise<() => void> {
  // The data folder first: the saved form belongs to it.
  let restored = false;
  try {
    app.info = await commands.appInfo();
    restored = restoreForm(app.info.data_dir);
  } catch (e) {
    toastError(e);
  }
  const stops = await Promise.all([
    events.jobUpdate.listen((e) => applyJobEvent(e.payload)),
    events.vramUpdate.listen((e) => applyVramEvent(e.payload)),
    events.downloadUpdate.listen((e) => applyDownloadEvent(e.payload)),
    events.convertProgress.listen((e) => applyConvertUpdate(e.payload)),
    // A model copied into (or removed from) a model folder: list them again, no rescan by hand.
    events.modelsUpdate.listen(() => void refreshModels()),
    // Paused or resumed from any door: this window, the HTTP API.
    events.queuePaused.listen((e) => {
      app.paused = e.payload;
    }),
  ]);
  const loads = await Promise.allSettled([
    commands.getSettings().then((settings) => {
      app.settings = settings;
    }),
    refreshModels(),
    refreshQueue(),
    refreshHistory(),
    commands.queuePaused().then((paused) => {
      app.paused = paused;
    }),
    refreshDownloads(),
    call(commands.vram()).then((snapshot) => {
      app.vram = snapshot;
    }),
  ]);
  for (const load of loads) if (load.status === "rejected") toastError(load.reason);
  adoptAppJobs();
  // A model saved last time that is gone now: the first usable one, as on a first start.
  if (restored && app.models && !findCard(app.models, form.model)) {
    form.model = usableCards(app.models)[0]?.id ?? "";
  }
  const stopSaving = keepFormSaved();
  return () => {
    stops.forEach((stop) => stop());
    stopSaving();
  };
}
