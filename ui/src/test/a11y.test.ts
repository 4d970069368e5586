// Automated accessibility checks: each panel, rendered with the usual fixtures, must pass axe-core's rules.
import { beforeEach, describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen, waitFor } from "@testing-library/svelte";
import axe from "axe-core";
import App from "../App.svelte";
import Generate from "../panels/Generate.svelte";
import Gallery from "../panels/Gallery.svelte";
import Detail from "../panels/Detail.svelte";
import Compare from "../panels/Compare.svelte";
import Queue from "../panels/Queue.svelte";
import Models from "../panels/Models.svelte";
import FirstRun from "../panels/FirstRun.svelte";
import SettingsPanel from "../panels/Settings.svelte";
import VramMeter from "../panels/VramMeter.svelte";
import Toasts from "../components/Toasts.svelte";
import { app, form, refreshModels, refreshQueue, start } from "../lib/state.svelte";
import type { Entry } from "../lib/bindings";
import { emit } from "@tauri-apps/api/event";
import { card, entry, info, jobInfo, mockCore, models, pngFile, vram, GIB } from "./fixtures";

/**
 * The rules that cannot work in jsdom, off; every other rule stays on. jsdom has no layout or rendering, so it cannot
 * compute the colours behind text: `color-contrast` would only ever come out "incomplete" or wrong. Contrast is left to
 * the themes' design and to checks in the real webview.
 */
const RULES_OFF = { "color-contrast": { enabled: false } };

/** Runs axe on `container` and fails with every violation in words: its rule, impact and the offending nodes. */
async function expectNoAxeViolations(container: Element) {
  const result = await axe.run(container, { rules: RULES_OFF, resultTypes: ["violations"] });
  const report = result.violations
    .map(
      (v) =>
        `${v.id} (${v.impact ?? "no impact"}): ${v.help}\n` +
        v.nodes.map((n) => `    ${n.html}\n      ${n.failureSummary?.replace(/\n/g, "\n      ") ?? ""}`).join("\n"),
    )
    .join("\n");
  expect(result.violations.length, `axe found ${result.violations.length} violation(s):\n${report}`).toBe(0);
}

function reset() {
  app.current = null;
  app.jobs = {};
  app.own = {};
  app.toasts = [];
  app.detail = null;
  app.boards = [];
}

/** A gallery of `entries`, one page, whose entries open in the detail view. */
function gallery(entries: Entry[]) {
  return {
    gallery_count: () => entries.length,
    gallery_page: () => ({ entries, next_cursor: null }),
    gallery_entry: (a: Record<string, unknown>) => entries.find((e) => e.id === a.id),
    gallery_boards: () => [{ name: "Keepers", count: 1 }],
  };
}

const images = () => [
  entry(1, { prompt: "a red fox", favorite: true, boards: ["Keepers"], tags: ["fox", "snow"] }),
  entry(2, { prompt: "a blue whale", seed: 7, loras: [{ name: "detail-tweaker", weight: 0.6 }] }),
  entry(3, { prompt: "a green frog", init_image: "/data/outputs/init/pond.png", strength: 0.5 }),
];

