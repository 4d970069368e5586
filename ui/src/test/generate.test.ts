import { describe, expect, it } from "vitest";
import { fireEvent, render, screen, waitFor, within } from "@testing-library/svelte";
import { emit } from "@tauri-apps/api/event";
import Generate from "../panels/Generate.svelte";
import App from "../App.svelte";
import { app, emptyForm, form, start } from "../lib/state.svelte";
import { card, mockCore, models } from "./fixtures";

async function setup(overrides = {}) {
  Object.assign(form, emptyForm());
  app.current = null;
  app.jobs = {};
  const calls = mockCore(overrides);
  await start();
  render(Generate);
  return calls;
}

describe("Generate", () => {
  it("lists every model card with its family, size and estimated VRAM, and says why a broken one cannot be used", async () => {
    await setup({
      list_models: () =>
        models([
          card(),
          card({ id: "flux1-dev", name: "flux1 dev", family: "flux", size_bytes: 12e9, estimated_bytes: 14e9, error: "no t5xxl text encoder found" }),
        ]),
    });
    await fireEvent.click(await screen.findByTestId("model-picker"));
    const tiny = screen.getByTestId("model-option-tiny");
    expect(tiny.textContent).toContain("sdxs");
    expect(tiny.textContent).toContain("883 MB");
    expect(tiny.textContent).toContain("3.0 GB VRAM");
    const flux = screen.getByTestId("model-option-flux1-dev");
    expect(flux.getAttribute("aria-disabled")).toBe("true");
    expect(flux.textContent).toContain("no t5xxl text encoder found");
  });

  it("refuses an empty prompt without calling the core, and names the field", async () => {
    const calls = await setup();
    await fireEvent.click(await screen.findByTestId("generate"));
    expect((await screen.findByTestId("form-error")).textContent).toMatch(/Describe the image/);
    expect(screen.getByTestId("prompt").classList.contains("invalid")).toBe(true);
    expect(calls.some((c) => c.cmd === "generate")).toBe(false);
  });

  it("sends the form on Ctrl+Enter: the chosen model, a custom size, the steps and a random seed", async () => {
    const calls = await setup({ generate: () => "job-1" });
    await screen.findByText("tiny");
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "a lighthouse at dusk" } });
    await fireEvent.change(screen.getByTestId("size"), { target: { value: "custom" } });
    await fireEvent.input(screen.getByTestId("width"), { target: { value: "64" } });
    await fireEvent.input(screen.getByTestId("height"), { target: { value: "64" } });
    await fireEvent.input(screen.getByTestId("steps"), { target: { value: "2" } });
    await fireEvent.keyDown(window, { key: "Enter", ctrlKey: true });
    await waitFor(() => expect(calls.find((c) => c.cmd === "generate")).toBeTruthy());
    const sent = calls.find((c) => c.cmd === "generate")!.args.form as Record<string, unknown>;
    expect(sent).toMatchObject({ model: "tiny", prompt: "a lighthouse at dusk", width: 64, height: 64, steps: 2, seed: -1 });
    expect(app.current).toBe("job-1");
  });

  it("a locked seed is sent as typed", async () => {
    const calls = await setup({ generate: () => "job-2" });
    await screen.findByText("tiny");
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "x" } });
    await fireEvent.input(screen.getByTestId("seed"), { target: { value: "1234" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(calls.find((c) => c.cmd === "generate")).toBeTruthy());
    expect((calls.find((c) => c.cmd === "generate")!.args.form as { seed: number }).seed).toBe(1234);
  });

  it("shows the core's field error next to the form and marks the field", async () => {
    const calls = await setup({
      generate: () => {
        throw { field: "steps", message: "200 is out of range; use 1..=150" };
      },
    });
    await screen.findByText("tiny");
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "x" } });
    await fireEvent.input(screen.getByTestId("steps"), { target: { value: "200" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(calls.map((c) => c.cmd)).toContain("generate"));
    expect((await screen.findByTestId("form-error")).textContent).toContain("200 is out of range; use 1..=150");
    expect(screen.getByTestId("steps").classList.contains("invalid")).toBe(true);
  });

  it("follows a job live: phase, step i/N, it/s, ETA, the progress bar and the preview, then the finished image", async () => {
    await setup({ generate: () => "job-7" });
    await screen.findByText("tiny");
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "x" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(app.current).toBe("job-7"));
    const base = { job_id: "job-7", elapsed_seconds: 1 };
    await emit("job-update", { ...base, percent: 40, eta_seconds: 3, phase: "sampling", image: 1, images: 1, step: 2, steps: 5, seconds_per_step: 0.5 });
    await emit("job-update", { ...base, percent: 40, eta_seconds: 3, phase: "preview", image: 1, step: 2, width: 8, height: 8, png_base64: "iVBORw0KGgo=" });
    const progress = screen.getByTestId("progress");
    await waitFor(() => expect(within(progress).getByTestId("job-step").textContent).toBe("step 2/5"));
    expect(progress.textContent).toContain("2.00 it/s");
    expect(progress.textContent).toContain("ETA 3 s");
    expect(screen.getByTestId("progress-bar").getAttribute("aria-valuenow")).toBe("40");
    expect(screen.getByTestId<HTMLImageElement>("preview-image").src).toContain("data:image/png;base64,iVBORw0KGgo=");
    await emit("job-update", { ...base, percent: 100, eta_seconds: 0, phase: "done", outputs: [{ path: "/o/1.png", seed: 42, width: 64, height: 64, gallery_id: 9 }] });
    await waitFor(() => expect(screen.getByTestId<HTMLImageElement>("result-image").src).toContain("image-9"));
    expect(screen.getByTestId("job-phase").textContent).toBe("Done");
    expect(progress.textContent).toContain("Seed 42");
  });

  it("Esc cancels the job being followed", async () => {
    Object.assign(form, emptyForm());
    app.current = null;
    app.jobs = {};
    const calls = mockCore({ cancel_job: () => true });
    render(App);
    await screen.findByTestId("generate");
    await emit("job-update", { job_id: "job-9", elapsed_seconds: 0, percent: 10, eta_seconds: 5, phase: "encoding_prompt" });
    await waitFor(() => expect(app.current).toBe("job-9"));
    await fireEvent.keyDown(window, { key: "Escape" });
    await waitFor(() => expect(calls.find((c) => c.cmd === "cancel_job")?.args).toEqual({ id: "job-9" }));
  });

  it("img2img: a dropped picture becomes the init image with strength 0.75, and the mask goes with it", async () => {
    const calls = await setup({ generate: () => "job-3" });
    await screen.findByText("tiny");
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "repaint the sky" } });
    await fireEvent.click(screen.getByText(/Sampler, LoRAs, img2img/));
    const png = new File([new Uint8Array([0x89, 0x50, 0x4e, 0x47])], "photo.png", { type: "image/png" });
    await fireEvent.change(screen.getByTestId("init-image-input"), { target: { files: [png] } });
    await waitFor(() => expect(form.init_image).toMatch(/^data:image\/png;base64,/));
    expect(form.strength).toBe(0.75);
    const mask = new File([new Uint8Array([0x89, 0x50])], "mask.png", { type: "image/png" });
    await fireEvent.change(screen.getByLabelText("Load mask"), { target: { files: [mask] } });
    await waitFor(() => expect(form.mask).toMatch(/^data:image\/png;base64,/));
    expect(screen.getByText(/Inpainting: white areas of the mask are repainted/)).toBeTruthy();
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(calls.find((c) => c.cmd === "generate")).toBeTruthy());
    const sent = calls.find((c) => c.cmd === "generate")!.args.form as Record<string, unknown>;
    expect(sent.init_image).toBe(form.init_image);
    expect(sent.mask).toBe(form.mask);
    expect(sent.strength).toBe(0.75);
  });

  it("refuses a file that is not an image, saying so", async () => {
    await setup();
    await screen.findByText("tiny");
    await fireEvent.click(screen.getByText(/Sampler, LoRAs, img2img/));
    const text = new File(["hello"], "notes.txt", { type: "text/plain" });
    await fireEvent.change(screen.getByTestId("init-image-input"), { target: { files: [text] } });
    expect((await screen.findByRole("alert")).textContent).toContain("notes.txt is not an image");
    expect(form.init_image).toBeNull();
  });
});
