// The first-run screen: what it recommends for the machine, and the way to the gallery before a model exists.
import { describe, expect, it } from "vitest";
import { fireEvent, render, screen, waitFor } from "@testing-library/svelte";
import App from "../App.svelte";
import FirstRun from "../panels/FirstRun.svelte";
import { app } from "../lib/state.svelte";
import type { CatalogEntry, VramSnapshot } from "../lib/bindings";
import { catalog, entry, mockCore, models, vram } from "./fixtures";

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
