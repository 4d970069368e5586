import { describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen, waitFor, within } from "@testing-library/svelte";
import { emit } from "@tauri-apps/api/event";
import Generate from "../panels/Generate.svelte";
import App from "../App.svelte";
import { app, applyJobEvent, draft, form, start } from "../lib/state.svelte";
import { card, dataTransfer, GALLERY_PNG, mockCore, models, pngDataUrl, pngFile, vram } from "./fixtures";

async function setup(overrides = {}) {
  app.current = null;
  app.jobs = {};
  app.own = {};
  app.toasts = [];
  const calls = mockCore(overrides);
  await start();
  render(Generate);
  await screen.findByText("tiny");
  return calls;
}

function sentForm(calls: { cmd: string; args: Record<string, unknown> }[]) {
  return calls.find((c) => c.cmd === "generate")!.args.form as Record<string, unknown>;
}

/** The message an input points at with aria-describedby (its error, next to it). */
function describedBy(input: HTMLElement): string {
  return (input.getAttribute("aria-describedby") ?? "")
    .split(" ")
    .map((id) => document.getElementById(id)?.textContent ?? "")
    .join(" ");
}

async function finishJob(id: string, seed: number, galleryId: number) {
  await emit("job-update", {
    job_id: id,
    elapsed_seconds: 3,
    percent: 100,
    eta_seconds: 0,
    phase: "done",
    outputs: [{ path: "/o/1.png", seed, width: 512, height: 512, gallery_id: galleryId }],
  });
  await waitFor(() => expect(screen.getByTestId("result-image")).toBeTruthy());
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
    expect(tiny.textContent).toContain("3.0 GiB VRAM");
    const flux = screen.getByTestId("model-option-flux1-dev");
    expect(flux.getAttribute("aria-disabled")).toBe("true");
    expect(flux.textContent).toContain("no t5xxl text encoder found");
  });

  it("the empty prompt shows a hint, not an example that reads like a real prompt", async () => {
    await setup();
    const prompt = screen.getByLabelText("Prompt");
    expect(prompt.getAttribute("placeholder")).toBe("Describe the image you want…");
  });

  it("refuses an empty prompt without calling the core, with the message next to the prompt", async () => {
    const calls = await setup();
    await fireEvent.click(screen.getByTestId("generate"));
    const prompt = screen.getByTestId("prompt");
    await waitFor(() => expect(prompt.getAttribute("aria-invalid")).toBe("true"));
    expect(describedBy(prompt)).toMatch(/Describe the image/);
    expect(prompt.classList.contains("invalid")).toBe(true);
    expect(calls.some((c) => c.cmd === "generate")).toBe(false);
  });

  it("sends the form on Ctrl+Enter: the chosen model, a custom size, the steps and a random seed", async () => {
    const calls = await setup({ generate: () => "job-1" });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "a lighthouse at dusk" } });
    await fireEvent.change(screen.getByTestId("size"), { target: { value: "custom" } });
    await fireEvent.input(screen.getByTestId("width"), { target: { value: "64" } });
    await fireEvent.input(screen.getByTestId("height"), { target: { value: "64" } });
    await fireEvent.input(screen.getByTestId("steps"), { target: { value: "2" } });
    await fireEvent.keyDown(window, { key: "Enter", ctrlKey: true });
    await waitFor(() => expect(calls.find((c) => c.cmd === "generate")).toBeTruthy());
    expect(sentForm(calls)).toMatchObject({ model: "tiny", prompt: "a lighthouse at dusk", width: 64, height: 64, steps: 2, seed: -1 });
    expect(app.current).toBe("job-1");
  });

  it("a typed seed locks itself and is sent as typed", async () => {
    const calls = await setup({ generate: () => "job-2" });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "x" } });
    await fireEvent.input(screen.getByTestId("seed"), { target: { value: "1234" } });
    expect(screen.getByTestId("seed-lock").getAttribute("aria-pressed")).toBe("true");
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(calls.find((c) => c.cmd === "generate")).toBeTruthy());
    expect(sentForm(calls).seed).toBe(1234);
  });

  it("the dice puts a new random seed in the field without locking it; the lock decides whether it is used", async () => {
    const calls = await setup({ generate: () => "job-2" });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "x" } });
    const seed = screen.getByTestId<HTMLInputElement>("seed");
    await fireEvent.click(screen.getByTestId("seed-dice"));
    const rolled = Number(seed.value);
    expect(Number.isInteger(rolled) && rolled >= 0).toBe(true);
    expect(screen.getByTestId("seed-lock").getAttribute("aria-pressed")).toBe("false");
    expect(screen.getByTestId("seed-state").textContent).toContain("each image gets a new random seed");
    // The number set aside is said to be unused until the lock closes, and looks it.
    expect(screen.getByTestId("seed-state").textContent).toContain(`${rolled} is used only once you lock it`);
    expect(seed.classList.contains("unused")).toBe(true);
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(calls.filter((c) => c.cmd === "generate")).toHaveLength(1));
    expect(sentForm(calls).seed).toBe(-1);

    await fireEvent.click(screen.getByTestId("seed-lock"));
    expect(screen.getByTestId("seed-lock").getAttribute("aria-pressed")).toBe("true");
    expect(Number(seed.value)).toBe(rolled);
    expect(seed.classList.contains("unused")).toBe(false);
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(calls.filter((c) => c.cmd === "generate")).toHaveLength(2));
    expect((calls.filter((c) => c.cmd === "generate")[1].args.form as { seed: number }).seed).toBe(rolled);
  });

  it("shows the core's error at the field it names, in words that name the field, and marks the input", async () => {
    const calls = await setup({
      generate: () => {
        throw { field: "width", message: "must be a multiple of 64 from 64 to 2048, got 70" };
      },
    });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "x" } });
    await fireEvent.change(screen.getByTestId("size"), { target: { value: "custom" } });
    await fireEvent.input(screen.getByTestId("width"), { target: { value: "70" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(calls.map((c) => c.cmd)).toContain("generate"));
    const width = screen.getByTestId("width");
    await waitFor(() => expect(width.getAttribute("aria-invalid")).toBe("true"));
    expect(describedBy(width)).toBe("Width must be a multiple of 64 from 64 to 2048, got 70");
    expect(width.classList.contains("invalid")).toBe(true);
    expect(screen.getByTestId("height").getAttribute("aria-invalid")).toBeNull();
    // Next to the width, not at the foot of the form.
    expect(width.closest(".field")?.querySelector('[data-testid="form-error"]')?.textContent).toContain("Width must be");
    // Editing the field takes the message away.
    await fireEvent.input(width, { target: { value: "64" } });
    expect(width.getAttribute("aria-invalid")).toBeNull();
    expect(screen.queryByTestId("form-error")).toBeNull();
  });

  it("opens the collapsed section of a refused sampler and shows the error there", async () => {
    await setup({
      generate: () => {
        throw { field: "sampler", message: "unknown sampler 'lms'; allowed: euler, euler_a" };
      },
    });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "x" } });
    await fireEvent.click(screen.getByTestId("generate"));
    const sampler = await screen.findByLabelText("Sampler");
    await waitFor(() => expect(sampler.getAttribute("aria-invalid")).toBe("true"));
    expect(screen.getByTestId("advanced-toggle").getAttribute("aria-expanded")).toBe("true");
    expect(describedBy(sampler)).toBe("Sampler: unknown sampler 'lms'; allowed: euler, euler_a");
  });

  it("keeps the Generate button outside the part of the form that scrolls, so it is always in view", async () => {
    await setup();
    const button = screen.getByTestId("generate");
    const formEl = screen.getByTestId("generate-form");
    expect(formEl.contains(button)).toBe(true);
    expect(button.closest(".body")).toBeNull();
    expect(formEl.querySelector(".body")?.contains(screen.getByTestId("prompt"))).toBe(true);
  });

  it("the bar follows the steps, not the clock: the core's time-based percent is not shown", async () => {
    await setup({ generate: () => "job-7" });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "x" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(app.current).toBe("job-7"));
    const base = { job_id: "job-7", elapsed_seconds: 40 };
    const bar = () => Number(screen.getByTestId("progress-bar").getAttribute("aria-valuenow"));
    // Queued for 40 s: the core's clock says 60 %, nothing has been done.
    await emit("job-update", { ...base, percent: 60, eta_seconds: null, phase: "queued", position: 0 });
    await waitFor(() => expect(screen.getByTestId("job-phase").textContent).toBe("Next in line"));
    expect(bar()).toBe(0);
    await emit("job-update", { ...base, percent: 70, eta_seconds: 10, phase: "sampling", image: 1, images: 1, step: 0, steps: 4, seconds_per_step: null });
    await waitFor(() => expect(screen.getByTestId("job-step").textContent).toBe("step 0/4"));
    const atStart = bar();
    await emit("job-update", { ...base, percent: 71, eta_seconds: 6, phase: "sampling", image: 1, images: 1, step: 2, steps: 4, seconds_per_step: 2 });
    await waitFor(() => expect(screen.getByTestId("job-step").textContent).toBe("step 2/4"));
    const half = bar();
    await emit("job-update", { ...base, percent: 72, eta_seconds: 2, phase: "sampling", image: 1, images: 1, step: 4, steps: 4, seconds_per_step: 2 });
    await waitFor(() => expect(screen.getByTestId("job-step").textContent).toBe("step 4/4"));
    const end = bar();
    expect(atStart).toBeLessThan(20);
    // Equal steps, equal strides (to the rounding of a whole percent).
    expect(Math.abs(half - atStart - (end - half))).toBeLessThanOrEqual(1);
    expect(end).toBeGreaterThan(90);
    expect(end).toBeLessThan(100);
  });

  it("says when the window's own waiting job should start, as the queue estimates it", async () => {
    const waiting = { id: "job-7", state: "queued", position: 1, source: "app", model: "tiny", prompt: "x", created: 1, finished: null, outputs: [], error: null, last_event: null, lane: null, worker: null, starts_in: 30, width: 512, height: 512 };
    await setup({ generate: () => "job-7", queue: () => [waiting] });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "x" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(app.current).toBe("job-7"));
    await emit("job-update", { job_id: "job-7", elapsed_seconds: 1, percent: null, eta_seconds: null, phase: "queued", position: 1 });
    await waitFor(() => expect(screen.getByTestId("job-phase").textContent).toBe("Waiting (1 ahead)"));
    await waitFor(() => expect(screen.getByTestId("job-starts").textContent).toMatch(/^starts in about (30|29|28) s$/));
  });

  it("follows a job live: phase, step i/N, it/s, ETA, the preview, then the finished image", async () => {
    await setup({ generate: () => "job-7" });
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
    expect(screen.getByTestId<HTMLImageElement>("preview-image").src).toContain("data:image/png;base64,iVBORw0KGgo=");
    await finishJob("job-7", 42, 9);
    expect(screen.getByTestId<HTMLImageElement>("result-image").src).toContain("image-9");
    expect(screen.getByTestId("job-phase").textContent).toBe("Done");
    expect(Number(screen.getByTestId("progress-bar").getAttribute("aria-valuenow"))).toBe(100);
    expect(progress.textContent).toContain("Seed 42");
  });

  it("counts the ETA down every second between step events", async () => {
    await setup({ generate: () => "job-8" });
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval", "Date"] });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "x" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(app.current).toBe("job-8"));
    await emit("job-update", { job_id: "job-8", elapsed_seconds: 1, percent: null, eta_seconds: 10, phase: "sampling", image: 1, images: 1, step: 1, steps: 10, seconds_per_step: 1 });
    await waitFor(() => expect(screen.getByTestId("job-eta").textContent).toBe("ETA 10 s"));
    vi.advanceTimersByTime(1000);
    await waitFor(() => expect(screen.getByTestId("job-eta").textContent).toBe("ETA 9 s"));
    vi.advanceTimersByTime(3000);
    await waitFor(() => expect(screen.getByTestId("job-eta").textContent).toBe("ETA 6 s"));
    // A new estimate near the countdown leaves it going (noise); one that parts from it replaces it.
    await emit("job-update", { job_id: "job-8", elapsed_seconds: 5, percent: null, eta_seconds: 8, phase: "sampling", image: 1, images: 1, step: 2, steps: 10, seconds_per_step: 1 });
    await waitFor(() => expect(screen.getByTestId("job-eta").textContent).toBe("ETA 6 s"));
    await emit("job-update", { job_id: "job-8", elapsed_seconds: 5, percent: null, eta_seconds: 15, phase: "sampling", image: 1, images: 1, step: 3, steps: 10, seconds_per_step: 2 });
    await waitFor(() => expect(screen.getByTestId("job-eta").textContent).toBe("ETA 15 s"));
    vi.advanceTimersByTime(20_000);
    await waitFor(() => expect(screen.getByTestId("job-eta").textContent).toBe("ETA 0 s"));
  });

  it("announces progress politely: each phase and each quarter of the sampling, not every step", async () => {
    await setup({ generate: () => "job-5" });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "x" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(app.current).toBe("job-5"));
    const live = screen.getByTestId("progress-announcement");
    expect(live.getAttribute("aria-live")).toBe("polite");
    const heard: string[] = [];
    const listen = () => {
      const text = live.textContent ?? "";
      if (text && heard.at(-1) !== text) heard.push(text);
    };
    const base = { job_id: "job-5", elapsed_seconds: 1, percent: null, eta_seconds: null };
    await emit("job-update", { ...base, phase: "encoding_prompt" });
    await waitFor(() => expect(live.textContent).toBe("Encoding the prompt"));
    listen();
    for (let step = 0; step <= 20; step++) {
      await emit("job-update", { ...base, phase: "sampling", image: 1, images: 1, step, steps: 20, seconds_per_step: 0.1 });
      await waitFor(() => expect(screen.getByTestId("job-step").textContent).toBe(`step ${step}/20`));
      listen();
    }
    await emit("job-update", { ...base, phase: "decoding" });
    await waitFor(() => expect(live.textContent).toBe("Decoding"));
    listen();
    expect(heard[0]).toBe("Encoding the prompt");
    expect(heard[1]).toMatch(/^Sampling: step 0 of 20/);
    expect(heard.length).toBeLessThanOrEqual(7);
    expect(heard.filter((h) => h.startsWith("Sampling")).length).toBeGreaterThanOrEqual(3);
    expect(heard.at(-1)).toBe("Decoding");
  });

  it("a render without Ollama says so once, calmly, in words: no raw OS error", async () => {
    await setup({ generate: () => "job-o" });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "x" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(app.current).toBe("job-o"));
    const refused = "cannot unload qwen3:4b: error sending request for url (http://127.0.0.1:11434/api/generate): Connection refused (os error 111)";
    for (let i = 0; i < 2; i++) {
      await emit("job-update", { job_id: "job-o", elapsed_seconds: 0, percent: null, eta_seconds: null, phase: "warning", message: refused });
    }
    const progress = screen.getByTestId("progress");
    await waitFor(() => expect(progress.textContent).toContain("Ollama isn't running"));
    expect(progress.textContent).not.toContain("os error");
    expect(within(progress).getAllByText(/Ollama isn't running/)).toHaveLength(1);
    expect(within(progress).getByText(/Ollama isn't running/).classList.contains("muted")).toBe(true);
    expect(app.toasts).toEqual([]);
  });

  it("Esc cancels the job this window started", async () => {
    app.current = null;
    app.jobs = {};
    app.own = {};
    app.view = "generate";
    const calls = mockCore({ cancel_job: () => true, generate: () => "job-9" });
    render(App);
    await fireEvent.input(await screen.findByTestId("prompt"), { target: { value: "x" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await emit("job-update", { job_id: "job-9", elapsed_seconds: 0, percent: 10, eta_seconds: 5, phase: "encoding_prompt" });
    await waitFor(() => expect(screen.getByTestId("job-phase").textContent).toBe("Encoding the prompt"));
    await fireEvent.keyDown(screen.getByTestId("prompt"), { key: "Escape" });
    await waitFor(() => expect(calls.find((c) => c.cmd === "cancel_job")?.args).toEqual({ id: "job-9" }));
    // The core ends it: the panel says so in a sentence, and the empty canvas says nothing was saved.
    await emit("job-update", { job_id: "job-9", elapsed_seconds: 1, percent: null, eta_seconds: null, phase: "cancelled", reason: "cancelled in the app" });
    await waitFor(() => expect(screen.getByTestId("job-reason").textContent).toBe("Cancelled in the app"));
    expect(screen.getByTestId("result-placeholder").textContent).toContain("nothing was saved");
  });

  it("Reuse seed on a finished result locks its seed in the form", async () => {
    const calls = await setup({ generate: () => "job-4" });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "x" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(app.current).toBe("job-4"));
    await finishJob("job-4", 4242, 11);
    await fireEvent.click(screen.getByTestId("reuse-seed"));
    expect(screen.getByTestId<HTMLInputElement>("seed").value).toBe("4242");
    expect(screen.getByTestId("seed-lock").getAttribute("aria-pressed")).toBe("true");
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(calls.filter((c) => c.cmd === "generate")).toHaveLength(2));
    expect((calls.filter((c) => c.cmd === "generate")[1].args.form as { seed: number }).seed).toBe(4242);
  });

  it("Use as init image on a finished result makes it the init image (read by the core), shown at the top of the form", async () => {
    const calls = await setup({ generate: () => "job-6", gallery_image_data: () => pngDataUrl(512, 512) });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "x" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(app.current).toBe("job-6"));
    await finishJob("job-6", 1, 12);
    await fireEvent.click(screen.getByTestId("use-as-init"));
    await waitFor(() => expect(form.init_image).toBe(pngDataUrl(512, 512)));
    expect(calls.find((c) => c.cmd === "gallery_image_data")?.args).toEqual({ id: 12 });
    expect(form.strength).toBe(0.75);
    expect(draft.init).toEqual({ name: "gallery image #12", size: { width: 512, height: 512 } });
    expect(screen.getByTestId("init-chip").textContent).toContain("img2img: gallery image #12 · strength 0.75");
  });

  it("Send to inpaint makes the result the init image and opens the mask editor over it", async () => {
    await setup({ generate: () => "job-7", gallery_image_data: () => pngDataUrl(64, 64) });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "x" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(app.current).toBe("job-7"));
    await finishJob("job-7", 1, 13);
    await fireEvent.click(screen.getByTestId("result-inpaint"));
    await waitFor(() => expect(form.init_image).toBe(pngDataUrl(64, 64)));
    // The image's size comes when it loads (none in the test browser: given here).
    const image = await screen.findByAltText("Init image gallery image #13");
    Object.defineProperty(image, "naturalWidth", { value: 64 });
    Object.defineProperty(image, "naturalHeight", { value: 64 });
    await fireEvent.load(image);
    expect(await screen.findByTestId("mask-editor")).toBeTruthy();
    expect(draft.inpaint).toBe(false);
  });

  it("Upscale ×2 on a result queues its enlargement with the upscaler the gallery would use", async () => {
    const calls = await setup({ generate: () => "job-9", upscalers: () => ["Lanczos", "Nearest", "4x-UltraSharp"], upscale_gallery_image: () => "up-9" });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "x" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(app.current).toBe("job-9"));
    await finishJob("job-9", 1, 14);
    await fireEvent.click(screen.getByTestId("result-upscale"));
    await waitFor(() => expect(calls.find((c) => c.cmd === "upscale_gallery_image")?.args).toEqual({ id: 14, scale: 2, upscaler: "4x-UltraSharp" }));
    // The enlargement takes the result's place, saying what it is, with the way back to the image it came from.
    await waitFor(() => expect(app.current).toBe("up-9"));
    await emit("job-update", { job_id: "up-9", elapsed_seconds: 0.1, percent: null, eta_seconds: null, phase: "queued", position: 0 });
    expect((await screen.findByTestId("job-origin")).textContent).toContain("Upscale ×2 of image #14 with 4x-UltraSharp");
    await fireEvent.click(screen.getByTestId("show-previous-result"));
    expect(app.current).toBe("job-9");
    expect(screen.queryByTestId("job-origin")).toBeNull();
    expect(screen.getByTestId("result-image").getAttribute("src")).toContain("14");
  });

  it("a result whose file is gone says so in words, and the form keeps no init image", async () => {
    await setup({
      generate: () => "job-6",
      gallery_image_data: () => {
        throw { field: null, message: "cannot read /o/1.png: No such file or directory (os error 2)" };
      },
    });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "x" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(app.current).toBe("job-6"));
    await finishJob("job-6", 1, 12);
    await fireEvent.click(screen.getByTestId("use-as-init"));
    await waitFor(() => expect(app.toasts.some((t) => t.kind === "error")).toBe(true));
    const shown = app.toasts.find((t) => t.kind === "error")!;
    expect(shown.text).not.toContain("os error");
    expect(shown.detail).toContain("No such file or directory");
    expect(form.init_image).toBeNull();
  });
});

