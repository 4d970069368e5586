// Refining: img2img of a gallery image itself at a low strength, queued from the detail view or from Generate's
// finished result, the strength kept for the session; the job is followed in Generate like any of the app's own.
import { describe, expect, it } from "vitest";
import { fireEvent, render, screen, waitFor, within } from "@testing-library/svelte";
import { emit } from "@tauri-apps/api/event";
import axe from "axe-core";
import App from "../App.svelte";
import Gallery from "../panels/Gallery.svelte";
import Generate from "../panels/Generate.svelte";
import Detail from "../panels/Detail.svelte";
import Toasts from "../components/Toasts.svelte";
import { app, start, trackOwnJob } from "../lib/state.svelte";
import { refineStrength } from "../lib/refine.svelte";
import type { Entry, JobEvent, JobInfo } from "../lib/bindings";
import { entry, jobInfo, mockCore } from "./fixtures";
import type { Handler } from "./fixtures";

function reset() {
  app.current = null;
  app.jobs = {};
  app.own = {};
  app.toasts = [];
  app.detail = null;
  app.queue = [];
  app.history = [];
  app.view = "generate";
}

/** A gallery of `entries`, one page, whose entries open in the detail view. */
function gallery(entries: Entry[], extra: Record<string, Handler> = {}) {
  return {
    gallery_count: () => entries.length,
    gallery_page: () => ({ entries, next_cursor: null }),
    gallery_entry: (a: Record<string, unknown>) => entries.find((e) => e.id === a.id),
    ...extra,
  };
}

/** Opens image `id` of the rendered gallery in the detail view and waits for its record. */
async function openDetail(id: number) {
  await fireEvent.click(await screen.findByTestId(`gallery-item-${id}`));
  await waitFor(() => expect(screen.getByTestId("detail-prompt")).toBeTruthy());
  return screen.getByTestId("detail");
}

const refineButton = () => screen.getByRole<HTMLButtonElement>("button", { name: "Refine" });
const strengthSlider = () => screen.getByRole<HTMLInputElement>("slider", { name: "Refine strength" });

async function setStrength(value: string) {
  await fireEvent.input(strengthSlider(), { target: { value } });
}

/** The calm toast that says `text` (Generate has other live regions of its own). */
async function toastSaying(text: string) {
  await waitFor(() => expect(screen.getAllByRole("status").some((s) => s.textContent?.includes(text))).toBe(true));
}

const event = (job: string, stage: Record<string, unknown>, eta: number | null = null) =>
  emit("job-update", { job_id: job, elapsed_seconds: 1, percent: null, eta_seconds: eta, ...stage });

const sampling = (step: number, steps: number) => ({ phase: "sampling", image: 1, images: 1, step, steps, seconds_per_step: 0.5 });

/** A promise and the functions that settle it: a core that answers when the test says so. */
function later<T>() {
  let settle!: (value: T) => void;
  let refuse!: (error: unknown) => void;
  const promise = new Promise<T>((resolve, reject) => {
    settle = resolve;
    refuse = reject;
  });
  return { promise, settle, refuse };
}

