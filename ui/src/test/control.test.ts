import { describe, expect, it } from "vitest";
import { fireEvent, render, screen, waitFor } from "@testing-library/svelte";
import { emit } from "@tauri-apps/api/event";
import Generate from "../panels/Generate.svelte";
import { app, emptyForm, form, loadForm, start } from "../lib/state.svelte";
import { card, CONTROL_MAP, dataTransfer, mockCore, models, pngFile, type Handler } from "./fixtures";

const CANNY = "control_v11p_sd15_canny";
const DEPTH = "control_v11f1p_sd15_depth";
const sd15 = () => card({ id: "sd15", name: "sd15", family: "sd1", default_steps: 20 });

async function setup(overrides: Record<string, Handler> = {}) {
  app.current = null;
  app.jobs = {};
  app.own = {};
  app.toasts = [];
  const calls = mockCore({
    list_models: () => models([sd15(), card()]),
    controlnets: () => [CANNY, DEPTH],
    generate: () => "job-c",
    ...overrides,
  });
  await start();
  render(Generate);
  await waitFor(() => expect(screen.getByTestId("model-picker").dataset.model).toBe("sd15"));
  await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "a house by a lake" } });
  return calls;
}

/** Opens the ControlNet section, once the ControlNets installed are listed in it. */
async function openControl(listed: string[] = [CANNY, DEPTH]) {
  const toggle = screen.getByTestId("control-toggle");
  if (toggle.getAttribute("aria-expanded") !== "true") await fireEvent.click(toggle);
  const select = screen.getByLabelText<HTMLSelectElement>("ControlNet model");
  await waitFor(() => expect([...select.options].map((o) => o.value)).toEqual(["", ...listed]));
  return select;
}

async function chooseImage(name = "edges.png", width = 512, height = 512) {
  await fireEvent.change(screen.getByTestId("control-image-input"), { target: { files: [pngFile(name, width, height)] } });
  await screen.findByTestId("control-image");
}

/** A ControlNet set up in full: a model, an image and (optionally) the preprocessor. */
async function setUpControl(module: "none" | "canny" = "none") {
  const select = await openControl();
  await fireEvent.change(select, { target: { value: CANNY } });
  await chooseImage();
  if (module === "canny") await fireEvent.change(screen.getByLabelText("Preprocessor"), { target: { value: "canny" } });
}

async function generated(calls: { cmd: string; args: Record<string, unknown> }[]) {
  await fireEvent.click(screen.getByTestId("generate"));
  await waitFor(() => expect(calls.some((c) => c.cmd === "generate")).toBe(true));
  return calls.find((c) => c.cmd === "generate")!.args.form as Record<string, unknown>;
}

const CONTROL_FIELDS = ["control_model", "control_image", "control_module", "control_strength", "control_low", "control_high"];

/** The messages an input points at with aria-describedby. */
function describedBy(input: HTMLElement): string {
  return (input.getAttribute("aria-describedby") ?? "")
    .split(" ")
    .map((id) => document.getElementById(id)?.textContent?.trim() ?? "")
    .join(" ");
}

const previews = (calls: { cmd: string; args: Record<string, unknown> }[]) => calls.filter((c) => c.cmd === "control_preview");