describe("Generate: only this window's jobs", () => {
  const apiEvent = (phase: Record<string, unknown>) =>
    emit("job-update", { job_id: "api-1", elapsed_seconds: 1, percent: null, eta_seconds: 4, ...phase });

  it("a job sent by Open WebUI or the API does not replace Generate's result", async () => {
    await setup({ generate: () => "job-own" });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "my lighthouse" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(app.current).toBe("job-own"));
    await finishJob("job-own", 7, 30);

    await apiEvent({ phase: "sampling", image: 1, images: 1, step: 3, steps: 8, seconds_per_step: 0.5 });
    await apiEvent({ phase: "preview", image: 1, step: 3, width: 8, height: 8, png_base64: "QVBJ" });
    await apiEvent({ phase: "done", outputs: [{ path: "/o/api.png", seed: 99, width: 512, height: 512, gallery_id: 31 }] });
    await waitFor(() => expect(app.jobs["api-1"]?.state).toBe("done"));

    expect(screen.getByTestId<HTMLImageElement>("result-image").src).toContain("image-30");
    expect(screen.getAllByTestId("result-image")).toHaveLength(1);
    expect(screen.queryByTestId("preview-image")).toBeNull();
    expect(screen.getByTestId("job-phase").textContent).toBe("Done");
    expect(screen.getByTestId("progress").textContent).toContain("Seed 7");
  });

  it("with nothing of its own, Generate stays empty while another client's job renders", async () => {
    await setup();
    await apiEvent({ phase: "sampling", image: 1, images: 1, step: 1, steps: 8, seconds_per_step: 0.5 });
    await apiEvent({ phase: "preview", image: 1, step: 1, width: 8, height: 8, png_base64: "QVBJ" });
    await waitFor(() => expect(app.jobs["api-1"]?.state).toBe("running"));
    expect(screen.getByTestId("progress").textContent).toContain("Your image appears here");
    expect(screen.queryByTestId("job-phase")).toBeNull();
    expect(screen.queryByTestId("cancel")).toBeNull();
  });

  it("Esc in the prompt box does not cancel a job sent by the API", async () => {
    app.current = null;
    app.jobs = {};
    app.own = {};
    app.view = "generate";
    const calls = mockCore({ cancel_job: () => true });
    render(App);
    const prompt = await screen.findByTestId("prompt");
    await apiEvent({ phase: "sampling", image: 1, images: 1, step: 1, steps: 8, seconds_per_step: 0.5 });
    await waitFor(() => expect(app.jobs["api-1"]?.state).toBe("running"));
    prompt.focus();
    await fireEvent.keyDown(prompt, { key: "Escape" });
    await fireEvent.keyDown(window, { key: "Escape" });
    await new Promise((r) => setTimeout(r, 20));
    expect(calls.some((c) => c.cmd === "cancel_job")).toBe(false);
  });

  it("a second Generate while the first renders keeps showing the first, then follows the second when it starts", async () => {
    let next = 0;
    const ids = ["job-a", "job-b"];
    // The queue lists job-b once it was sent (before, nothing of the app's waits: no job is taken over at the start).
    await setup({ generate: () => ids[next++], queue: () => (next >= 2 ? [{ id: "job-b", state: "queued", position: 0, source: "app", model: "tiny", prompt: "x", created: 1, finished: null, outputs: [], error: null, last_event: null }] : []) });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "x" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(app.current).toBe("job-a"));
    await emit("job-update", { job_id: "job-a", elapsed_seconds: 1, percent: null, eta_seconds: 3, phase: "sampling", image: 1, images: 1, step: 1, steps: 4, seconds_per_step: 1 });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(next).toBe(2));
    await emit("job-update", { job_id: "job-b", elapsed_seconds: 0, percent: null, eta_seconds: null, phase: "queued", position: 0 });
    await waitFor(() => expect(screen.getByTestId("own-waiting").textContent).toBe("1 more of yours waiting"));
    expect(screen.getByTestId("job-step").textContent).toBe("step 1/4");

    await finishJob("job-a", 1, 40);
    await emit("job-update", { job_id: "job-b", elapsed_seconds: 2, percent: null, eta_seconds: 3, phase: "sampling", image: 1, images: 1, step: 2, steps: 4, seconds_per_step: 1 });
    await waitFor(() => expect(app.current).toBe("job-b"));
    expect(screen.getByTestId("job-step").textContent).toBe("step 2/4");
  });
});