describe("accessibility (axe-core)", () => {
  // axe measures icon-font glyphs on a canvas; jsdom has none and says so on every run. It answers null either way.
  beforeEach(() => {
    vi.spyOn(HTMLCanvasElement.prototype, "getContext").mockReturnValue(null);
  });

  it("the check fails, naming the rule and the element, on a button with no accessible name", async () => {
    const container = document.createElement("div");
    container.innerHTML = '<button type="button"><svg aria-hidden="true"></svg></button>';
    document.body.append(container);
    await expect(expectNoAxeViolations(container)).rejects.toThrow(/button-name \(critical\)[\s\S]*<button type="button">/);
    container.remove();
  });

  it("the App shell has no axe violations", async () => {
    reset();
    app.view = "generate";
    mockCore();
    const { container } = render(App);
    await screen.findByTestId("prompt");
    await expectNoAxeViolations(container);
  });

  it("the Generate panel has no axe violations", async () => {
    reset();
    mockCore({ list_models: () => models([card(), card({ id: "broken", name: "broken", error: "no vae found" })]) });
    await start();
    const { container } = render(Generate);
    await screen.findByText("tiny");
    await expectNoAxeViolations(container);
  });

  it("the Generate panel's open model picker has no axe violations", async () => {
    reset();
    mockCore({ list_models: () => models([card(), card({ id: "broken", name: "broken", error: "no vae found" })]) });
    await start();
    const { container } = render(Generate);
    await fireEvent.click(await screen.findByTestId("model-picker"));
    await screen.findByTestId("model-option-tiny");
    await expectNoAxeViolations(container);
  });

  it("the App shell has no axe violations in any of its views", async () => {
    reset();
    app.view = "generate";
    mockCore(gallery(images()));
    const { container } = render(App);
    await screen.findByTestId("prompt");
    for (const view of ["gallery", "queue", "models", "settings", "generate"]) {
      await fireEvent.click(screen.getByTestId(`nav-${view}`));
      await waitFor(() => expect(app.view).toBe(view));
      await expectNoAxeViolations(container);
    }
  });

  it("the App shell with no usable model (the first-run panel) and a toast has no axe violations", async () => {
    reset();
    app.view = "generate";
    mockCore({ list_models: () => models([]) });
    render(App);
    await screen.findByTestId("first-run");
    app.toasts = [{ id: 1, text: "Saved", kind: "info" }];
    await screen.findByText("Saved");
    await expectNoAxeViolations(document.body);
  });

  it("the App shell with an image open in the gallery has no axe violations", async () => {
    reset();
    app.view = "gallery";
    mockCore(gallery(images()));
    render(App);
    await fireEvent.click(await screen.findByTestId("gallery-item-1"));
    await waitFor(() => expect(screen.getByTestId("detail").textContent).toContain("a red fox"));
    await expectNoAxeViolations(document.body);
  });

  it("the Generate panel with its advanced fields, a field error and a running job has no axe violations", async () => {
    reset();
    mockCore({ generate: () => "job-1", cancel_job: () => true });
    await start();
    const { container } = render(Generate);
    await screen.findByText("tiny");
    await fireEvent.click(screen.getByTestId("advanced-toggle"));
    await fireEvent.click(screen.getByTestId("generate"));
    await screen.findAllByTestId("form-error");
    await expectNoAxeViolations(container);
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "a fox" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await emit("job-update", {
      job_id: "job-1",
      elapsed_seconds: 1,
      percent: 40,
      eta_seconds: 3,
      phase: "sampling",
      image: 1,
      images: 1,
      step: 2,
      steps: 4,
      seconds_per_step: 0.5,
    });
    await waitFor(() => expect(screen.queryByTestId("job-phase")).toBeTruthy());
    await expectNoAxeViolations(container);
    await emit("job-update", {
      job_id: "job-1",
      elapsed_seconds: 3,
      percent: 100,
      eta_seconds: 0,
      phase: "done",
      outputs: [{ path: "/o/1.png", seed: 5, width: 512, height: 512, gallery_id: 1 }],
    });
    await screen.findByTestId("result-image");
    await expectNoAxeViolations(container);
  });

  it("the Generate panel with an init image, a mask and the memory options open has no axe violations", async () => {
    reset();
    mockCore();
    await start();
    const { container } = render(Generate);
    await screen.findByText("tiny");
    await fireEvent.click(screen.getByTestId("advanced-toggle"));
    await fireEvent.change(screen.getByTestId("init-image-input"), { target: { files: [pngFile("photo.png", 512, 512)] } });
    await waitFor(() => expect(form.init_image).not.toBeNull());
    await fireEvent.change(screen.getByLabelText("Load mask"), { target: { files: [pngFile("mask.png", 512, 512)] } });
    await waitFor(() => expect(form.mask).not.toBeNull());
    await fireEvent.click(screen.getByTestId("memory-toggle"));
    await expectNoAxeViolations(container);
    await fireEvent.click(screen.getByTestId("advanced-toggle"));
    await screen.findByTestId("init-chip");
    await expectNoAxeViolations(container);
  });

  it("the Generate panel with the hires fix on, a hires error, and disabled by an init image has no axe violations", async () => {
    reset();
    mockCore({
      generate: () => {
        throw { field: "hires.scale", message: "must be from 1 to 4, got 5" };
      },
    });
    await start();
    const { container } = render(Generate);
    await screen.findByText("tiny");
    await fireEvent.click(screen.getByTestId("hires-toggle"));
    await fireEvent.click(screen.getByLabelText("Hires fix: a second, larger pass"));
    await expectNoAxeViolations(container);
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "a fox" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(screen.getByTestId("hires-scale").getAttribute("aria-invalid")).toBe("true"));
    await expectNoAxeViolations(container);
    await fireEvent.click(screen.getByTestId("advanced-toggle"));
    await fireEvent.change(screen.getByTestId("init-image-input"), { target: { files: [pngFile("photo.png", 512, 512)] } });
    await waitFor(() => expect(form.init_image).not.toBeNull());
    await screen.findByTestId("hires-init-note");
    await expectNoAxeViolations(container);
  });

  it("the Generate panel with the ControlNet section open, a canny map, a threshold error and disabled on a non-SD 1.x model has no axe violations", async () => {
    reset();
    mockCore({
      list_models: () => models([card({ id: "sd15", name: "sd15", family: "sd1" }), card()]),
      controlnets: () => ["control_v11p_sd15_canny"],
      control_preview: (a) => {
        if (Number(a.low) > Number(a.high)) throw { field: "control_low", message: "low threshold (low, 250) must not be above high threshold (high, 200)" };
        return "data:image/png;base64,Q0FOTlk=";
      },
    });
    await start();
    const { container } = render(Generate);
    await waitFor(() => expect(screen.getByTestId("model-picker").dataset.model).toBe("sd15"));
    await fireEvent.click(screen.getByTestId("control-toggle"));
    await screen.findByRole("option", { name: "control_v11p_sd15_canny" });
    await fireEvent.change(screen.getByTestId("control-image-input"), { target: { files: [pngFile("edges.png", 512, 512)] } });
    await fireEvent.change(await screen.findByLabelText("Preprocessor"), { target: { value: "canny" } });
    await screen.findByTestId("control-map");
    await expectNoAxeViolations(container);
    await fireEvent.input(screen.getByLabelText("Low threshold"), { target: { value: "250" } });
    await screen.findByTestId("control-map-error");
    await expectNoAxeViolations(container);
    await fireEvent.click(screen.getByTestId("model-picker"));
    await fireEvent.click(screen.getByTestId("model-option-tiny"));
    await screen.findByTestId("control-fit-note");
    await expectNoAxeViolations(container);
    await fireEvent.click(screen.getByTestId("control-toggle"));
    await screen.findByTestId("control-summary");
    await expectNoAxeViolations(container);
  });

  it("the Gallery panel with a selection and its board menu open has no axe violations", async () => {
    reset();
    app.view = "gallery";
    mockCore(gallery(images()));
    const { container } = render(Gallery);
    await fireEvent.click(await screen.findByTestId("gallery-item-1"), { ctrlKey: true });
    await fireEvent.click(screen.getByTestId("gallery-item-2"), { ctrlKey: true });
    await expectNoAxeViolations(container);
    await fireEvent.click(screen.getByTestId("bulk-add-to-board"));
    await screen.findByTestId("bulk-add-to-board-list");
    await expectNoAxeViolations(container);
  });

  it("the Gallery panel has no axe violations", async () => {
    reset();
    app.view = "gallery";
    mockCore(gallery(images()));
    const { container } = render(Gallery);
    await screen.findByTestId("gallery-item-3");
    await expectNoAxeViolations(container);
  });

  it("the Detail view has no axe violations", async () => {
    reset();
    mockCore(gallery(images()));
    const { container } = render(Detail, { id: 1, onremoved: () => {}, onchanged: () => {}, onstep: () => {}, hasNext: true });
    await waitFor(() => expect(screen.getByTestId("detail").textContent).toContain("a red fox"));
    await expectNoAxeViolations(container);
  });

  it("the Compare view has no axe violations", async () => {
    reset();
    mockCore();
    const [a, b] = images();
    const { container } = render(Compare, { left: a, right: b, onclose: () => {} });
    await screen.findByTestId("compare");
    await expectNoAxeViolations(container);
    await fireEvent.click(screen.getByTestId("compare-mode-slider"));
    await expectNoAxeViolations(container);
  });

  it("the Queue panel has no axe violations", async () => {
    reset();
    mockCore({
      queue: () => [jobInfo("a", { state: "running", source: "openai" }), jobInfo("b", { position: 1 }), jobInfo("c", { position: 2, source: "a1111" })],
      queue_history: () => [
        jobInfo("d", { state: "done", finished: 1_760_000_100, outputs: [{ path: "/o/1.png", seed: 1, width: 64, height: 64, gallery_id: 1 }] }),
        jobInfo("e", { state: "failed", finished: 1_760_000_200, error: "out of memory" }),
      ],
      gallery_entry: () => entry(1),
    });
    await refreshQueue();
    const { container } = render(Queue);
    await screen.findByTestId("queue-running");
    await expectNoAxeViolations(container);
  });

  it("the paused Queue panel, with Run again and a cancel's Undo toast, has no axe violations", async () => {
    reset();
    app.paused = true;
    mockCore({
      queue: () => [jobInfo("b", { position: 0 })],
      cancel_job: () => true,
      queue_history: () => [jobInfo("e", { state: "failed", finished: 1_760_000_200, error: "out of memory" })],
    });
    await refreshQueue();
    const { container } = render(Queue);
    const toasts = render(Toasts).container;
    await screen.findByRole("button", { name: /^Run again/ });
    expect(screen.getByTestId("queue-paused-banner")).toBeTruthy();
    await fireEvent.click(screen.getByRole("button", { name: "Cancel job 1: prompt of b" }));
    await screen.findByRole("button", { name: "Undo" });
    await expectNoAxeViolations(container);
    await expectNoAxeViolations(toasts);
    app.paused = false;
  });

  it("the Models panel has no axe violations", async () => {
    reset();
    app.info = info;
    mockCore({
      list_models: () =>
        models([card(), card({ id: "flux1-schnell", name: "flux1 schnell", family: "flux", source: "assembled", error: "two t5xxl encoders fit" })]),
    });
    await refreshModels();
    const { container } = render(Models);
    await screen.findByText("flux1 schnell");
    await expectNoAxeViolations(container);
  });

  it("the Models panel's smaller-copy dialog has no axe violations", async () => {
    reset();
    app.info = info;
    app.conversions = {};
    mockCore({
      preview_conversion: (a) => ({
        model_id: a.model,
        part: null,
        input: "/models/tiny.gguf",
        output: "/data/models/tiny-q8_0.gguf",
        weight_type: a.weightType,
        current_bytes: 883e6,
        expected_bytes: 470e6,
        vram_now_bytes: 3 * GIB,
        vram_after_bytes: 2.6 * GIB,
        new_model_id: "tiny-q8_0",
      }),
    });
    await refreshModels();
    const { container } = render(Models);
    await fireEvent.click(await screen.findByTestId("convert-tiny"));
    await screen.findByTestId("convert-preview");
    await expectNoAxeViolations(container);
  });

  it("the first-run panel has no axe violations", async () => {
    reset();
    mockCore({ list_models: () => models([]) });
    await refreshModels();
    const { container } = render(FirstRun);
    await screen.findByText("SD-Turbo");
    await expectNoAxeViolations(container);
  });

  it("the Settings panel has no axe violations", async () => {
    reset();
    app.info = info;
    app.settings = { extra_models_dirs: ["/mnt/models"] };
    mockCore();
    const { container } = render(SettingsPanel);
    await screen.findByTestId("vram-policy");
    await expectNoAxeViolations(container);
  });

  it("the VRAM meter, closed and with its details open, has no axe violations", async () => {
    reset();
    mockCore();
    app.vram = vram();
    const { container } = render(VramMeter);
    await expectNoAxeViolations(container);
    await fireEvent.click(screen.getByTestId("vram-chip"));
    await screen.findByTestId("vram-details");
    await expectNoAxeViolations(container);
  });

  it("the toasts have no axe violations", async () => {
    reset();
    mockCore();
    app.toasts = [
      { id: 1, text: "Saved", kind: "info", action: { label: "Undo", run: () => {} } },
      { id: 2, text: "The model could not be loaded", kind: "error", detail: "error: out of memory (os error 12)" },
    ];
    const { container } = render(Toasts);
    await screen.findByText("The model could not be loaded");
    await expectNoAxeViolations(container);
    await fireEvent.click(screen.getByTestId("toasts-more"));
    await screen.findByText("Saved");
    await expectNoAxeViolations(container);
  });
});
