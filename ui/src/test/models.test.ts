import { describe, expect, it } from "vitest";
import { fireEvent, render, screen, waitFor, within } from "@testing-library/svelte";
import { emit } from "@tauri-apps/api/event";
import Models from "../panels/Models.svelte";
import App from "../App.svelte";
import { app, refreshModels, start } from "../lib/state.svelte";
import type { ModelEntry } from "../lib/bindings";
import { card, catalog, info, mockCore, models } from "./fixtures";

function file(overrides: Partial<ModelEntry>): ModelEntry {
  return {
    id: "piece",
    path: "/data/models/piece.safetensors",
    format: "safetensors",
    family: "flux",
    variant: null,
    role: "vae",
    quantization: null,
    parameters: null,
    size_bytes: 3e8,
    error: null,
    ...overrides,
  };
}

describe("Models", () => {
  it("shows each card with its family, memory estimate and files, and why an incomplete one cannot run", async () => {
    mockCore({
      list_models: () =>
        models([
          card(),
          card({ id: "flux1-schnell", name: "flux1 schnell", family: "flux", source: "assembled", error: "two t5xxl encoders fit: t5xxl_fp16, t5xxl_q8; keep one or save a preset" }),
        ]),
    });
    await refreshModels();
    render(Models);
    expect(screen.getByTestId("card-tiny").textContent).toContain("3.0 GiB VRAM");
    expect(screen.getByTestId("card-flux1-schnell").textContent).toContain("keep one or save a preset");
  });

  it("lists the catalog with each file's pinned size and SHA-256, downloads from it and shows live progress", async () => {
    app.downloads = [];
    const calls = mockCore({
      start_download: () => "dl-1",
      list_downloads: () => [{ id: "dl-1", name: "sd-turbo", state: "running", last_event: null }],
    });
    await start();
    render(Models);
    const size = await screen.findByText(/2\.5 GB · sai-nc-community/);
    expect(size.getAttribute("title")).toBe(`sd_turbo.safetensors: 2.5 GB, sha256 ${"ab".repeat(32)}`);
    await fireEvent.click(await screen.findByText("Download"));
    await waitFor(() => expect(calls.find((c) => c.cmd === "start_download")?.args).toEqual({ target: "sd-turbo", sha256: null }));
    await emit("download-update", { id: "dl-1", file: 1, files: 1, stage: "progress", bytes: 1e9, total_bytes: 2e9, bytes_per_second: 50e6, eta_seconds: 20 });
    await waitFor(() => expect(screen.getByTestId("download").textContent).toContain("1.0 GB of 2.0 GB · 50.0 MB/s · ETA 20 s"));
  });

  it("Download URL starts the download of the typed URL and empties the field", async () => {
    app.downloads = [];
    const calls = mockCore({ start_download: () => "dl-3" });
    await start();
    render(Models);
    const field = await screen.findByLabelText<HTMLInputElement>("Model URL");
    await fireEvent.input(field, { target: { value: "https://example.com/model.safetensors" } });
    await fireEvent.click(screen.getByText("Download URL"));
    await waitFor(() => expect(calls.find((c) => c.cmd === "start_download")?.args).toEqual({ target: "https://example.com/model.safetensors", sha256: null }));
    await waitFor(() => expect(field.value).toBe(""));
  });

  it("a failed download can be tried again and an ended one removed from the list", async () => {
    app.downloads = [];
    let listed = [
      { id: "dl-1", name: "sd-turbo", state: "failed" as const, last_event: null },
      { id: "dl-2", name: "flux-schnell-q4", state: "done" as const, last_event: null },
      { id: "dl-3", name: "RealESRGAN_x4plus_anime_6B", state: "running" as const, last_event: null },
    ];
    const calls = mockCore({
      list_downloads: () => listed,
      retry_download: () => {
        listed = [{ id: "dl-4", name: "sd-turbo", state: "running", last_event: null }, ...listed.slice(1)];
        return "dl-4";
      },
      dismiss_download: (args) => {
        listed = listed.filter((p) => p.id !== args.id);
        return null;
      },
    });
    await start();
    render(Models);
    const rows = await screen.findAllByTestId("download");
    expect(rows).toHaveLength(3);
    // Running: only Cancel. Done: Remove. Failed: Try again and Remove.
    expect(within(rows[2]).queryByTestId("download-retry")).toBeNull();
    expect(within(rows[2]).queryByTestId("download-remove")).toBeNull();
    expect(within(rows[1]).queryByTestId("download-retry")).toBeNull();
    await fireEvent.click(within(rows[0]).getByTestId("download-retry"));
    await waitFor(() => expect(calls.find((c) => c.cmd === "retry_download")?.args).toEqual({ id: "dl-1" }));
    await waitFor(() => expect(app.downloads.map((d) => d.id)).toEqual(["dl-4", "dl-2", "dl-3"]));
    const done = screen.getAllByTestId("download")[1];
    await fireEvent.click(within(done).getByRole("button", { name: "Remove flux-schnell-q4 from the list" }));
    await waitFor(() => expect(app.downloads.map((d) => d.id)).toEqual(["dl-4", "dl-3"]));
  });

  it("a download that fails says so in a toast, wherever the user is", async () => {
    app.downloads = [];
    app.toasts = [];
    mockCore({ list_downloads: () => [{ id: "dl-9", name: "sd-turbo", state: "running", last_event: null }] });
    await start();
    await waitFor(() => expect(app.downloads).toHaveLength(1));
    await emit("download-update", { id: "dl-9", file: 1, files: 1, stage: "failed", error: "the download of https://x.invalid/sd.safetensors kept failing" });
    await waitFor(() => expect(app.toasts.map((t) => t.text).join(" | ")).toContain("Download of sd-turbo failed"));
    expect(app.toasts.find((t) => t.text.startsWith("Download of"))?.kind).toBe("error");
  });

  it("marks a catalog upscaler as an upscaler, not by a model family, and downloads it like a model", async () => {
    const esrgan = { ...catalog[0], id: "RealESRGAN_x4plus_anime_6B", name: "Real-ESRGAN x4plus anime 6B", kind: "upscaler" as const, family: "esrgan" as const, recommended_low_vram: false };
    const calls = mockCore({ catalog: () => [catalog[0], esrgan], start_download: () => "dl-2" });
    await start();
    render(Models);
    const badge = await screen.findByTestId("catalog-upscaler");
    expect(badge.closest("article")!.textContent).toContain("Real-ESRGAN x4plus anime 6B");
    expect(badge.closest("article")!.textContent).not.toContain("esrgan");
    await fireEvent.click(within(badge.closest("article")!).getByText("Download"));
    await waitFor(() => expect(calls.find((c) => c.cmd === "start_download")?.args).toEqual({ target: "RealESRGAN_x4plus_anime_6B", sha256: null }));
  });

  it("marks a catalog ControlNet with the models it fits and keeps it out of the model badges", async () => {
    const canny = {
      ...catalog[0],
      id: "control_v11p_sd15_canny",
      name: "ControlNet 1.1 Canny (SD 1.5)",
      kind: "controlnet" as const,
      family: "sd1" as const,
      recommended_low_vram: false,
    };
    const calls = mockCore({ catalog: () => [catalog[0], canny], start_download: () => "dl-3" });
    await start();
    render(Models);
    const badge = await screen.findByTestId("catalog-controlnet");
    expect(badge.textContent).toBe("ControlNet · SD 1.x");
    expect(badge.closest("article")!.textContent).toContain("ControlNet 1.1 Canny (SD 1.5)");
    await fireEvent.click(within(badge.closest("article")!).getByText("Download"));
    await waitFor(() => expect(calls.find((c) => c.cmd === "start_download")?.args).toEqual({ target: "control_v11p_sd15_canny", sha256: null }));
  });

  it("lists a model copied into a model folder without a rescan by hand", async () => {
    let listed = [card()];
    mockCore({ list_models: () => models(listed) });
    await start();
    render(Models);
    expect(await screen.findByTestId("card-tiny")).toBeTruthy();
    expect(screen.queryByTestId("card-copied-in")).toBeNull();
    listed = [card(), card({ id: "copied-in", name: "copied in" })];
    await emit("models-update", { paths: ["/data/models/copied-in.gguf"] });
    expect(await screen.findByTestId("card-copied-in")).toBeTruthy();
  });

  it("opens on a first-run screen recommending a small model when none is installed", async () => {
    mockCore({ list_models: () => models([]) });
    render(App);
    const first = await screen.findByTestId("first-run");
    await waitFor(() => expect(first.textContent).toContain("SD-Turbo"));
    expect(first.textContent).toContain("recommended for 8 GB GPUs");
    expect(first.textContent).toContain("/data/models");
  });

  it("counts steps in words: 1 step, 20 steps", async () => {
    mockCore({ list_models: () => models([card({ id: "one", default_steps: 1 }), card({ id: "many", default_steps: 20 })]) });
    await refreshModels();
    render(Models);
    expect(screen.getByTestId("card-one").textContent).toContain("1 step ·");
    expect(screen.getByTestId("card-one").textContent).not.toContain("1 steps");
    expect(screen.getByTestId("card-many").textContent).toContain("20 steps ·");
  });

  it("lists the files it cannot use in plain view, each with the reason, apart from the pieces and LoRAs", async () => {
    mockCore({
      list_models: () => ({
        ...models(),
        files: [
          file({ id: "broken", path: "/data/models/broken.gguf", format: null, role: "unknown", error: "not a GGUF or safetensors file (truncated header)" }),
          file({ id: "ae", path: "/data/models/vae/ae.safetensors" }),
          file({ id: "detail-tweaker", path: "/data/models/loras/detail-tweaker.safetensors", role: "lora" }),
        ],
      }),
    });
    await refreshModels();
    render(Models);
    const unusable = screen.getByTestId("unusable-files");
    expect(unusable.textContent).toContain("1 file DiffuGen can't use");
    expect(unusable.textContent).toContain("/data/models/broken.gguf");
    expect(unusable.textContent).toContain("not a GGUF or safetensors file (truncated header)");
    expect(unusable.closest("details")).toBeNull();
    expect(unusable.textContent).not.toContain("ae.safetensors");
    expect(screen.getByText("2 other files (pieces of models, LoRAs)")).toBeTruthy();
  });

  it("labels ControlNet files 'ControlNet · for SD 1.x models' among the other files", async () => {
    mockCore({
      list_models: () => ({
        ...models(),
        files: [
          file({ id: "control_v11p_sd15_canny", path: "/data/models/controlnet/control_v11p_sd15_canny.safetensors", family: "sd1", role: "control_net" }),
          file({ id: "detail-tweaker", path: "/data/models/loras/detail-tweaker.safetensors", role: "lora" }),
        ],
      }),
    });
    await refreshModels();
    render(Models);
    expect(screen.getByText("2 other files (pieces of models, LoRAs, ControlNets)")).toBeTruthy();
    const row = screen.getByTestId("file-control_v11p_sd15_canny");
    expect(row.textContent).toContain("ControlNet · for SD 1.x models");
    expect(screen.getByTestId("file-detail-tweaker").textContent).not.toContain("ControlNet");
  });

  it("says why DiffuGen's models folder cannot be moved when an environment variable fixes it", async () => {
    mockCore({ list_models: () => models([]), app_info: () => ({ ...info, models_dir_fixed: true }) });
    render(App);
    const move = await screen.findByTestId<HTMLButtonElement>("move-models-dir");
    expect(move.disabled).toBe(true);
    const reason = screen.getByTestId("setting-locked-models_dir");
    expect(move.getAttribute("aria-describedby")).toBe(reason.id);
    expect(reason.textContent).toContain("Set by the environment variable DIFFUGEN_MODELS_DIR; unset it to move the folder here.");
  });

  it("while an environment variable sets the other model folders, Add a folder… and each ✕ are disabled, saying which variable", async () => {
    mockCore();
    app.settings = { extra_models_dirs: ["/comfy/models"] };
    app.info = {
      ...info,
      extra_models_dirs: ["/comfy/models"],
      locked: [{ key: "extra_models_dirs", variable: "DIFFUGEN_EXTRA_MODELS_DIRS" }],
    };
    render(Models);
    const add = screen.getByRole<HTMLButtonElement>("button", { name: "Add a folder…" });
    const remove = screen.getByRole<HTMLButtonElement>("button", { name: "Remove /comfy/models" });
    for (const button of [add, remove]) {
      expect(button.disabled).toBe(true);
      const reason = document.getElementById(button.getAttribute("aria-describedby")!);
      expect(reason?.textContent).toContain("Set by the environment variable DIFFUGEN_EXTRA_MODELS_DIRS");
    }
    expect(screen.getAllByText(/Set by the environment variable/)).toHaveLength(1);
  });

  it("names the variable that sets DiffuGen's models folder beside it, and leaves the other folders' buttons usable", async () => {
    mockCore();
    app.settings = { extra_models_dirs: ["/comfy/models"] };
    app.info = { ...info, extra_models_dirs: ["/comfy/models"], locked: [{ key: "models_dir", variable: "DIFFUGEN_MODELS_DIR" }] };
    render(Models);
    expect(screen.getByTestId("models-dir-note").textContent).toBe("DiffuGen's folder (set by DIFFUGEN_MODELS_DIR)");
    for (const name of ["Add a folder…", "Remove /comfy/models"]) {
      const button = screen.getByRole<HTMLButtonElement>("button", { name });
      expect(button.disabled).toBe(false);
      expect(button.hasAttribute("aria-describedby")).toBe(false);
    }
    expect(screen.queryByText(/Set by the environment variable/)).toBeNull();
  });
});