describe("Generate: result actions", () => {
  async function finished(overrides = {}) {
    const calls = await setup({ generate: () => "job-r", ...overrides });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "a fox" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(app.current).toBe("job-r"));
    await finishJob("job-r", 555, 50);
    return calls;
  }

  it("Save as… asks where and copies the image there", async () => {
    const calls = await finished({ "plugin:dialog|save": () => "/home/me/fox.png", gallery_save_as: () => null });
    await fireEvent.click(screen.getByTestId("result-save-as"));
    await waitFor(() => expect(calls.find((c) => c.cmd === "gallery_save_as")?.args).toEqual({ id: 50, destination: "/home/me/fox.png" }));
    await waitFor(() => expect(app.toasts.map((t) => t.text)).toContain("Saved to /home/me/fox.png"));
  });

  it("Save as… cancelled in the dialog copies nothing", async () => {
    const calls = await finished({ "plugin:dialog|save": () => null, gallery_save_as: () => null });
    await fireEvent.click(screen.getByTestId("result-save-as"));
    await waitFor(() => expect(calls.some((c) => c.cmd === "plugin:dialog|save")).toBe(true));
    expect(calls.some((c) => c.cmd === "gallery_save_as")).toBe(false);
  });

  it("Favorite marks the result a favorite, and a second press takes it back", async () => {
    let fav = false;
    const calls = await finished({
      gallery_favorite: (a: Record<string, unknown>) => {
        fav = a.favorite as boolean;
        return { id: 50, favorite: fav };
      },
    });
    const button = screen.getByTestId("result-favorite");
    expect(button.getAttribute("aria-pressed")).toBe("false");
    await fireEvent.click(button);
    await waitFor(() => expect(button.getAttribute("aria-pressed")).toBe("true"));
    expect(button.textContent).toContain("★");
    await fireEvent.click(button);
    await waitFor(() => expect(button.getAttribute("aria-pressed")).toBe("false"));
    expect(calls.filter((c) => c.cmd === "gallery_favorite").map((c) => c.args)).toEqual([
      { id: 50, favorite: true },
      { id: 50, favorite: false },
    ]);
  });

  it("Remix puts the result's recorded parameters in the form with its seed locked", async () => {
    await finished({
      gallery_remix: () => ({ ...emptyRemix(), prompt: "a fox, remixed", seed: 555, steps: 9 }),
      gallery_entry: () => ({ id: 50, seed: 555, init_image: null, strength: null }),
    });
    await fireEvent.click(screen.getByTestId("result-remix"));
    await waitFor(() => expect(form.prompt).toBe("a fox, remixed"));
    expect(screen.getByTestId<HTMLInputElement>("seed").value).toBe("555");
    expect(screen.getByTestId("seed-lock").getAttribute("aria-pressed")).toBe("true");
    expect(form.steps).toBe(9);
  });
});

