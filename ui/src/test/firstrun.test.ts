// The first-run screen: what it recommends for the machine, and the way to the gallery before a model exists.
import { describe, expect, it } from "vitest";
import { fireEvent, render, screen, waitFor } from "@testing-library/svelte";
import App from "../App.svelte";
import FirstRun from "../panels/FirstRun.svelte";
import { app } from "../lib/state.svelte";
import type { CatalogEntry, VramSnapshot } from "../lib/bindings";
import { catalog, entry, info, mockCore, models, vram } from "./fixtures";

const noGpu = (): VramSnapshot =>
  vram({ gpu: { available: false, message: "no NVIDIA GPU detected (NVML not found)", gpus: [], llm_bytes: null, diffugen_bytes: null } });

function model(id: string, name: string, bytes: number, overrides: Partial<CatalogEntry> = {}): CatalogEntry {
  return {
    id,
    name,
    family: "sdxl",
    description: `${name}, a model`,
    license: "openrail",
    page: `https://example.invalid/${id}`,
    files: [{ component: "model", url: `https://example.invalid/${id}.gguf`, bytes, sha256: "cd".repeat(32) }],
    ...overrides,
  };
}

/** A catalog whose low-VRAM pick for a GPU is not SD-Turbo. */
const withTurbo = () => [model("flux-q4", "FLUX.1 schnell Q4", 7e9, { recommended_low_vram: true }), model("sdxl", "SDXL", 6.9e9), ...catalog.map((c) => ({ ...c, recommended_low_vram: false }))];

async function hero(snapshot: VramSnapshot | null, entries: CatalogEntry[]) {
  app.vram = snapshot;
  app.models = models([]);
  mockCore({ catalog: () => entries });
  render(FirstRun);
  const card = await waitFor(() => {
    const found = document.querySelector<HTMLElement>(".hero");
    if (!found) throw new Error("no recommendation yet");
    return found;
  });
  return card;
}

describe("First run: the recommendation fits the machine", () => {
  it("without an NVIDIA GPU recommends SD-Turbo, saying why", async () => {
    const card = await hero(noGpu(), withTurbo());
    expect(card.querySelector("strong")!.textContent).toBe("SD-Turbo");
    expect(screen.getByTestId("recommended-reason").textContent).toContain("runs on the CPU in about a minute per image");
    expect(screen.getByTestId("recommended-badge").textContent).toBe("recommended for this computer");
  });

  it("without an NVIDIA GPU and no SD-Turbo in the catalog recommends the smallest download", async () => {
    const card = await hero(noGpu(), [model("flux-q4", "FLUX.1 schnell Q4", 7e9, { recommended_low_vram: true }), model("small", "Small one", 1.2e9), model("sdxl", "SDXL", 6.9e9)]);
    expect(card.querySelector("strong")!.textContent).toBe("Small one");
    expect(screen.getByTestId("recommended-reason").textContent).toContain("CPU");
  });

  it("without an NVIDIA GPU shows the CPU reason in place of the catalog's GPU words, and never offers an upscaler", async () => {
    const upscaler = model("esrgan", "A tiny upscaler", 1.8e7, { kind: "upscaler", family: "esrgan", description: "an upscaler" });
    const card = await hero(noGpu(), [model("small", "Small one", 1.2e9, { description: "The best first model for a GPU with 4-6 GB." }), upscaler]);
    expect(card.querySelector("strong")!.textContent).toBe("Small one");
    expect(card.textContent).not.toContain("for a GPU with 4-6 GB");
    expect(document.body.textContent).not.toContain("A tiny upscaler");
  });

  it("with an NVIDIA GPU keeps the low-VRAM pick, with no CPU line", async () => {
    const card = await hero(vram(), withTurbo());
    expect(card.querySelector("strong")!.textContent).toBe("FLUX.1 schnell Q4");
    expect(screen.getByTestId("recommended-badge").textContent).toBe("recommended for 8 GB GPUs");
    expect(screen.queryByTestId("recommended-reason")).toBeNull();
  });
});

