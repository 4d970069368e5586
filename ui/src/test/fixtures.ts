// What the core answers, as the bindings type it: the mocked IPC serves these to the panels under test.
import { vi } from "vitest";
import { mockIPC, mockConvertFileSrc } from "@tauri-apps/api/mocks";
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
    estimated_bytes: 3e9,
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
  extra_models_dirs: [],
  outputs_dir: "/data/outputs",
  settings_file: "/data/settings.json",
  api_url: "http://127.0.0.1:5199",
  api_error: null,
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
          total_bytes: 8e9,
          used_bytes: 6e9,
          free_bytes: 2e9,
          llm_bytes: 4.7e9,
          diffugen_bytes: 1e9,
          other_bytes: 0.3e9,
          processes: [],
        },
      ],
      llm_bytes: 4.7e9,
      diffugen_bytes: 1e9,
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
    estimated_vram_peak_bytes: 3.2e9,
    estimated_ram_peak_bytes: 1.1e9,
    estimated_seconds: 4,
    vram_available_bytes: 7e9,
    ram_available_bytes: 30e9,
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
    list_downloads: () => [],
    vram: () => vram(),
    catalog: () => catalog,
    gallery_count: () => 0,
    gallery_page: () => ({ entries: [], next_cursor: null }),
    gallery_boards: () => [],
    plan_model: () => plan(),
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

/** What a gallery image read back through a canvas becomes in the tests. */
export const GALLERY_PNG = "data:image/png;base64,R0FMTEVSWQ==";

/**
 * Stands in for the browser's image loading and canvas, which jsdom lacks: a gallery image "loads" at `size` and
 * reads back as `GALLERY_PNG`, or fails to load (as it does when the window may not read its pixels).
 */
export function fakeImageLoading(outcome: { width: number; height: number } | "error") {
  class FakeImage {
    onload: (() => void) | null = null;
    onerror: (() => void) | null = null;
    crossOrigin: string | null = null;
    naturalWidth = 0;
    naturalHeight = 0;
    set src(_url: string) {
      setTimeout(() => {
        if (outcome === "error") return this.onerror?.();
        this.naturalWidth = outcome.width;
        this.naturalHeight = outcome.height;
        this.onload?.();
      });
    }
  }
  vi.stubGlobal("Image", FakeImage);
  vi.spyOn(HTMLCanvasElement.prototype, "getContext").mockReturnValue({ drawImage() {} } as never);
  vi.spyOn(HTMLCanvasElement.prototype, "toDataURL").mockReturnValue(GALLERY_PNG);
}