function emptyRemix() {
  return {
    model: "tiny",
    prompt: "",
    negative_prompt: "",
    width: null,
    height: null,
    steps: null,
    cfg_scale: null,
    sampler: null,
    scheduler: null,
    seed: null,
    count: 1,
    loras: [],
    init_image: null,
    mask: null,
    strength: null,
  };
}

describe("Generate: img2img in view", () => {
  it("a picked picture becomes the init image with strength 0.75, and the mask goes with it", async () => {
    const calls = await setup({ generate: () => "job-3" });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "repaint the sky" } });
    await fireEvent.click(screen.getByText(/Sampler, LoRAs, img2img/));
    await fireEvent.change(screen.getByTestId("init-image-input"), { target: { files: [pngFile("photo.png", 512, 512)] } });
    await waitFor(() => expect(form.init_image).toMatch(/^data:image\/png;base64,/));
    expect(form.strength).toBe(0.75);
    await fireEvent.change(screen.getByLabelText("Load mask"), { target: { files: [pngFile("mask.png", 512, 512)] } });
    await waitFor(() => expect(form.mask).toMatch(/^data:image\/png;base64,/));
    expect(screen.getByText(/Inpainting: white areas of the mask are repainted/)).toBeTruthy();
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(calls.find((c) => c.cmd === "generate")).toBeTruthy());
    const sent = sentForm(calls);
    expect(sent.init_image).toBe(form.init_image);
    expect(sent.mask).toBe(form.mask);
    expect(sent.strength).toBe(0.75);
  });

  it("shows the init image and mask at the top of the form when their section is collapsed, and ✕ clears them", async () => {
    const calls = await setup({ generate: () => "job-3" });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "x" } });
    expect(screen.queryByTestId("init-chip")).toBeNull();
    await fireEvent.click(screen.getByTestId("advanced-toggle"));
    await fireEvent.change(screen.getByTestId("init-image-input"), { target: { files: [pngFile("photo.png", 512, 512)] } });
    await waitFor(() => expect(form.init_image).not.toBeNull());
    await fireEvent.change(screen.getByLabelText("Load mask"), { target: { files: [pngFile("mask.png", 512, 512)] } });
    await waitFor(() => expect(form.mask).not.toBeNull());
    await fireEvent.click(screen.getByTestId("advanced-toggle"));
    expect(screen.queryByTestId("init-image-input")).toBeNull();
    expect(screen.queryByTestId("strength")).toBeNull();

    const chip = screen.getByTestId("init-chip");
    expect(chip.textContent).toContain("img2img: photo.png · strength 0.75 · mask");
    await fireEvent.click(within(chip).getByRole("button", { name: "Stop using the init image and mask" }));
    expect(screen.queryByTestId("init-chip")).toBeNull();
    expect([form.init_image, form.mask, form.strength]).toEqual([null, null, null]);
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(calls.find((c) => c.cmd === "generate")).toBeTruthy());
    expect(sentForm(calls)).toMatchObject({ init_image: null, mask: null, strength: null });
  });

  it("keeps showing the init image after switching panels and back", async () => {
    mockCore();
    render(App);
    await screen.findByTestId("generate");
    await fireEvent.click(screen.getByTestId("advanced-toggle"));
    await fireEvent.change(screen.getByTestId("init-image-input"), { target: { files: [pngFile("cat.png", 512, 512)] } });
    await waitFor(() => expect(form.init_image).not.toBeNull());
    await fireEvent.click(screen.getByTestId("nav-queue"));
    await fireEvent.click(screen.getByTestId("nav-generate"));
    expect((await screen.findByTestId("init-chip")).textContent).toContain("img2img: cat.png");
  });

  it("says when the init image's size differs from the form's, and 'Use image size' adopts it", async () => {
    await setup();
    await fireEvent.click(screen.getByTestId("advanced-toggle"));
    await fireEvent.change(screen.getByTestId("init-image-input"), { target: { files: [pngFile("wide.png", 768, 512)] } });
    const mismatch = await screen.findByTestId("init-size-mismatch");
    expect(mismatch.textContent).toContain("The image is 768×512; the form renders 512×512");
    await fireEvent.click(screen.getByTestId("use-image-size"));
    expect([form.width, form.height]).toEqual([768, 512]);
    expect(screen.queryByTestId("init-size-mismatch")).toBeNull();
    expect(screen.getByTestId<HTMLSelectElement>("size").value).toBe("768x512");
  });

  it("lets the user choose how an image of another shape is brought to size, and sends it", async () => {
    const calls = await setup({ generate: () => "job-r" });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "x" } });
    await fireEvent.click(screen.getByTestId("advanced-toggle"));
    await fireEvent.change(screen.getByTestId("init-image-input"), { target: { files: [pngFile("wide.png", 768, 512)] } });
    const mode = await screen.findByTestId<HTMLSelectElement>("resize-mode");
    expect(mode.value).toBe("stretch");
    expect([...mode.options].map((o) => o.textContent)).toEqual(["Stretch to fit", "Crop to fill", "Fit inside (fill the bands)"]);
    await fireEvent.change(mode, { target: { value: "crop" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(calls.find((c) => c.cmd === "generate")).toBeTruthy());
    expect(sentForm(calls).resize_mode).toBe("crop");
  });

  it("offers the nearest size the engine takes for an image of an odd size", async () => {
    await setup();
    await fireEvent.click(screen.getByTestId("advanced-toggle"));
    await fireEvent.change(screen.getByTestId("init-image-input"), { target: { files: [pngFile("photo.png", 1000, 750)] } });
    expect((await screen.findByTestId("use-image-size")).textContent).toContain("Use the nearest size the model takes (1024×768)");
  });

  it("a picture dropped anywhere on the form becomes the init image", async () => {
    await setup();
    const file = pngFile("dropped.png", 512, 512);
    await fireEvent.drop(screen.getByTestId("generate-form"), { dataTransfer: { files: [file], types: ["Files"], getData: () => "" } });
    await waitFor(() => expect(form.init_image).toMatch(/^data:image\/png;base64,/));
    expect(screen.getByTestId("init-chip").textContent).toContain("img2img: dropped.png");
  });

  it("an image file dropped from the file manager onto the img2img area becomes the init image", async () => {
    await setup();
    await fireEvent.click(screen.getByTestId("advanced-toggle"));
    const area = screen.getByTestId("init-image-input");
    const transfer = dataTransfer([pngFile("from-desktop.png", 640, 448)]);
    const over = new Event("dragover", { bubbles: true, cancelable: true });
    Object.assign(over, { dataTransfer: transfer });
    area.dispatchEvent(over);
    // The form takes the drop (the webview would otherwise open the file in place of the app).
    expect(over.defaultPrevented).toBe(true);
    await fireEvent.drop(area, { dataTransfer: transfer });
    await waitFor(() => expect(draft.init).toEqual({ name: "from-desktop.png", size: { width: 640, height: 448 } }));
    expect(form.init_image).toMatch(/^data:image\/png;base64,/);
    expect(screen.getByTestId("init-chip").textContent).toContain("img2img: from-desktop.png");
  });

  it("of several files dropped, the first picture is used; a drop with no picture is refused, naming the file", async () => {
    await setup();
    const notes = new File(["hello"], "notes.txt", { type: "text/plain" });
    await fireEvent.drop(screen.getByTestId("generate-form"), { dataTransfer: dataTransfer([notes]) });
    expect((await screen.findByTestId("drop-error")).textContent).toContain("notes.txt is not an image");
    expect(form.init_image).toBeNull();
    await fireEvent.drop(screen.getByTestId("generate-form"), { dataTransfer: dataTransfer([notes, pngFile("second.png", 64, 64)]) });
    await waitFor(() => expect(draft.init?.name).toBe("second.png"));
    expect(screen.queryByTestId("drop-error")).toBeNull();
  });

  it("a file dropped outside the form is refused there, so the window never opens it in place of the app", async () => {
    app.view = "generate";
    mockCore();
    render(App);
    const elsewhere = await screen.findByTestId("progress");
    const transfer = dataTransfer([pngFile("stray.png", 64, 64)]);
    for (const type of ["dragover", "drop"]) {
      const event = new Event(type, { bubbles: true, cancelable: true });
      Object.assign(event, { dataTransfer: transfer });
      elsewhere.dispatchEvent(event);
      expect(event.defaultPrevented).toBe(true);
    }
    expect(transfer.dropEffect).toBe("none");
    expect(form.init_image).toBeNull();
  });

  it("a finished result dragged onto the form becomes the init image", async () => {
    await setup({ generate: () => "job-d", gallery_image_data: () => GALLERY_PNG });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "x" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(app.current).toBe("job-d"));
    await finishJob("job-d", 5, 21);
    const transfer = dataTransfer();
    await fireEvent.dragStart(screen.getByTestId("result-image").closest("button")!, { dataTransfer: transfer });
    await fireEvent.drop(screen.getByTestId("generate-form"), { dataTransfer: transfer });
    await waitFor(() => expect(form.init_image).toBe(GALLERY_PNG));
    expect(screen.getByTestId("init-chip").textContent).toContain("gallery image #21");
  });

  it("refuses a file that is not an image, saying so", async () => {
    await setup();
    await fireEvent.click(screen.getByText(/Sampler, LoRAs, img2img/));
    const text = new File(["hello"], "notes.txt", { type: "text/plain" });
    await fireEvent.change(screen.getByTestId("init-image-input"), { target: { files: [text] } });
    expect((await screen.findByRole("alert")).textContent).toContain("notes.txt is not an image");
    expect(form.init_image).toBeNull();
    expect(draft.init).toBeNull();
  });
});

