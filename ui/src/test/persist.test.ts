import { describe, expect, it } from "vitest";
import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/svelte";
import { flushSync } from "svelte";
import Generate from "../panels/Generate.svelte";
import { app, draft, emptyForm, form, formKey, sections, start } from "../lib/state.svelte";
import { card, info, mockCore, models } from "./fixtures";

/** The key of the fixtures' data folder. */
const FORM_KEY = formKey(info.data_dir);

const twoModels = () => models([card(), card({ id: "second", name: "second model" })]);

async function open(dataDir = info.data_dir) {
  app.toasts = [];
  mockCore({ list_models: twoModels, app_info: () => ({ ...info, data_dir: dataDir }) });
  const stop = await start();
  render(Generate);
  await screen.findByTestId("model-picker");
  return stop;
}

/** Closes the window: what lives in memory is gone, the storage stays. */
function restart(stop: () => void) {
  flushSync();
  stop();
  cleanup();
  Object.assign(form, emptyForm());
  Object.assign(draft, { seedLocked: false, init: null });
  Object.assign(sections, { advanced: false, memory: false, hires: false, control: false });
}

describe("Generate: the form survives a restart", () => {
  it("restores prompts, model, size, steps, CFG, sampler, scheduler, seed and its lock, count and LoRAs", async () => {
    const stop = await open();
    await fireEvent.click(screen.getByTestId("model-picker"));
    await fireEvent.click(screen.getByTestId("model-option-second"));
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "a red fox in snow" } });
    await fireEvent.input(screen.getByLabelText("Negative prompt"), { target: { value: "blurry" } });
    await fireEvent.change(screen.getByTestId("size"), { target: { value: "custom" } });
    await fireEvent.input(screen.getByTestId("width"), { target: { value: "640" } });
    await fireEvent.input(screen.getByTestId("height"), { target: { value: "384" } });
    await fireEvent.input(screen.getByTestId("steps"), { target: { value: "12" } });
    await fireEvent.input(screen.getByTestId("cfg-scale"), { target: { value: "6.5" } });
    await fireEvent.input(screen.getByTestId("count"), { target: { value: "3" } });
    await fireEvent.input(screen.getByTestId("seed"), { target: { value: "777" } });
    await fireEvent.click(screen.getByTestId("advanced-toggle"));
    await fireEvent.change(screen.getByLabelText("Sampler"), { target: { value: "dpm++2m" } });
    await fireEvent.change(screen.getByLabelText("Scheduler"), { target: { value: "karras" } });
    await fireEvent.change(screen.getByLabelText("LoRA"), { target: { value: "detail-tweaker" } });
    await fireEvent.click(screen.getByRole("button", { name: "Add" }));
    restart(stop);

    await open();
    expect(screen.getByTestId("model-picker").dataset.model).toBe("second");
    expect(screen.getByTestId<HTMLTextAreaElement>("prompt").value).toBe("a red fox in snow");
    expect(screen.getByLabelText<HTMLTextAreaElement>("Negative prompt").value).toBe("blurry");
    expect(screen.getByTestId<HTMLInputElement>("width").value).toBe("640");
    expect(screen.getByTestId<HTMLInputElement>("height").value).toBe("384");
    expect(screen.getByTestId<HTMLInputElement>("steps").value).toBe("12");
    expect(screen.getByTestId<HTMLInputElement>("cfg-scale").value).toBe("6.5");
    expect(screen.getByTestId<HTMLInputElement>("count").value).toBe("3");
    expect(screen.getByTestId<HTMLInputElement>("seed").value).toBe("777");
    expect(screen.getByTestId("seed-lock").getAttribute("aria-pressed")).toBe("true");
    await fireEvent.click(screen.getByTestId("advanced-toggle"));
    expect(screen.getByLabelText<HTMLSelectElement>("Sampler").value).toBe("dpm++2m");
    expect(screen.getByLabelText<HTMLSelectElement>("Scheduler").value).toBe("karras");
    expect(screen.getByLabelText("detail-tweaker weight")).toBeTruthy();
  });

  it("keeps one form per data folder: another profile starts from its own", async () => {
    const stop = await open("/work-profile");
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "a product shot" } });
    restart(stop);

    const home = await open("/home-profile");
    expect(screen.getByTestId<HTMLTextAreaElement>("prompt").value).toBe("");
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "a cat" } });
    restart(home);

    await open("/work-profile");
    expect(screen.getByTestId<HTMLTextAreaElement>("prompt").value).toBe("a product shot");
    expect(localStorage.getItem(formKey("/home-profile"))).toContain("a cat");
  });

  it("a form saved by a version without per-folder forms comes back in the first folder opened, once", async () => {
    localStorage.setItem("diffugen.generate-form.v1", JSON.stringify({ prompt: "from before the update", steps: 9 }));
    const stop = await open("/work-profile");
    expect(screen.getByTestId<HTMLTextAreaElement>("prompt").value).toBe("from before the update");
    expect(localStorage.getItem("diffugen.generate-form.v1")).toBeNull();
    restart(stop);
    await open("/home-profile");
    expect(screen.getByTestId<HTMLTextAreaElement>("prompt").value).toBe("");
  });

  it("does not keep the init image (it stays private and out of the storage)", async () => {
    const stop = await open();
    form.init_image = "data:image/png;base64,AAAA";
    form.strength = 0.5;
    flushSync();
    expect(localStorage.getItem(FORM_KEY)).not.toContain("base64");
    restart(stop);
    await open();
    expect(form.init_image).toBeNull();
    expect(screen.queryByTestId("init-chip")).toBeNull();
  });

  it("falls back to an installed model when the saved one is gone", async () => {
    localStorage.setItem(FORM_KEY, JSON.stringify({ model: "deleted-model", prompt: "kept", seed: 5, seed_locked: true }));
    await open();
    expect(screen.getByTestId("model-picker").dataset.model).toBe("tiny");
    expect(screen.getByTestId<HTMLTextAreaElement>("prompt").value).toBe("kept");
    expect(screen.getByTestId("seed-lock").getAttribute("aria-pressed")).toBe("true");
  });

  it("ignores a saved form it cannot read", async () => {
    localStorage.setItem(FORM_KEY, "{not json");
    await open();
    expect(screen.getByTestId<HTMLTextAreaElement>("prompt").value).toBe("");
    localStorage.setItem(FORM_KEY, JSON.stringify({ prompt: 42, steps: "many", loras: [{ name: 1 }] }));
    cleanup();
    await open();
    expect(form.prompt).toBe("");
    expect(form.steps).toBeNull();
    expect(form.loras).toEqual([]);
  });

  it("Reset puts every field back to its default, and Undo brings the form back", async () => {
    await open();
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "a lighthouse" } });
    await fireEvent.input(screen.getByTestId("steps"), { target: { value: "30" } });
    await fireEvent.input(screen.getByTestId("seed"), { target: { value: "99" } });
    await fireEvent.click(screen.getByTestId("reset-form"));
    expect(screen.getByTestId<HTMLTextAreaElement>("prompt").value).toBe("");
    expect(screen.getByTestId<HTMLInputElement>("steps").value).toBe("");
    expect(screen.getByTestId<HTMLInputElement>("seed").value).toBe("");
    expect(screen.getByTestId("seed-lock").getAttribute("aria-pressed")).toBe("false");
    expect(screen.getByTestId("model-picker").dataset.model).toBe("tiny");

    const undo = app.toasts.find((t) => t.action?.label === "Undo");
    undo!.action!.run();
    await waitFor(() => expect(screen.getByTestId<HTMLTextAreaElement>("prompt").value).toBe("a lighthouse"));
    expect(screen.getByTestId<HTMLInputElement>("seed").value).toBe("99");
    expect(screen.getByTestId("seed-lock").getAttribute("aria-pressed")).toBe("true");
  });
  it("keeps the hires fix like the other advanced fields, and Reset clears it", async () => {
    const stop = await open();
    await fireEvent.click(screen.getByTestId("hires-toggle"));
    await fireEvent.click(screen.getByLabelText("Hires fix: a second, larger pass"));
    await fireEvent.change(screen.getByLabelText("Scale"), { target: { value: "3" } });
    await fireEvent.change(screen.getByLabelText("Upscaler"), { target: { value: "latent_bicubic" } });
    await fireEvent.input(screen.getByLabelText("Hires steps"), { target: { value: "9" } });
    await fireEvent.input(screen.getByLabelText("Denoising strength"), { target: { value: "0.5" } });
    restart(stop);

    await open();
    expect(form).toMatchObject({ hires_scale: 3, hires_upscaler: "latent_bicubic", hires_steps: 9, hires_denoise: 0.5 });
    // Collapsed, the section still says a hires pass is on.
    expect(screen.getByTestId("hires-summary").textContent).toContain("3×");
    await fireEvent.click(screen.getByTestId("hires-toggle"));
    expect(screen.getByLabelText<HTMLSelectElement>("Upscaler").value).toBe("latent_bicubic");

    await fireEvent.click(screen.getByTestId("reset-form"));
    expect(form).toMatchObject({ hires_scale: null, hires_upscaler: null, hires_steps: null, hires_denoise: null });
    expect(screen.getByLabelText<HTMLInputElement>("Hires fix: a second, larger pass").checked).toBe(false);
    expect(screen.queryByTestId("hires-summary")).toBeNull();
    app.toasts.find((t) => t.action?.label === "Undo")!.action!.run();
    await waitFor(() => expect(form.hires_scale).toBe(3));
  });

  it("keeps an ESRGAN hires upscaler with its model, and drops one saved without its model", async () => {
    localStorage.setItem(FORM_KEY, JSON.stringify({ prompt: "p", hires_scale: 2, hires_upscaler: "model", hires_model: "4x-UltraSharp" }));
    const stop = await open();
    expect(form).toMatchObject({ hires_scale: 2, hires_upscaler: "model", hires_model: "4x-UltraSharp" });
    restart(stop);
    localStorage.setItem(FORM_KEY, JSON.stringify({ prompt: "p", hires_scale: 2, hires_upscaler: "model" }));
    await open();
    expect(form).toMatchObject({ hires_scale: 2, hires_upscaler: null, hires_model: null });
  });

  it("ignores a saved hires upscaler it does not know", async () => {
    localStorage.setItem(FORM_KEY, JSON.stringify({ prompt: "p", hires_scale: 2, hires_upscaler: "esrgan", hires_steps: "x" }));
    await open();
    expect(form.hires_scale).toBe(2);
    expect(form.hires_upscaler).toBeNull();
    expect(form.hires_steps).toBeNull();
  });
});