describe("First run: the gallery", () => {
  it("opens the gallery from the first-run screen, with the images from before", async () => {
    app.view = "generate";
    app.detail = null;
    const entries = [entry(1), entry(2)];
    mockCore({
      list_models: () => models([]),
      gallery_count: () => entries.length,
      gallery_page: () => ({ entries, next_cursor: null }),
      gallery_entry: (a) => entries.find((e) => e.id === a.id),
    });
    render(App);
    await screen.findByTestId("first-run");
    await fireEvent.click(screen.getByTestId("first-run-gallery"));
    await waitFor(() => expect(screen.getByTestId("gallery-count").textContent).toBe("2 images"));
    expect(screen.queryByTestId("first-run")).toBeNull();
  });

  it("the Gallery tab works too before a model is installed, and Generate still shows the first-run screen", async () => {
    app.view = "generate";
    app.detail = null;
    mockCore({ list_models: () => models([]), gallery_count: () => 1, gallery_page: () => ({ entries: [entry(1)], next_cursor: null }) });
    render(App);
    await screen.findByTestId("first-run");
    await fireEvent.click(screen.getByTestId("nav-gallery"));
    expect(await screen.findByTestId("gallery-count")).toBeTruthy();
    await fireEvent.click(screen.getByTestId("nav-generate"));
    expect(await screen.findByTestId("first-run")).toBeTruthy();
  });
});

describe("First run: folders an environment variable sets", () => {
  /** The first-run screen with `locked` as the settings the environment sets. */
  function withLocks(locked: { key: string; variable: string }[]) {
    app.vram = vram();
    app.models = models([]);
    app.settings = { extra_models_dirs: [] };
    app.info = { ...info, locked };
    mockCore();
    render(FirstRun);
    return {
      use: screen.getByRole<HTMLButtonElement>("button", { name: "Use my existing models folder…" }),
      move: screen.getByRole<HTMLButtonElement>("button", { name: "Move DiffuGen's models folder…" }),
    };
  }
  const reasonOf = (button: HTMLElement) => document.getElementById(button.getAttribute("aria-describedby") ?? "")?.textContent;

  it("Move… is disabled while DIFFUGEN_MODELS_DIR sets the models folder, saying so beside it; adding a folder still works", () => {
    const { use, move } = withLocks([{ key: "models_dir", variable: "DIFFUGEN_MODELS_DIR" }]);
    expect(move.disabled).toBe(true);
    expect(move.title).toBe("Set by the environment variable DIFFUGEN_MODELS_DIR");
    expect(reasonOf(move)).toContain("Set by the environment variable DIFFUGEN_MODELS_DIR; unset it to move the folder here.");
    expect(use.disabled).toBe(false);
    expect(use.hasAttribute("aria-describedby")).toBe(false);
  });

  it("“Use my existing models folder…” is disabled while a variable sets the other model folders, naming it; Move… still works", () => {
    const { use, move } = withLocks([{ key: "extra_models_dirs", variable: "DIFFUGEN_EXTRA_MODELS_DIRS" }]);
    expect(use.disabled).toBe(true);
    expect(reasonOf(use)).toContain("Set by the environment variable DIFFUGEN_EXTRA_MODELS_DIRS; unset it to add your folder here.");
    expect(move.disabled).toBe(false);
    expect(move.hasAttribute("aria-describedby")).toBe(false);
  });

  it("with both set, each button is described by its own variable's note", () => {
    const { use, move } = withLocks([
      { key: "models_dir", variable: "DIFFUGEN_MODELS_DIR" },
      { key: "extra_models_dirs", variable: "DIFFUGEN_EXTRA_MODELS_DIRS" },
    ]);
    expect([use.disabled, move.disabled]).toEqual([true, true]);
    expect(reasonOf(use)).toContain("DIFFUGEN_EXTRA_MODELS_DIRS");
    expect(reasonOf(use)).not.toContain("DIFFUGEN_MODELS_DIR;");
    expect(reasonOf(move)).toContain("DIFFUGEN_MODELS_DIR");
    expect(reasonOf(move)).not.toContain("EXTRA");
  });
});