describe("Generate: hires fix", () => {
  async function enableHires() {
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "a castle" } });
    const toggle = screen.getByTestId("hires-toggle");
    expect(toggle.getAttribute("aria-expanded")).toBe("false");
    await fireEvent.click(toggle);
    await fireEvent.click(screen.getByLabelText("Hires fix: a second, larger pass"));
  }

  it("is off by default: the form sends hires_scale null and none of the other hires settings", async () => {
    const calls = await setup({ generate: () => "job-h0" });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "a castle" } });
    expect(screen.queryByTestId("hires-enable")).toBeNull();
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(calls.some((c) => c.cmd === "generate")).toBe(true));
    const sent = sentForm(calls);
    expect(sent.hires_scale).toBeNull();
    expect("hires_upscaler" in sent).toBe(false);
    expect("hires_steps" in sent).toBe(false);
    expect("hires_denoise" in sent).toBe(false);
  });

  it("enabled at the default 2×, sends hires_scale 2 and shows the doubled size", async () => {
    const calls = await setup({ generate: () => "job-h1" });
    await fireEvent.change(screen.getByTestId("size"), { target: { value: "custom" } });
    await fireEvent.input(screen.getByTestId("width"), { target: { value: "512" } });
    await fireEvent.input(screen.getByTestId("height"), { target: { value: "768" } });
    await enableHires();
    expect(screen.getByTestId<HTMLSelectElement>("hires-scale").value).toBe("2");
    expect(screen.getByTestId("hires-size").textContent).toBe("512×768 → 1024×1536");
    expect(screen.getByTestId("hires-summary").textContent).toContain("1024×1536");
    expect(screen.getByTestId<HTMLInputElement>("hires-denoise").value).toBe("0.7");
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(calls.some((c) => c.cmd === "generate")).toBe(true));
    const sent = sentForm(calls);
    expect(sent.hires_scale).toBe(2);
    expect("hires_upscaler" in sent).toBe(false);
    expect("hires_steps" in sent).toBe(false);
    expect("hires_denoise" in sent).toBe(false);
  });

  it("sends the chosen scale, upscaler, second-pass steps and denoising strength", async () => {
    const calls = await setup({ generate: () => "job-h2" });
    await enableHires();
    await fireEvent.change(screen.getByLabelText("Scale"), { target: { value: "1.5" } });
    expect(screen.getByTestId("hires-size").textContent).toMatch(/→ 768×768$/);
    const upscaler = screen.getByLabelText<HTMLSelectElement>("Upscaler");
    expect([...upscaler.options].map((o) => o.textContent)).toContain("Latent (nearest)");
    await fireEvent.change(upscaler, { target: { value: "lanczos" } });
    await fireEvent.input(screen.getByLabelText("Hires steps"), { target: { value: "12" } });
    await fireEvent.input(screen.getByLabelText("Denoising strength"), { target: { value: "0.45" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(calls.some((c) => c.cmd === "generate")).toBe(true));
    expect(sentForm(calls)).toMatchObject({ hires_scale: 1.5, hires_upscaler: "lanczos", hires_steps: 12, hires_denoise: 0.45 });
  });

  it("offers the ESRGAN models after the built-in upscalers and sends the chosen one as hires_model", async () => {
    const calls = await setup({ generate: () => "job-h4", upscalers: () => ["Lanczos", "Nearest", "4x-UltraSharp"] });
    await enableHires();
    const upscaler = screen.getByLabelText<HTMLSelectElement>("Upscaler");
    await waitFor(() => expect([...upscaler.options].map((o) => o.textContent)).toContain("4x-UltraSharp"));
    // Lanczos and Nearest are already offered as the built-in pixel upscalers: not twice.
    expect([...upscaler.options].filter((o) => o.textContent === "Lanczos")).toHaveLength(1);
    await fireEvent.change(upscaler, { target: { value: "model:4x-UltraSharp" } });
    expect(screen.getByTestId("hires-summary").getAttribute("title")).toContain("4x-UltraSharp");
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(calls.some((c) => c.cmd === "generate")).toBe(true));
    expect(sentForm(calls)).toMatchObject({ hires_scale: 2, hires_upscaler: "model", hires_model: "4x-UltraSharp" });

    // Back to a built-in upscaler: no model is sent.
    await fireEvent.change(upscaler, { target: { value: "lanczos" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(calls.filter((c) => c.cmd === "generate")).toHaveLength(2));
    const second = calls.filter((c) => c.cmd === "generate")[1].args.form as Record<string, unknown>;
    expect(second.hires_upscaler).toBe("lanczos");
    expect("hires_model" in second).toBe(false);
  });

  it("turned off again, sends hires_scale null", async () => {
    const calls = await setup({ generate: () => "job-h3" });
    await enableHires();
    await fireEvent.input(screen.getByLabelText("Hires steps"), { target: { value: "12" } });
    await fireEvent.click(screen.getByLabelText("Hires fix: a second, larger pass"));
    expect(screen.queryByTestId("hires-scale")).toBeNull();
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(calls.some((c) => c.cmd === "generate")).toBe(true));
    const sent = sentForm(calls);
    expect(sent.hires_scale).toBeNull();
    expect("hires_steps" in sent).toBe(false);
  });

  it("shows the core's hires.scale error at the hires scale, and opens the section to show it", async () => {
    const calls = await setup({
      generate: () => {
        throw { field: "hires.scale", message: "must be from 1 to 4, got 5" };
      },
    });
    await enableHires();
    await fireEvent.click(screen.getByTestId("hires-toggle"));
    expect(screen.queryByTestId("hires-scale")).toBeNull();
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(calls.some((c) => c.cmd === "generate")).toBe(true));
    const scale = await screen.findByTestId("hires-scale");
    await waitFor(() => expect(scale.getAttribute("aria-invalid")).toBe("true"));
    expect(describedBy(scale)).toContain("Hires scale must be from 1 to 4, got 5");
    expect(scale.classList.contains("invalid")).toBe(true);
    expect(scale.closest(".field")?.querySelector('[data-testid="form-error"]')?.textContent).toBe("Hires scale must be from 1 to 4, got 5");
    await fireEvent.change(scale, { target: { value: "3" } });
    expect(screen.queryByTestId("form-error")).toBeNull();
  });

  it("shows a refused second-pass steps count at the hires steps", async () => {
    const calls = await setup({
      generate: () => {
        throw { field: "hires.steps", message: "must be from 1 to 150, got 400" };
      },
    });
    await enableHires();
    await fireEvent.input(screen.getByLabelText("Hires steps"), { target: { value: "40" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(calls.some((c) => c.cmd === "generate")).toBe(true));
    const steps = screen.getByLabelText("Hires steps");
    await waitFor(() => expect(steps.getAttribute("aria-invalid")).toBe("true"));
    expect(describedBy(steps)).toBe("Hires steps must be from 1 to 150, got 400");
  });

  it("refuses second-pass steps out of 1 to 150 without calling the core", async () => {
    const calls = await setup();
    await enableHires();
    await fireEvent.input(screen.getByLabelText("Hires steps"), { target: { value: "0" } });
    await fireEvent.click(screen.getByTestId("generate"));
    const steps = screen.getByLabelText("Hires steps");
    await waitFor(() => expect(steps.getAttribute("aria-invalid")).toBe("true"));
    expect(describedBy(steps)).toMatch(/^Hires steps must be a whole number from 1 to 150/);
    expect(calls.some((c) => c.cmd === "generate")).toBe(false);
  });

  it("with an init image, the toggle is disabled and says why, and no hires pass is sent", async () => {
    const calls = await setup({ generate: () => "job-h4" });
    await enableHires();
    await fireEvent.click(screen.getByText(/Sampler, LoRAs, img2img/));
    await fireEvent.change(screen.getByTestId("init-image-input"), { target: { files: [pngFile("photo.png", 512, 512)] } });
    await waitFor(() => expect(form.init_image).not.toBeNull());
    const enable = screen.getByLabelText<HTMLInputElement>("Hires fix: a second, larger pass");
    expect(enable.disabled).toBe(true);
    expect(enable.checked).toBe(false);
    expect(describedBy(enable)).toMatch(/Text-to-image only/);
    expect(screen.queryByTestId("hires-scale")).toBeNull();
    expect(screen.queryByTestId("hires-summary")).toBeNull();
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(calls.some((c) => c.cmd === "generate")).toBe(true));
    expect(sentForm(calls).hires_scale).toBeNull();
  });
});

