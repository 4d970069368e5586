// What the core answers, as the bindings type it: the mocked IPC serves these to the panels under test.
import { mockIPC, mockConvertFileSrc } from "@tauri-apps/api/mocks";

/** Memory amounts are binary, as the core and GPU tools count them. */
export const GIB = 2 ** 30;
import type {
  AppInfo,
  CatalogEntry,
  Entry,
  JobInfo,
  ModelCard,
  ModelList,
  Plan,
  Settings,
  VramSnapshot,
} from "../lib/bindings";

export function card(overrides: Partial<ModelCard> = {}): ModelCard {
  return {
    id: "tiny",
    name: "tiny",
    family: "sdxs",
    variant: null,
    source: "checkpoint",
    components: [{ component: "model", path: "/models/tiny.gguf" }],
    quantization: "F16",
    parameters: 441e6,
    size_bytes: 883e6,
    default_width: 512,
    default_height: 512,
    default_steps: 1,
    default_cfg_scale: 1,
    default_sampler: "euler_a",
    estimated_bytes: 3 * GIB,
    aliases: [],
    error: null,
    ...overrides,
  };
}

export function models(cards: ModelCard[] = [card()]): ModelList {
  return {
    cards,
    files: [],
    loras: ["detail-tweaker"],
    loaded: null,
    models_dir: "/data/models",
    samplers: ["euler", "euler_a", "dpm++2m"],
    schedulers: ["discrete", "karras"],
  };
}

export const info: AppInfo = {
  version: "0.1.0",
  data_dir: "/data",
  models_dir: "/data/models",
  models_dir_fixed: false,
  locked: [],
  extra_models_dirs: [],
  outputs_dir: "/data/outputs",
  settings_file: "/data/settings.json",
  api_url: "http://127.0.0.1:5199",
  api_error: null,
  cluster_url: null,
  cluster_error: null,
  gateway_url: "http://127.0.0.1:11435",
  api_warning: null,
};

export function entry(id: number, overrides: Partial<Entry> = {}): Entry {
  return {
    id,
    path: `/data/outputs/${id}.png`,
    created: 1_760_000_000 + id,
    prompt: `image number ${id}`,
    negative_prompt: "",
    model: "tiny",
    family: "sdxs",
    width: 64,
    height: 64,
    steps: 2,
    cfg_scale: 1,
    sampler: "euler_a",
    scheduler: null,
    seed: 1000 + id,
    loras: [],
    init_image: null,
    strength: null,
    generation_seconds: 1.5,
    job_id: null,
    favorite: false,
    boards: [],
    tags: [],
    source: "diffugen",
    trashed: null,
    upscale: null,
    client: "app",
    queue_seconds: 0,
    ...overrides,
  };
}

export function vram(overrides: Partial<VramSnapshot> = {}): VramSnapshot {
  return {
    phase: "idle",
    phase_seconds: 3,
    policy: "auto",
    after_queue: "restore",
    strict: false,
    gpu: {
      available: true,
      message: null,
      gpus: [
        {
          index: 0,
          name: "NVIDIA GeForce RTX 4060",
          total_bytes: 8 * GIB,
          used_bytes: 6 * GIB,
          free_bytes: 2 * GIB,
          llm_bytes: 4.7 * GIB,
          diffugen_bytes: 1 * GIB,
          other_bytes: 0.3 * GIB,
          processes: [],
        },
      ],
      llm_bytes: 4.7 * GIB,
      diffugen_bytes: 1 * GIB,
    },
    ollama: { url: "http://127.0.0.1:11434", reachable: true, version: "0.12.0", error: null, models: [] },
    engine: { worker_pid: null, loaded_model: null, estimated_bytes: null, budget_bytes: null },
    pending_restore: [],
    llm_requests_waiting: 0,
    stats: {
      switches: 0,
      requests: 0,
      errors: 0,
      unload_timeouts: 0,
      last_switch_ms: null,
      average_switch_ms: null,
      max_switch_ms: null,
      seconds_in: { idle: 3, llm: 0, switching: 0, diffusion: 0 },
    },
    ...overrides,
  };
}

/** The memory planner's answer for a model that fits on the GPU; override to offload or not fit. */
export function plan(overrides: Partial<Plan> = {}): Plan {
  return {
    fits: true,
    placement: { diffusion: "gpu", clip_l: "gpu", vae: "gpu" },
    vae_tiling: false,
    flash_attn: false,
    max_vram_gib: null,
    estimated_vram_peak_bytes: 3.2 * GIB,
    estimated_ram_peak_bytes: 1.1 * GIB,
    estimated_seconds: 4,
    vram_available_bytes: 7 * GIB,
    ram_available_bytes: 30 * GIB,
    reasons: ["diffusion on the GPU: fits in VRAM"],
    advice: [],
    ...overrides,
  };
}