describe("Refine from the detail view", () => {
  it("offers Refine with a strength slider from 0.05 to 1 in steps of 0.05, at 0.35 by default", async () => {
    reset();
    mockCore(gallery([entry(5)]));
    render(Gallery);
    const detail = await openDetail(5);
    const group = within(detail).getByRole("group", { name: "Refine" });
    expect(within(group).getByRole<HTMLButtonElement>("button", { name: "Refine" }).disabled).toBe(false);
    const slider = within(group).getByRole<HTMLInputElement>("slider", { name: "Refine strength" });
    expect(slider.min).toBe("0.05");
    expect(slider.max).toBe("1");
    expect(slider.step).toBe("0.05");
    expect(slider.value).toBe("0.35");
    expect(within(group).getByTestId("detail-refine-value").textContent).toBe("0.35");
  });

  it("Refine queues the refine of this image at 0.35 and says calmly that it is in the queue", async () => {
    reset();
    const calls = mockCore(gallery([entry(5)], { gallery_refine: () => "ref-1" }));
    render(Gallery);
    render(Toasts);
    await openDetail(5);
    await fireEvent.click(refineButton());
    await waitFor(() => expect(calls.find((c) => c.cmd === "gallery_refine")?.args).toEqual({ id: 5, strength: 0.35 }));
    const told = await screen.findByRole("status");
    expect(told.textContent).toContain("Refining at strength 0.35 — it's in the queue");
    expect(screen.queryByRole("alert")).toBeNull();
    // The job is this window's own: Generate follows it like a job it sent.
    expect(app.own["ref-1"]).toBe(true);
    expect(app.current).toBe("ref-1");
  });

  it("the strength picked is used, shown, and kept for the session: the next image is refined at it too", async () => {
    reset();
    const calls = mockCore(gallery([entry(5), entry(6)], { gallery_refine: () => "ref-2" }));
    render(Gallery);
    render(Toasts);
    await openDetail(5);
    await setStrength("0.6");
    expect(screen.getByTestId("detail-refine-value").textContent).toBe("0.60");
    await fireEvent.click(screen.getByRole("button", { name: "Close" }));
    await waitFor(() => expect(screen.queryByTestId("detail")).toBeNull());

    await openDetail(6);
    expect(strengthSlider().value).toBe("0.6");
    expect(screen.getByTestId("detail-refine-value").textContent).toBe("0.60");
    await fireEvent.click(refineButton());
    await waitFor(() => expect(calls.find((c) => c.cmd === "gallery_refine")?.args).toEqual({ id: 6, strength: 0.6 }));
    expect((await screen.findByRole("status")).textContent).toContain("Refining at strength 0.60 — it's in the queue");
  });

  it("one click queues one job: Refine waits while the core answers, then is ready again", async () => {
    reset();
    const answer = later<string>();
    const calls = mockCore(gallery([entry(5)], { gallery_refine: () => answer.promise }));
    render(Gallery);
    await openDetail(5);
    await fireEvent.click(refineButton());
    await waitFor(() => expect(refineButton().disabled).toBe(true));
    await fireEvent.click(refineButton());
    expect(calls.filter((c) => c.cmd === "gallery_refine")).toHaveLength(1);
    answer.settle("ref-3");
    await waitFor(() => expect(refineButton().disabled).toBe(false));
    expect(calls.filter((c) => c.cmd === "gallery_refine")).toHaveLength(1);
  });

  it("a refusal shows the core's message in an error toast, and nothing is followed", async () => {
    reset();
    mockCore(
      gallery([entry(5)], {
        gallery_refine: () => {
          throw { field: "model", message: "model 'tiny' is not installed any more" };
        },
      }),
    );
    render(Gallery);
    render(Toasts);
    await openDetail(5);
    await fireEvent.click(refineButton());
    const alert = await screen.findByRole("alert");
    expect(alert.textContent).toContain("Can't refine: model 'tiny' is not installed any more");
    expect(screen.queryByText(/it's in the queue/)).toBeNull();
    expect(app.current).toBeNull();
    // The button is ready for another try.
    await waitFor(() => expect(refineButton().disabled).toBe(false));
  });

  it("an image without generation parameters (no model) cannot be refined, and says why", async () => {
    reset();
    const calls = mockCore(gallery([entry(7, { model: null, family: null, seed: null, steps: null, source: "unknown" })]));
    render(Gallery);
    await openDetail(7);
    const button = refineButton();
    expect(button.disabled).toBe(true);
    const reason = screen.getByTestId("detail-refine-reason");
    expect(reason.textContent).toBe("Refine needs the image's generation parameters");
    expect(button.getAttribute("aria-describedby")).toBe(reason.id);
    await fireEvent.click(button);
    expect(calls.some((c) => c.cmd === "gallery_refine")).toBe(false);
  });

  it("an image with its model recorded shows no reason", async () => {
    reset();
    mockCore(gallery([entry(5)]));
    render(Gallery);
    await openDetail(5);
    expect(screen.queryByTestId("detail-refine-reason")).toBeNull();
    expect(refineButton().getAttribute("aria-describedby")).toBeNull();
  });

  it("is keyboard reachable: a native button and a labelled native range slider, no axe violations", async () => {
    reset();
    mockCore(gallery([entry(1)]));
    const { container } = render(Detail, { id: 1, onremoved: () => {}, onchanged: () => {} });
    await waitFor(() => expect(screen.getByTestId("detail-prompt")).toBeTruthy());
    for (const control of [refineButton(), strengthSlider()]) {
      control.focus();
      expect(document.activeElement).toBe(control);
      expect(control.getAttribute("tabindex")).toBeNull();
    }
    expect(strengthSlider().getAttribute("aria-valuetext")).toBe("0.35");
    const result = await axe.run(container, { rules: { "color-contrast": { enabled: false } }, resultTypes: ["violations"] });
    expect(result.violations.map((v) => `${v.id}: ${v.nodes.map((n) => n.html).join(" | ")}`)).toEqual([]);
  });

  it("the disabled Refine of an image without parameters has no axe violations either", async () => {
    reset();
    mockCore(gallery([entry(1, { model: null, source: "unknown" })]));
    const { container } = render(Detail, { id: 1, onremoved: () => {}, onchanged: () => {} });
    await waitFor(() => expect(screen.getByTestId("detail-refine-reason")).toBeTruthy());
    const result = await axe.run(container, { rules: { "color-contrast": { enabled: false } }, resultTypes: ["violations"] });
    expect(result.violations.map((v) => `${v.id}: ${v.nodes.map((n) => n.html).join(" | ")}`)).toEqual([]);
  });

  it("a strength is always one the slider offers: within 0.05–1, on a 0.05 step", () => {
    expect(refineStrength(0.35)).toBe(0.35);
    expect(refineStrength(0.6000000001)).toBe(0.6);
    expect(refineStrength(0.37)).toBe(0.35);
    expect(refineStrength(0)).toBe(0.05);
    expect(refineStrength(2)).toBe(1);
    expect(refineStrength(Number.NaN)).toBe(0.35);
  });
});

/** Generate showing this window's finished job `id`, whose result is gallery image `galleryId`. */
async function finishedResult(id: string, galleryId: number) {
  trackOwnJob(id);
  await event(id, { phase: "done", outputs: [{ path: `/o/${galleryId}.png`, seed: 7, width: 512, height: 512, gallery_id: galleryId }] }, 0);
  await waitFor(() => expect(screen.getByTestId("result-image")).toBeTruthy());
}

describe("Refine from Generate's finished result", () => {
  it("a finished result offers Refine, which queues the refine of its gallery image at the session's strength", async () => {
    reset();
    const calls = mockCore({ gallery_refine: () => "ref-10" });
    await start();
    render(Generate);
    render(Toasts);
    await screen.findByText("tiny");
    await finishedResult("gen-1", 12);
    const refine = screen.getByRole<HTMLButtonElement>("button", { name: "Refine" });
    expect(refine.title).toContain("strength 0.35");
    await fireEvent.click(refine);
    await waitFor(() => expect(calls.find((c) => c.cmd === "gallery_refine")?.args).toEqual({ id: 12, strength: 0.35 }));
    await toastSaying("Refining at strength 0.35 — it's in the queue");
    // Generate now follows the refine.
    expect(app.own["ref-10"]).toBe(true);
    expect(app.current).toBe("ref-10");
  });

  it("uses the strength picked in the detail view this session", async () => {
    reset();
    const calls = mockCore(gallery([entry(5)], { gallery_refine: () => "ref-11" }));
    await start();
    render(App);
    app.view = "gallery";
    await openDetail(5);
    await setStrength("0.2");
    await fireEvent.click(screen.getByRole("button", { name: "Close" }));
    app.view = "generate";
    await screen.findByTestId("prompt");
    await finishedResult("gen-2", 13);
    await fireEvent.click(screen.getByRole("button", { name: "Refine" }));
    await waitFor(() => expect(calls.find((c) => c.cmd === "gallery_refine")?.args).toEqual({ id: 13, strength: 0.2 }));
    await toastSaying("Refining at strength 0.20 — it's in the queue");
  });

  it("several results each have their own Refine, named by seed", async () => {
    reset();
    const calls = mockCore({ gallery_refine: () => "ref-12" });
    await start();
    render(Generate);
    await screen.findByText("tiny");
    trackOwnJob("gen-3");
    await event(
      "gen-3",
      {
        phase: "done",
        outputs: [
          { path: "/o/20.png", seed: 1, width: 64, height: 64, gallery_id: 20 },
          { path: "/o/21.png", seed: 2, width: 64, height: 64, gallery_id: 21 },
        ],
      },
      0,
    );
    await waitFor(() => expect(screen.getAllByTestId("result-image")).toHaveLength(2));
    await fireEvent.click(screen.getByRole("button", { name: "Refine (seed 2)" }));
    await waitFor(() => expect(calls.find((c) => c.cmd === "gallery_refine")?.args).toEqual({ id: 21, strength: 0.35 }));
  });

  it("one click queues one job, and a refusal is told in an error toast, the result still shown", async () => {
    reset();
    const answer = later<string>();
    const calls = mockCore({ gallery_refine: () => answer.promise });
    await start();
    render(Generate);
    render(Toasts);
    await screen.findByText("tiny");
    await finishedResult("gen-4", 14);
    await fireEvent.click(screen.getByRole("button", { name: "Refine" }));
    await waitFor(() => expect(screen.getByRole<HTMLButtonElement>("button", { name: "Refine" }).disabled).toBe(true));
    await fireEvent.click(screen.getByRole("button", { name: "Refine" }));
    expect(calls.filter((c) => c.cmd === "gallery_refine")).toHaveLength(1);
    answer.refuse({ field: "id", message: "image #14 has no generation parameters to refine" });
    const alert = await screen.findByRole("alert");
    expect(alert.textContent).toContain("Can't refine: image #14 has no generation parameters to refine");
    expect(app.current).toBe("gen-4");
    expect(screen.getByTestId("result-image")).toBeTruthy();
    await waitFor(() => expect(screen.getByRole<HTMLButtonElement>("button", { name: "Refine" }).disabled).toBe(false));
  });
});

describe("A refine job in Generate", () => {
  it("Generate shows the refine's progress step by step, then its result with Refine again", async () => {
    reset();
    const refined = entry(31, { prompt: "a lighthouse at dusk", init_image: "/data/outputs/30.png", strength: 0.35 });
    mockCore(gallery([entry(30, { prompt: "a lighthouse at dusk" }), refined], { gallery_refine: () => "ref-20" }));
    await start();
    render(App);
    app.view = "gallery";
    await openDetail(30);
    await fireEvent.click(refineButton());
    await waitFor(() => expect(app.current).toBe("ref-20"));
    await fireEvent.click(screen.getByRole("button", { name: "Close" }));
    await fireEvent.click(screen.getByTestId("nav-generate"));
    await screen.findByTestId("prompt");

    await event("ref-20", { phase: "queued", position: 0 });
    await event("ref-20", { phase: "loading_model", part: 1, tensors_loaded: 10, tensors_total: 10 });
    expect((await screen.findByTestId("job-phase")).textContent).toBe("Loading the model (10/10 tensors)");
    await event("ref-20", sampling(3, 8), 3);
    await waitFor(() => expect(screen.getByTestId("job-phase").textContent).toBe("Sampling"));
    expect(screen.getByTestId("job-step").textContent).toBe("step 3/8");
    expect(screen.getByTestId("job-eta").textContent).toBe("ETA 3 s");
    expect(screen.getByTestId("cancel")).toBeTruthy();

    await event("ref-20", { phase: "done", outputs: [{ path: "/o/31.png", seed: 1030, width: 64, height: 64, gallery_id: 31 }] }, 0);
    const image = await screen.findByTestId<HTMLImageElement>("result-image");
    expect(image.src).toContain("image-31");
    expect(screen.getByTestId("progress-bar").getAttribute("aria-valuenow")).toBe("100");
    expect(screen.getByRole("button", { name: "Refine" })).toBeTruthy();
    // The result opens in the gallery like any render.
    await fireEvent.click(screen.getByTitle(/Open in the gallery/));
    await waitFor(() => expect(app.detail).toBe(31));
    await waitFor(() => expect(screen.getByRole("heading", { name: "Image #31" })).toBeTruthy());
  });

  it("after a reload, a refine the app queued (source app) is followed in Generate again", async () => {
    reset();
    const running: JobEvent = { job_id: "ref-21", elapsed_seconds: 2, percent: null, eta_seconds: 4, ...sampling(2, 6) } as JobEvent;
    const queue: JobInfo[] = [jobInfo("ref-21", { state: "running", position: null, source: "app", prompt: "a lighthouse at dusk", last_event: running })];
    mockCore({ queue: () => queue });
    await start();
    render(Generate);
    expect((await screen.findByTestId("job-step")).textContent).toBe("step 2/6");
    expect(app.current).toBe("ref-21");
  });
});