describe("Generate: the hires pass in the live progress", () => {
  /** Starts job `id` from the form, as a user would. */
  async function started(id: string) {
    await setup({ generate: () => id });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "a castle" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(app.current).toBe(id));
  }

  /** A sampling event of job `id`: `step` of `steps`, with the hires fields given (none when `hires` is omitted). */
  const samplingEvent = (id: string, step: number, steps: number, hires: { pass?: number; passes?: number } = {}) => ({
    job_id: id,
    elapsed_seconds: 1,
    percent: null,
    eta_seconds: null,
    phase: "sampling",
    image: 1,
    images: 1,
    step,
    steps,
    seconds_per_step: 0.5,
    ...hires,
  });

  /** All the progress card says, as one line. */
  const shown = () => (screen.getByTestId("progress").textContent ?? "").replace(/\s+/g, " ");

  it("a hires job's progress names the pass: pass 1 of 2 during the first, pass 2 of 2 during the second", async () => {
    await started("job-hp");
    // 3 steps in the first pass, 5 in the hires pass: `steps` counts both.
    await emit("job-update", samplingEvent("job-hp", 2, 8, { pass: 1, passes: 2 }));
    await waitFor(() => expect(screen.getByTestId("job-phase").textContent).toBe("Sampling — pass 1 of 2"));
    expect(screen.getByTestId("job-step").textContent).toBe("step 2/8");
    expect(shown()).not.toContain("pass 2 of 2");
    await emit("job-update", samplingEvent("job-hp", 5, 8, { pass: 2, passes: 2 }));
    await waitFor(() => expect(screen.getByTestId("job-phase").textContent).toBe("Sampling — pass 2 of 2"));
    expect(screen.getByTestId("job-step").textContent).toBe("step 5/8");
    expect(shown()).not.toContain("pass 1 of 2");
  });

  it("a job without hires says nothing about passes, whether the core sends pass 1 of 1 or no pass at all", async () => {
    await started("job-np");
    await emit("job-update", samplingEvent("job-np", 3, 8, { pass: 1, passes: 1 }));
    await waitFor(() => expect(screen.getByTestId("job-step").textContent).toBe("step 3/8"));
    expect(screen.getByTestId("job-phase").textContent).toBe("Sampling");
    expect(shown()).not.toMatch(/pass/i);
    expect(screen.getByTestId("progress-announcement").textContent).toMatch(/^Sampling: step \d of 8, \d+ percent$/);
    await emit("job-update", samplingEvent("job-np", 5, 8));
    await waitFor(() => expect(screen.getByTestId("job-step").textContent).toBe("step 5/8"));
    expect(screen.getByTestId("job-phase").textContent).toBe("Sampling");
    expect(shown()).not.toMatch(/pass/i);
    expect(screen.getByTestId("progress-announcement").textContent).not.toMatch(/pass/i);
  });

  it("the screen reader hears which pass runs with the step, and hears the hires pass begin even within a quarter", async () => {
    await started("job-hs");
    const live = screen.getByTestId("progress-announcement");
    // 20 + 20 steps: the hires pass begins at step 21 of 40, in the same quarter of the bar as the first pass's end.
    await emit("job-update", samplingEvent("job-hs", 20, 40, { pass: 1, passes: 2 }));
    await waitFor(() => expect(live.textContent).toMatch(/^Sampling — pass 1 of 2, step 20 of 40, \d+ percent$/));
    await emit("job-update", samplingEvent("job-hs", 21, 40, { pass: 2, passes: 2 }));
    await waitFor(() => expect(live.textContent).toMatch(/^Sampling — pass 2 of 2, step 21 of 40, \d+ percent$/));
  });

  it("a batch with a hires fix names the image and the pass", async () => {
    await started("job-hb");
    await emit("job-update", { ...samplingEvent("job-hb", 6, 8, { pass: 2, passes: 2 }), image: 2, images: 3 });
    await waitFor(() => expect(screen.getByTestId("job-phase").textContent).toBe("Sampling — image 2 of 3, pass 2 of 2"));
    expect(screen.getByTestId("job-step").textContent).toBe("step 6/8");
  });
});