describe("Generate: ControlNet", () => {
  it("is collapsed and off at first, lists the installed ControlNets when opened, and sends no control field", async () => {
    const calls = await setup();
    const toggle = screen.getByTestId("control-toggle");
    expect(toggle.getAttribute("aria-expanded")).toBe("false");
    expect(screen.queryByTestId("control-summary")).toBeNull();
    const select = await openControl();
    expect(select.value).toBe("");
    expect([...select.options].map((o) => o.textContent)).toEqual(["None", CANNY, DEPTH]);
    const sent = await generated(calls);
    for (const field of CONTROL_FIELDS) expect(field in sent, field).toBe(false);
  });

  it("with no ControlNet installed, says to put a ControlNet file into the models folder's controlnet/ folder", async () => {
    await setup({ controlnets: () => [] });
    await openControl([]);
    const empty = screen.getByTestId("control-empty");
    expect(empty.textContent).toContain("No ControlNet installed");
    expect(empty.textContent).toContain("controlnet/");
    expect(empty.textContent).toContain("/data/models/controlnet/");
    expect(describedBy(screen.getByLabelText("ControlNet model"))).toContain("No ControlNet installed");
    await fireEvent.click(screen.getByTestId("control-get"));
    expect(app.view).toBe("models");
  });

  it("offers a ControlNet copied into the models folder without reopening the form", async () => {
    let installed: string[] = [];
    await setup({ controlnets: () => installed });
    await openControl([]);
    installed = [CANNY];
    await emit("models-update", { paths: [`/data/models/controlnet/${CANNY}.safetensors`] });
    await openControl([CANNY]);
    expect(screen.queryByTestId("control-empty")).toBeNull();
  });

  it("a chosen control image shows as a thumbnail with its name and size, with the image itself as the map for None; Remove image takes it away", async () => {
    const calls = await setup();
    await openControl();
    await chooseImage("pose-map.png", 512, 768);
    const image = screen.getByTestId<HTMLImageElement>("control-image");
    expect(image.src).toMatch(/^data:image\/png;base64,/);
    expect(screen.getByTestId("control-image-name").textContent).toContain("pose-map.png · 512×768");
    expect(screen.getByLabelText<HTMLSelectElement>("Preprocessor").selectedOptions[0].textContent).toBe("None");
    expect(screen.getByTestId("control-module-what").textContent).toBe("a map made elsewhere (depth, pose, lineart…), used as it is");
    expect(screen.getByTestId<HTMLImageElement>("control-map").src).toBe(image.src);
    expect(screen.queryByLabelText("Low threshold")).toBeNull();
    expect(previews(calls)).toEqual([]);
    // It is the control image, not the init image.
    expect(screen.queryByTestId("init-chip")).toBeNull();

    await fireEvent.click(screen.getByTestId("control-image-remove"));
    expect(screen.queryByTestId("control-image")).toBeNull();
    expect(screen.getByTestId("control-image-input")).toBeTruthy();
  });

  it("sends the model, image, preprocessor, strength and canny thresholds when a model and an image are set", async () => {
    const calls = await setup();
    await setUpControl("canny");
    await fireEvent.input(screen.getByLabelText("Control strength"), { target: { value: "1.5" } });
    expect(screen.getByTestId("control-strength").closest(".field")?.querySelector("output")?.textContent).toBe("1.50");
    await fireEvent.input(screen.getByLabelText("Low threshold"), { target: { value: "50" } });
    await fireEvent.input(screen.getByLabelText("High threshold"), { target: { value: "150" } });
    const sent = await generated(calls);
    expect(sent).toMatchObject({
      control_model: CANNY,
      control_module: "canny",
      control_strength: 1.5,
      control_low: 50,
      control_high: 150,
    });
    expect(sent.control_image).toMatch(/^data:image\/png;base64,/);
  });

  it("sends the defaults as unset: strength 1 and the thresholds 100/200 are shown, and only the model, image and preprocessor go", async () => {
    const calls = await setup();
    await setUpControl();
    expect(screen.getByLabelText<HTMLInputElement>("Control strength").value).toBe("1");
    const sent = await generated(calls);
    expect(sent).toMatchObject({ control_model: CANNY, control_module: "none" });
    for (const field of ["control_strength", "control_low", "control_high"]) expect(field in sent, field).toBe(false);
  });

  it("with one ControlNet installed, a control image picks it", async () => {
    await setup({ controlnets: () => [CANNY] });
    const select = await openControl([CANNY]);
    await chooseImage();
    expect(select.value).toBe(CANNY);
    expect(screen.getByTestId("control-summary").textContent).toContain(`ControlNet on · ${CANNY}`);
  });

  it("a control image without a ControlNet model is refused at the model select, without calling the core", async () => {
    const calls = await setup();
    await openControl();
    await chooseImage();
    await fireEvent.click(screen.getByTestId("control-toggle"));
    expect(screen.getByTestId("control-summary").textContent).toBe("ControlNet: choose a ControlNet model");
    await fireEvent.click(screen.getByTestId("generate"));
    const select = await screen.findByLabelText("ControlNet model");
    await waitFor(() => expect(select.getAttribute("aria-invalid")).toBe("true"));
    expect(describedBy(select)).toContain("Choose a ControlNet model for the control image");
    expect(calls.some((c) => c.cmd === "generate")).toBe(false);
    await fireEvent.change(select, { target: { value: DEPTH } });
    expect(select.getAttribute("aria-invalid")).toBeNull();
    expect(screen.queryByTestId("form-error")).toBeNull();
  });

  it("a ControlNet model without a control image is refused at the image slot, without calling the core", async () => {
    const calls = await setup();
    await fireEvent.change(await openControl(), { target: { value: CANNY } });
    await fireEvent.click(screen.getByTestId("generate"));
    const input = screen.getByTestId("control-image-input");
    await waitFor(() => expect(input.getAttribute("aria-invalid")).toBe("true"));
    expect(describedBy(input)).toContain("Add a control image");
    expect(calls.some((c) => c.cmd === "generate")).toBe(false);
  });

  it("a picture dropped on the control slot becomes the control image, not the init image", async () => {
    await setup();
    await openControl();
    const slot = screen.getByTestId("control-image-input");
    const transfer = dataTransfer([pngFile("dropped-edges.png", 640, 448)]);
    const over = new Event("dragover", { bubbles: true, cancelable: true });
    Object.assign(over, { dataTransfer: transfer });
    slot.dispatchEvent(over);
    expect(over.defaultPrevented).toBe(true);
    // The form's "use it as the init image" overlay is not shown over the control slot.
    expect(screen.queryByText("Drop the image to use it as the init image")).toBeNull();
    await fireEvent.drop(slot, { dataTransfer: transfer });
    expect((await screen.findByTestId("control-image-name")).textContent).toContain("dropped-edges.png · 640×448");
    expect(screen.queryByTestId("init-chip")).toBeNull();
    expect(form.init_image).toBeNull();
  });

  it("a picture pasted into the section becomes the control image", async () => {
    await setup();
    await openControl();
    const file = pngFile("pasted.png", 256, 256);
    await fireEvent.paste(screen.getByTestId("control-image-input"), { clipboardData: { files: [file], items: [], types: ["Files"] } });
    expect((await screen.findByTestId("control-image-name")).textContent).toContain("pasted.png · 256×256");
    expect(screen.queryByTestId("init-chip")).toBeNull();
  });

  it("refuses a file that is not a picture, naming it", async () => {
    await setup();
    await openControl();
    const text = new File(["hello"], "notes.txt", { type: "text/plain" });
    await fireEvent.change(screen.getByTestId("control-image-input"), { target: { files: [text] } });
    expect((await screen.findByTestId("control-read-error")).textContent).toContain("notes.txt is not an image");
    expect(screen.queryByTestId("control-image")).toBeNull();
  });

  it("canny shows the core's edge map beside the image, drawn again once the thresholds rest for ~200 ms", async () => {
    const calls = await setup({ control_preview: (a) => `data:image/png;base64,${btoa(`map ${a.low}/${a.high}`)}` });
    await setUpControl("canny");
    const map = await screen.findByTestId<HTMLImageElement>("control-map");
    expect(map.src).toBe(`data:image/png;base64,${btoa("map 100/200")}`);
    expect(previews(calls)).toHaveLength(1);
    expect(previews(calls)[0].args).toMatchObject({ module: "canny", low: 100, high: 200 });
    expect(previews(calls)[0].args.image).toBe(screen.getByTestId<HTMLImageElement>("control-image").src);

    const low = screen.getByLabelText("Low threshold");
    for (const value of ["90", "75", "60"]) await fireEvent.input(low, { target: { value } });
    expect(low.closest(".row")?.querySelector("output")?.textContent).toBe("60");
    // Not one call per move: the sliders settle first.
    expect(previews(calls)).toHaveLength(1);
    await waitFor(() => expect(screen.getByTestId<HTMLImageElement>("control-map").src).toBe(`data:image/png;base64,${btoa("map 60/200")}`));
    expect(previews(calls)).toHaveLength(2);
    expect(previews(calls)[1].args).toMatchObject({ low: 60, high: 200 });

    // Back to None: the image itself is the map, and the core is not asked.
    await fireEvent.change(screen.getByLabelText("Preprocessor"), { target: { value: "none" } });
    expect(screen.getByTestId<HTMLImageElement>("control-map").src).toBe(screen.getByTestId<HTMLImageElement>("control-image").src);
    await new Promise((r) => setTimeout(r, 250));
    expect(previews(calls)).toHaveLength(2);
  });

  it("a low threshold above the high one shows the map's error at the threshold sliders, and Generate is refused there", async () => {
    const calls = await setup({
      control_preview: (a) => {
        if (Number(a.low) > Number(a.high)) {
          throw { field: "control_low", message: `low threshold (low, ${a.low}) must not be above high threshold (high, ${a.high})` };
        }
        return CONTROL_MAP;
      },
    });
    await setUpControl("canny");
    await screen.findByTestId("control-map");
    const low = screen.getByLabelText("Low threshold");
    await fireEvent.input(low, { target: { value: "150" } });
    await fireEvent.input(screen.getByLabelText("High threshold"), { target: { value: "100" } });
    await waitFor(() => expect(low.getAttribute("aria-invalid")).toBe("true"));
    expect(describedBy(low)).toContain("Low threshold (low, 150) must not be above high threshold (high, 100)");
    expect(screen.getByTestId("control-map-error").closest(".thresholds")).toBe(low.closest(".thresholds"));
    expect(screen.queryByTestId("control-map")).toBeNull();

    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(describedBy(low)).toContain("Low threshold must not be above the high threshold"));
    expect(calls.some((c) => c.cmd === "generate")).toBe(false);

    await fireEvent.input(low, { target: { value: "50" } });
    await waitFor(() => expect(low.getAttribute("aria-invalid")).toBeNull());
    expect(await screen.findByTestId("control-map")).toBeTruthy();
  });

  it("on a model that is not SD 1.x, says ControlNet works with SD 1.x models, disables its inputs and sends no control", async () => {
    const calls = await setup();
    await setUpControl("canny");
    await fireEvent.click(screen.getByTestId("model-picker"));
    await fireEvent.click(screen.getByTestId("model-option-tiny"));
    const note = screen.getByTestId("control-fit-note");
    expect(note.textContent).toContain("ControlNet works with SD 1.x models; tiny is sdxs");
    for (const name of ["ControlNet model", "Preprocessor", "Control strength", "Low threshold", "High threshold"]) {
      const input = screen.getByLabelText<HTMLInputElement | HTMLSelectElement>(name);
      expect(input.disabled, name).toBe(true);
      expect(describedBy(input), name).toContain("ControlNet works with SD 1.x models");
    }
    expect(screen.getByTestId<HTMLInputElement>("control-image-replace").disabled).toBe(true);
    // What is set can still be taken away.
    expect(screen.getByTestId<HTMLButtonElement>("control-image-remove").disabled).toBe(false);
    await fireEvent.click(screen.getByTestId("control-toggle"));
    expect(screen.getByTestId("control-summary").textContent).toBe("ControlNet set, not used: SD 1.x models only");
    const sent = await generated(calls);
    expect(sent.model).toBe("tiny");
    for (const field of CONTROL_FIELDS) expect(field in sent, field).toBe(false);
  });

  it("collapsed while active, shows 'ControlNet on' with the model, preprocessor and strength, and ✕ removes the ControlNet", async () => {
    const calls = await setup();
    await setUpControl("canny");
    await fireEvent.click(screen.getByTestId("control-toggle"));
    expect(screen.getByTestId("control-toggle").getAttribute("aria-expanded")).toBe("false");
    expect(screen.queryByLabelText("ControlNet model")).toBeNull();
    const summary = screen.getByTestId("control-summary");
    expect(summary.textContent).toBe(`ControlNet on · ${CANNY} · Canny · 1.00`);
    expect(summary.classList.contains("section-summary")).toBe(true);

    await fireEvent.click(screen.getByRole("button", { name: "Remove the ControlNet" }));
    expect(screen.queryByTestId("control-summary")).toBeNull();
    const sent = await generated(calls);
    for (const field of CONTROL_FIELDS) expect(field in sent, field).toBe(false);
  });

  it.each([
    ["control.model", "ControlNet works with SD 1.x models in this stable-diffusion.cpp; the model is sdxs", "control-model", "ControlNet works with SD 1.x models in this stable-diffusion.cpp; the model is sdxs"],
    ["control_model", "choose a ControlNet model for the control image", "control-model", "ControlNet model: choose a ControlNet model for the control image"],
    ["control.image", "not a usable PNG, JPEG or WebP image: truncated", "control-image-replace", "Control image: not a usable PNG, JPEG or WebP image: truncated"],
    ["control_image", "add a control image (or remove the ControlNet)", "control-image-replace", "Control image: add a control image (or remove the ControlNet)"],
    ["control.strength", "must be 0 to 2, got 3", "control-strength", "Control strength must be 0 to 2, got 3"],
    ["control.low_threshold", "low_threshold must be 1 to 255, got 0", "control-low", "Low threshold must be 1 to 255, got 0"],
    ["control.high_threshold", "high_threshold must be 1 to 255, got 300", "control-high", "High threshold must be 1 to 255, got 300"],
  ])("shows the core's %s error at its control, marked aria-invalid, opening the collapsed section", async (field, raw, testid, shown) => {
    const calls = await setup({
      generate: () => {
        throw { field, message: raw };
      },
    });
    await setUpControl("canny");
    await fireEvent.click(screen.getByTestId("control-toggle"));
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(calls.some((c) => c.cmd === "generate")).toBe(true));
    const input = await screen.findByTestId(testid);
    await waitFor(() => expect(input.getAttribute("aria-invalid")).toBe("true"));
    expect(screen.getByTestId("control-toggle").getAttribute("aria-expanded")).toBe("true");
    expect(describedBy(input)).toContain(shown);
    const errors = screen.getAllByTestId("form-error");
    expect(errors).toHaveLength(1);
    expect(errors[0].textContent).toBe(shown);
    expect(errors[0].dataset.field).toBe(field);
    // No other control is marked.
    const section = screen.getByRole("group", { name: "ControlNet" });
    const marked = [...section.querySelectorAll<HTMLElement>('[aria-invalid="true"]')].map((el) => el.dataset.testid);
    expect(marked).toEqual([testid]);
  });

  it("a control error from the core's hires check shows in the ControlNet section", async () => {
    await setup({
      generate: () => {
        throw { field: "control", message: "a ControlNet with a hires pass is not available yet; leave out one of them" };
      },
    });
    await setUpControl();
    await fireEvent.click(screen.getByTestId("control-toggle"));
    await fireEvent.click(screen.getByTestId("generate"));
    const error = await screen.findByTestId("form-error");
    expect(error.textContent).toBe("ControlNet: a ControlNet with a hires pass is not available yet; leave out one of them");
    expect(error.closest("#control-options")).toBeTruthy();
  });

  it("with the Hires fix on, says the two don't work together yet and refuses without calling the core", async () => {
    const calls = await setup();
    await fireEvent.click(screen.getByTestId("hires-toggle"));
    await fireEvent.click(screen.getByLabelText("Hires fix: a second, larger pass"));
    await setUpControl();
    expect(screen.getByTestId("control-hires-note").textContent).toContain("not available yet");
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(screen.getByTestId("form-error").textContent).toContain("A ControlNet with the Hires fix is not available yet"));
    expect(calls.some((c) => c.cmd === "generate")).toBe(false);
  });

  it("Reset clears the ControlNet section, and Undo brings it back", async () => {
    const calls = await setup();
    await setUpControl("canny");
    await fireEvent.click(screen.getByTestId("reset-form"));
    expect(screen.queryByTestId("control-summary")).toBeNull();
    expect(screen.queryByTestId("control-image")).toBeNull();
    expect(screen.getByLabelText<HTMLSelectElement>("ControlNet model").value).toBe("");
    expect(screen.getByLabelText<HTMLSelectElement>("Preprocessor").value).toBe("none");

    app.toasts.find((t) => t.action?.label === "Undo")!.action!.run();
    expect((await screen.findByTestId("control-summary")).textContent).toContain(`ControlNet on · ${CANNY} · Canny`);
    expect(screen.getByTestId("control-image-name").textContent).toContain("edges.png");

    await fireEvent.click(screen.getByTestId("reset-form"));
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "after the reset" } });
    const sent = await generated(calls);
    for (const field of CONTROL_FIELDS) expect(field in sent, field).toBe(false);
  });

  it("a remixed ControlNet render brings its control map back: the section shows it on, Generate sends it as it was", async () => {
    const calls = await setup();
    loadForm({
      ...emptyForm(),
      model: "sd15",
      prompt: "remixed",
      seed: 5,
      control_model: CANNY,
      control_image: CONTROL_MAP,
      control_module: "none",
      control_strength: 0.8,
    });
    expect((await screen.findByTestId("control-summary")).textContent).toContain(`ControlNet on · ${CANNY}`);
    const sent = await generated(calls);
    expect(sent).toMatchObject({ control_model: CANNY, control_image: CONTROL_MAP, control_module: "none", control_strength: 0.8, seed: 5 });
  });

  it("a remixed form has no ControlNet", async () => {
    await setup();
    await setUpControl("canny");
    loadForm({ ...emptyForm(), model: "sd15", prompt: "remixed", seed: 5 });
    await waitFor(() => expect(screen.queryByTestId("control-summary")).toBeNull());
    expect(screen.queryByTestId("control-image")).toBeNull();
    expect(screen.getByLabelText<HTMLSelectElement>("ControlNet model").value).toBe("");
  });
});