export const catalog: CatalogEntry[] = [
  {
    id: "sd-turbo",
    name: "SD-Turbo",
    family: "sd2",
    description: "A small, fast model for low-VRAM machines.",
    license: "sai-nc-community",
    page: "https://huggingface.co/stabilityai/sd-turbo",
    recommended_low_vram: true,
    files: [{ component: "model", url: "https://example.invalid/sd_turbo.safetensors", bytes: 2.5e9, sha256: "ab".repeat(32) }],
  },
];

/** What `control_preview` answers in the tests unless told otherwise: a control map's data URL. */
export const CONTROL_MAP = "data:image/png;base64,Q0FOTlk=";

export type Handler = (args: Record<string, unknown>) => unknown;

/** Mocks the IPC with the default answers, overridden per command; records every call. */
export function mockCore(overrides: Record<string, Handler> = {}) {
  const calls: { cmd: string; args: Record<string, unknown> }[] = [];
  const ok = (data: unknown) => data;
  const defaults: Record<string, Handler> = {
    app_info: () => info,
    get_settings: (): Settings => ({ extra_models_dirs: [] }),
    list_models: () => ok(models()),
    queue: (): JobInfo[] => [],
    queue_lanes: () => [],
    list_downloads: () => [],
    vram: () => vram(),
    catalog: () => catalog,
    gallery_count: () => 0,
    gallery_page: () => ({ entries: [], next_cursor: null }),
    gallery_boards: () => [],
    queue_history: (): JobInfo[] => [],
    plan_model: () => plan(),
    queue_paused: () => false,
    set_queue_paused: (args) => args.paused === true,
    requeue_job: () => "requeued-1",
    upscalers: () => ["Lanczos", "Nearest"],
    controlnets: () => [],
    control_preview: () => CONTROL_MAP,
  };
  mockConvertFileSrc("linux");
  mockIPC(
    (cmd, args) => {
      calls.push({ cmd, args: (args ?? {}) as Record<string, unknown> });
      const handler = overrides[cmd] ?? defaults[cmd];
      if (!handler) throw new Error(`unmocked command ${cmd}`);
      return handler((args ?? {}) as Record<string, unknown>);
    },
    { shouldMockEvents: true },
  );
  return calls;
}

/** The first bytes of a PNG of `width`×`height` (signature and IHDR): enough for its size to be read. */
export function pngBytes(width: number, height: number): Uint8Array {
  const bytes = new Uint8Array(33);
  bytes.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52]);
  new DataView(bytes.buffer).setUint32(16, width);
  new DataView(bytes.buffer).setUint32(20, height);
  bytes.set([8, 6, 0, 0, 0], 24);
  return bytes;
}

export function pngFile(name: string, width: number, height: number): File {
  return new File([pngBytes(width, height) as BlobPart], name, { type: "image/png" });
}

/** What `gallery_image_data` answers for a gallery image in the tests (a data URL with no readable header). */
export const GALLERY_PNG = "data:image/png;base64,R0FMTEVSWQ==";

/** A data URL of a PNG header of `width`×`height` (its size can be read from it). */
export function pngDataUrl(width: number, height: number): string {
  return `data:image/png;base64,${btoa(String.fromCharCode(...pngBytes(width, height)))}`;
}

/** A job as `queue` and `queue_history` list it. */
export function jobInfo(id: string, overrides: Partial<JobInfo> = {}): JobInfo {
  return {
    id,
    state: "queued",
    position: 0,
    source: "app",
    model: "tiny",
    prompt: `prompt of ${id}`,
    created: 1_760_000_000,
    finished: null,
    outputs: [],
    error: null,
    last_event: null,
    lane: null,
    worker: null,
    starts_in: null,
    width: 512,
    height: 512,
    ...overrides,
  };
}

/**
 * A `DataTransfer` as a drag carries it between its start and its drop (jsdom has none): what `setData` puts in,
 * `getData` gives back; `files` are the files dropped from the OS.
 */
export function dataTransfer(files: File[] = []) {
  const carried: Record<string, string> = {};
  const transfer = {
    types: files.length ? ["Files"] : ([] as string[]),
    files,
    dropEffect: "none",
    effectAllowed: "all",
    setData(type: string, value: string) {
      carried[type] = value;
      if (!transfer.types.includes(type)) transfer.types.push(type);
    },
    getData: (type: string) => carried[type] ?? "",
  };
  return transfer;
}