describe("Enhance (the prompt assistant)", () => {
  it("shows the rewrites to edit, changes the prompt only when one is accepted, and undoes it", async () => {
    const calls = await setup({
      enhance_prompt: (args: Record<string, unknown>) => {
        const request = args.request as { prompt: string; count: number };
        return {
          model: "qwen2.5:7b",
          prompts: Array.from({ length: request.count }, (_, i) => `${request.prompt}, take ${i + 1}, golden hour`),
        };
      },
    });
    const prompt = screen.getByTestId("prompt") as HTMLTextAreaElement;
    await fireEvent.input(prompt, { target: { value: "a cat" } });
    await fireEvent.change(screen.getByTestId("enhance-count"), { target: { value: "2" } });
    await fireEvent.click(screen.getByTestId("enhance-button"));

    const takes = (await screen.findAllByTestId("enhance-take")) as HTMLTextAreaElement[];
    expect(takes.map((t) => t.value)).toEqual(["a cat, take 1, golden hour", "a cat, take 2, golden hour"]);
    const sent = calls.find((c) => c.cmd === "enhance_prompt")!.args.request as Record<string, unknown>;
    expect(sent).toMatchObject({ prompt: "a cat", model: "tiny", count: 2 });
    expect(screen.getByText(/Written by qwen2.5:7b/)).toBeTruthy();
    // Nothing changed yet.
    expect(form.prompt).toBe("a cat");

    await fireEvent.input(takes[1], { target: { value: "a ginger cat on a windowsill" } });
    await fireEvent.click(screen.getAllByTestId("enhance-accept")[1]);
    expect(form.prompt).toBe("a ginger cat on a windowsill");
    expect(screen.queryAllByTestId("enhance-take")).toHaveLength(0);

    await fireEvent.click(screen.getByTestId("enhance-undo"));
    expect(form.prompt).toBe("a cat");
  });

  it("says at the button why there is no rewrite when Ollama is not running, and leaves the prompt alone", async () => {
    await setup({
      enhance_prompt: () => {
        throw {
          field: "enhance_prompt",
          message:
            "enhance_prompt: Ollama is not reachable at http://127.0.0.1:11434 (Connection refused); start Ollama, or leave enhance_prompt off",
        };
      },
    });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "a dog" } });
    await fireEvent.click(screen.getByTestId("enhance-button"));
    const error = await waitFor(() => {
      const found = document.querySelector<HTMLElement>('[data-field="enhance_prompt"]');
      if (!found) throw new Error("no error yet");
      return found;
    });
    // In words: what Enhance needs and what to do; the core's own message is one click away, not the lead.
    const lead = error.firstChild!.textContent!;
    expect(lead).toContain("Ollama isn't running — start it (ollama serve) or set its URL in Settings.");
    expect(lead).not.toContain("enhance_prompt");
    expect(error.querySelector("details")!.textContent).toContain("Connection refused");
    expect(form.prompt).toBe("a dog");
  });

  it("is off with one calm line while the meter knows Ollama is not running", async () => {
    await setup({
      vram: () => vram({ ollama: { url: "http://127.0.0.1:11434", reachable: false, version: null, error: "Connection refused (os error 111)", models: [] } }),
    });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "a dog" } });
    await waitFor(() => expect((screen.getByTestId("enhance-button") as HTMLButtonElement).disabled).toBe(true));
    const line = screen.getByTestId("enhance-no-ollama");
    expect(line.textContent).toContain("Needs Ollama, which isn't running");
    // How to set it up: read by a screen reader and in the tooltip, without a paragraph on screen.
    expect(line.textContent).toContain("start it (ollama serve) or set its URL in Settings");
    expect(line.getAttribute("title")).toContain("Ollama isn't running — start it (ollama serve) or set its URL in Settings.");
    expect(line.textContent).not.toContain("os error");
    // Nothing to choose while it cannot run.
    expect(screen.queryByTestId("enhance-count")).toBeNull();
    expect(screen.getByTestId("enhance-button").getAttribute("aria-describedby")).toBe("enhance-no-ollama");
  });

  it("cannot be asked without a prompt", async () => {
    await setup();
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "   " } });
    expect((screen.getByTestId("enhance-button") as HTMLButtonElement).disabled).toBe(true);
  });
});

describe("the assistant's and the critic's events on a live job", () => {
  it("keeps a waiting job waiting while its prompt is rewritten, shows the rewrite, then each score", async () => {
    mockCore();
    app.jobs = {};
    const base = { job_id: "job-a", elapsed_seconds: 1, percent: null, eta_seconds: null };
    applyJobEvent({ ...base, phase: "queued", position: 2 });
    applyJobEvent({ ...base, phase: "enhancing_prompt", model: "qwen2.5:7b" });
    expect(app.jobs["job-a"].state).toBe("queued");
    expect(app.jobs["job-a"].status).toBe("qwen2.5:7b is rewriting the prompt");
    applyJobEvent({ ...base, phase: "prompt_enhanced", model: "qwen2.5:7b", original: "a cat", prompt: "a ginger cat, golden hour" });
    expect(app.jobs["job-a"].prompt).toBe("a ginger cat, golden hour");
    applyJobEvent({ ...base, phase: "critique", model: "llava:7b", attempt: 1, score: 3.2, reason: "one apple", retry: true });
    expect(app.jobs["job-a"].status).toBe("Scored 3/10 by llava:7b: rendering another take");
  });
});

describe("Generate's folding sections", () => {
  it("stay open while the user visits another panel and comes back", async () => {
    mockCore();
    const first = render(Generate);
    await fireEvent.click(screen.getByTestId("advanced-toggle"));
    expect(screen.getByTestId("advanced-toggle").getAttribute("aria-expanded")).toBe("true");
    first.unmount();
    render(Generate);
    expect(screen.getByTestId("advanced-toggle").getAttribute("aria-expanded")).toBe("true");
    expect(screen.getByText("Sampler")).toBeTruthy();
  });
});
