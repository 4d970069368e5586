// Upscaling: queued from the gallery's detail view, the upscaled image's link to its source, and the job's progress
// (tile by tile) wherever a running job shows.
import { describe, expect, it } from "vitest";
import { fireEvent, render, screen, waitFor, within } from "@testing-library/svelte";
import { emit } from "@tauri-apps/api/event";
import axe from "axe-core";
import App from "../App.svelte";
import Gallery from "../panels/Gallery.svelte";
import Generate from "../panels/Generate.svelte";
import Queue from "../panels/Queue.svelte";
import Detail from "../panels/Detail.svelte";
import Toasts from "../components/Toasts.svelte";
import { app, start, trackOwnJob } from "../lib/state.svelte";
import { stagePercent } from "../lib/progress";
import type { Entry, JobEvent, JobInfo, Upscaled } from "../lib/bindings";
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

function upscaled(overrides: Partial<Upscaled> = {}): Upscaled {
  return { upscaler: "4x-UltraSharp", scale: 2, source_width: 512, source_height: 512, source_id: 1, source_file: null, ...overrides };
}

/** Opens image `id` of the rendered gallery in the detail view and waits for its record. */
async function openDetail(id: number) {
  await fireEvent.click(await screen.findByTestId(`gallery-item-${id}`));
  await waitFor(() => expect(screen.getByTestId("detail-prompt")).toBeTruthy());
  return screen.getByTestId("detail");
}

const upscalerSelect = () => screen.getByRole<HTMLSelectElement>("combobox", { name: "Upscaler" });

const event = (job: string, stage: Record<string, unknown>, eta: number | null = null) =>
  emit("job-update", { job_id: job, elapsed_seconds: 1, percent: null, eta_seconds: eta, ...stage });

const tile = (tile: number, tiles: number, more: Record<string, unknown> = {}) => ({
  phase: "upscaling",
  image: 1,
  images: 1,
  pass: 1,
  passes: 1,
  tile,
  tiles,
  ...more,
});

describe("Upscale from the detail view", () => {
  it("offers Upscale ×2 and ×4 and the core's upscalers, the first ESRGAN model chosen", async () => {
    reset();
    mockCore(gallery([entry(5)], { upscalers: () => ["Lanczos", "Nearest", "4x-UltraSharp", "RealESRGAN_x4plus"] }));
    render(Gallery);
    const detail = await openDetail(5);
    const group = within(detail).getByRole("group", { name: "Upscale" });
    expect(within(group).getByRole("button", { name: "Upscale ×2" }).textContent).toBe("×2");
    expect(within(group).getByRole("button", { name: "Upscale ×4" }).textContent).toBe("×4");
    await waitFor(() => expect(upscalerSelect().value).toBe("4x-UltraSharp"));
    expect([...upscalerSelect().options].map((o) => o.textContent)).toEqual(["Lanczos", "Nearest", "4x-UltraSharp", "RealESRGAN_x4plus"]);
  });

  it("without an ESRGAN model, offers Lanczos and Nearest with Lanczos chosen", async () => {
    reset();
    mockCore(gallery([entry(5)]));
    render(Gallery);
    await openDetail(5);
    expect(upscalerSelect().value).toBe("Lanczos");
    expect([...upscalerSelect().options].map((o) => o.value)).toEqual(["Lanczos", "Nearest"]);
  });

  it("×2 queues the upscale of this image and says calmly that it is in the queue", async () => {
    reset();
    const calls = mockCore(gallery([entry(5)], { upscale_gallery_image: () => "up-1" }));
    render(Gallery);
    render(Toasts);
    await openDetail(5);
    await fireEvent.click(screen.getByRole("button", { name: "Upscale ×2" }));
    await waitFor(() => expect(calls.find((c) => c.cmd === "upscale_gallery_image")?.args).toEqual({ id: 5, scale: 2, upscaler: "Lanczos" }));
    const told = await screen.findByRole("status");
    expect(told.textContent).toContain("Upscaling ×2 with Lanczos — it's in the queue");
    expect(screen.queryByRole("alert")).toBeNull();
    // The job is this window's own: Generate follows it like a job it sent.
    expect(app.own["up-1"]).toBe(true);
    expect(app.current).toBe("up-1");
  });

  it("the upscaler picked is kept for the session: the next image uses it, with ×4", async () => {
    reset();
    const calls = mockCore(gallery([entry(5), entry(6)], { upscalers: () => ["Lanczos", "Nearest", "4x-UltraSharp"], upscale_gallery_image: () => "up-2" }));
    render(Gallery);
    await openDetail(5);
    await waitFor(() => expect(upscalerSelect().value).toBe("4x-UltraSharp"));
    await fireEvent.change(upscalerSelect(), { target: { value: "Nearest" } });
    await fireEvent.click(screen.getByRole("button", { name: "Close" }));
    await waitFor(() => expect(screen.queryByTestId("detail")).toBeNull());

    await openDetail(6);
    await waitFor(() => expect(calls.filter((c) => c.cmd === "upscalers")).toHaveLength(2));
    expect(upscalerSelect().value).toBe("Nearest");
    await fireEvent.click(screen.getByRole("button", { name: "Upscale ×4" }));
    await waitFor(() => expect(calls.find((c) => c.cmd === "upscale_gallery_image")?.args).toEqual({ id: 6, scale: 4, upscaler: "Nearest" }));
  });

  it("a refusal shows the core's message in an error toast, and nothing is followed", async () => {
    reset();
    mockCore(
      gallery([entry(5)], {
        upscale_gallery_image: () => {
          throw { field: "upscaler", message: "unknown upscaler 'Lanczos': this core has none" };
        },
      }),
    );
    render(Gallery);
    render(Toasts);
    await openDetail(5);
    await fireEvent.click(screen.getByRole("button", { name: "Upscale ×2" }));
    const alert = await screen.findByRole("alert");
    expect(alert.textContent).toContain("unknown upscaler 'Lanczos': this core has none");
    expect(screen.queryByText(/it's in the queue/)).toBeNull();
    expect(app.current).toBeNull();
    // The buttons are ready for another try.
    await waitFor(() => expect(screen.getByRole<HTMLButtonElement>("button", { name: "Upscale ×2" }).disabled).toBe(false));
  });

  it("is keyboard reachable: native buttons and a labelled select, no axe violations", async () => {
    reset();
    mockCore(gallery([entry(1), entry(2, { width: 1024, height: 1024, upscale: upscaled() })]));
    const { container } = render(Detail, { id: 2, onremoved: () => {}, onchanged: () => {} });
    await waitFor(() => expect(screen.getByTestId("detail-upscaled")).toBeTruthy());
    for (const control of [screen.getByRole("button", { name: "Upscale ×2" }), screen.getByRole("button", { name: "Upscale ×4" }), upscalerSelect()]) {
      control.focus();
      expect(document.activeElement).toBe(control);
      expect(control.getAttribute("tabindex")).toBeNull();
    }
    const result = await axe.run(container, { rules: { "color-contrast": { enabled: false } }, resultTypes: ["violations"] });
    expect(result.violations.map((v) => `${v.id}: ${v.nodes.map((n) => n.html).join(" | ")}`)).toEqual([]);
  });
});

describe("An upscaled image's link to its source", () => {
  it("says it was upscaled ×2 from 512×512 with its upscaler, and Show the original opens the source", async () => {
    reset();
    const source = entry(1, { prompt: "a lighthouse at dusk", width: 512, height: 512 });
    const big = entry(2, { prompt: "a lighthouse at dusk", width: 1024, height: 1024, upscale: upscaled() });
    mockCore(gallery([source, big]));
    render(Gallery);
    const detail = await openDetail(2);
    await waitFor(() => expect(within(detail).getByTestId("detail-upscaled-text").textContent).toBe("Upscaled ×2 from 512×512 with 4x-UltraSharp"));
    await fireEvent.click(within(detail).getByRole("button", { name: "Show the original (#1)" }));
    await waitFor(() => expect(screen.getByRole("heading", { name: "Image #1" })).toBeTruthy());
    expect(app.detail).toBe(1);
    await waitFor(() => expect(screen.queryByTestId("detail-upscaled")).toBeNull());
    expect(screen.getByText("512×512")).toBeTruthy();
    // The focus stays in the dialog.
    expect(screen.getByTestId("detail").contains(document.activeElement)).toBe(true);
  });

  it("an image upscaled from a file names the file, with no link", async () => {
    reset();
    const e = entry(3, { width: 2048, height: 1536, upscale: upscaled({ upscaler: "Lanczos", scale: 4, source_width: 512, source_height: 384, source_id: null, source_file: "/home/me/Pictures/holiday.png" }) });
    mockCore(gallery([e]));
    render(Gallery);
    const detail = await openDetail(3);
    const line = within(detail).getByTestId("detail-upscaled");
    expect(line.textContent).toContain("Upscaled ×4 from 512×384 with Lanczos");
    expect(line.textContent).toContain("from holiday.png");
    expect(within(line).queryByRole("button")).toBeNull();
  });

  it("a record without its scale takes it from the sizes", async () => {
    reset();
    mockCore(gallery([entry(4, { width: 768, height: 768, upscale: upscaled({ scale: null, source_id: null, upscaler: "Nearest" }) })]));
    render(Gallery);
    const detail = await openDetail(4);
    expect(within(detail).getByTestId("detail-upscaled").textContent?.trim()).toBe("Upscaled ×1.5 from 512×512 with Nearest");
  });

  it("an image that was not upscaled says nothing about upscaling", async () => {
    reset();
    mockCore(gallery([entry(5)]));
    render(Gallery);
    const detail = await openDetail(5);
    expect(within(detail).queryByTestId("detail-upscaled")).toBeNull();
    expect(detail.textContent).not.toContain("Upscaled");
  });
});

describe("An upscale job's progress", () => {
  it("the bar follows the tiles, the passes and the images, never going back", () => {
    const at = (stage: Record<string, unknown>) => ({ job_id: "j", elapsed_seconds: 1, percent: 3, eta_seconds: null, ...stage }) as JobEvent;
    expect(stagePercent(at(tile(0, 0)), 10)).toBe(10);
    expect(stagePercent(at(tile(3, 9)), 10)).toBeCloseTo(39);
    expect(stagePercent(at(tile(9, 9)), 39)).toBe(97);
    // Two passes: the first pass's last tile is half way.
    expect(stagePercent(at(tile(4, 4, { passes: 2 })), 10)).toBeCloseTo(53.5);
    expect(stagePercent(at(tile(0, 0, { pass: 2, passes: 2 })), 53.5)).toBeCloseTo(53.5);
    // Two images: the second image's first tile starts past the first image.
    expect(stagePercent(at(tile(0, 0, { image: 2, images: 2 })), 30)).toBeCloseTo(53.5);
    expect(stagePercent(at({ phase: "saving" }), 97)).toBe(98);
  });

  it("Generate reads 'Upscaling — tile 3 of 9' with the bar and the ETA, then shows the upscaled image", async () => {
    reset();
    mockCore();
    await start();
    render(Generate);
    await screen.findByText("tiny");
    trackOwnJob("up-1");
    await event("up-1", { phase: "queued", position: 0 });
    await event("up-1", { phase: "loading_model", part: 1, tensors_loaded: 10, tensors_total: 10 });
    expect((await screen.findByTestId("job-phase")).textContent).toBe("Loading the model (10/10 tensors)");
    await event("up-1", tile(0, 0), null);
    await waitFor(() => expect(screen.getByTestId("job-phase").textContent).toBe("Upscaling"));
    await event("up-1", tile(3, 9), 12);
    await waitFor(() => expect(screen.getByTestId("job-phase").textContent).toBe("Upscaling — tile 3 of 9"));
    expect(screen.getByTestId("job-eta").textContent).toBe("ETA 12 s");
    expect(screen.getByTestId("progress-bar").getAttribute("aria-valuenow")).toBe("39");
    // Tiles are not steps: no step count, no it/s.
    expect(screen.queryByTestId("job-step")).toBeNull();
    expect(screen.getByTestId("progress").textContent).not.toMatch(/it\/s|s\/it/);

    await event("up-1", { phase: "saving" });
    await event("up-1", { phase: "done", outputs: [{ path: "/o/up.png", seed: null, width: 1024, height: 1024, gallery_id: 42 }] }, 0);
    const image = await screen.findByTestId<HTMLImageElement>("result-image");
    expect(image.src).toContain("image-42");
    expect(screen.getByTestId("progress-bar").getAttribute("aria-valuenow")).toBe("100");
    // No seed to reuse, and no empty "Seed" line.
    expect(screen.getByTestId<HTMLButtonElement>("reuse-seed").disabled).toBe(true);
    expect(within(screen.getByTestId("progress")).queryByText(/^Seeds?\b/)).toBeNull();
  });

  it("names the pass and the image when there are several; just 'Upscaling' while the tiles are not counted", async () => {
    reset();
    mockCore();
    await start();
    render(Generate);
    await screen.findByText("tiny");
    trackOwnJob("up-2");
    const phase = () => screen.getByTestId("job-phase").textContent;
    await event("up-2", tile(3, 9, { pass: 2, passes: 2 }), 5);
    await waitFor(() => expect(phase()).toBe("Upscaling — pass 2 of 2, tile 3 of 9"));
    await event("up-2", tile(3, 9, { image: 2, images: 3 }), 5);
    await waitFor(() => expect(phase()).toBe("Upscaling — image 2 of 3, tile 3 of 9"));
    await event("up-2", tile(0, 0, { image: 2, images: 3, pass: 2, passes: 2 }), 5);
    await waitFor(() => expect(phase()).toBe("Upscaling — image 2 of 3, pass 2 of 2"));
    await event("up-2", tile(0, 0), 5);
    await waitFor(() => expect(phase()).toBe("Upscaling"));
  });

  it("the Queue's running row shows the upscaler, 'Upscaling — tile 3 of 9', the bar and the ETA", async () => {
    reset();
    const jobs: JobInfo[] = [jobInfo("up-3", { state: "running", position: null, model: "4x-UltraSharp", prompt: "a lighthouse at dusk", width: 2048, height: 2048 })];
    mockCore({ queue: () => jobs });
    await start();
    render(Queue);
    await event("up-3", tile(3, 9), 20);
    const row = screen.getByTestId("queue-running");
    await waitFor(() => expect(row.textContent).toContain("4x-UltraSharp · 2048×2048 · Upscaling — tile 3 of 9 · ETA 20 s"));
    expect(row.textContent).toContain("a lighthouse at dusk");
    expect(row.textContent).not.toContain("step");
    expect(within(row).getByRole("progressbar").getAttribute("aria-valuenow")).toBe("39");
  });

  it("a phase this window does not know is shown in words and never breaks the view or the bar", async () => {
    reset();
    mockCore();
    await start();
    render(Generate);
    await screen.findByText("tiny");
    trackOwnJob("new-1");
    await event("new-1", tile(3, 9), 10);
    await waitFor(() => expect(screen.getByTestId("job-phase").textContent).toBe("Upscaling — tile 3 of 9"));
    await event("new-1", { phase: "sharpening_faces", face: 2, faces: 5 });
    await waitFor(() => expect(screen.getByTestId("job-phase").textContent).toBe("Sharpening faces"));
    expect(screen.getByTestId("progress-bar").getAttribute("aria-valuenow")).toBe("39");
    // An upscaling event missing its counts reads plainly, without NaN.
    await event("new-1", { phase: "upscaling" });
    await waitFor(() => expect(screen.getByTestId("job-phase").textContent).toBe("Upscaling"));
    expect(screen.getByTestId("progress-bar").getAttribute("aria-valuenow")).toBe("39");
    expect(screen.getByTestId("progress").textContent).not.toContain("NaN");
    await event("new-1", { phase: "done", outputs: [{ path: "/o/n.png", seed: 1, width: 64, height: 64, gallery_id: 9 }] }, 0);
    expect(await screen.findByTestId("result-image")).toBeTruthy();
  });

  it("an upscale started from the gallery runs in the Queue and, done, opens its result with the link to its source", async () => {
    reset();
    app.view = "gallery";
    const source = entry(1, { prompt: "a lighthouse at dusk", width: 512, height: 512 });
    const result = entry(2, { prompt: "a lighthouse at dusk", width: 1024, height: 1024, upscale: upscaled({ upscaler: "Lanczos" }) });
    let queue: JobInfo[] = [];
    let history: JobInfo[] = [];
    const done = { path: "/o/2.png", seed: null, width: 1024, height: 1024, gallery_id: 2 };
    mockCore(
      gallery([source, result], {
        queue: () => queue,
        queue_history: () => history,
        upscale_gallery_image: () => {
          queue = [jobInfo("up-9", { state: "queued", model: "Lanczos", prompt: "a lighthouse at dusk" })];
          return "up-9";
        },
      }),
    );
    render(App);
    await fireEvent.click(await screen.findByTestId("gallery-item-1"));
    await waitFor(() => expect(screen.getByTestId("detail-prompt").textContent).toBe("a lighthouse at dusk"));
    await fireEvent.click(screen.getByRole("button", { name: "Upscale ×2" }));
    await waitFor(() => expect(app.own["up-9"]).toBe(true));
    await fireEvent.click(screen.getByRole("button", { name: "Close" }));
    await fireEvent.click(screen.getByTestId("nav-queue"));

    queue = [jobInfo("up-9", { state: "running", position: null, model: "Lanczos", prompt: "a lighthouse at dusk" })];
    await event("up-9", tile(1, 1), 1);
    await waitFor(() => expect(screen.getByTestId("queue-running").textContent).toContain("Lanczos · 512×512 · Upscaling — tile 1 of 1"));

    queue = [];
    history = [jobInfo("up-9", { state: "done", model: "Lanczos", prompt: "a lighthouse at dusk", outputs: [done] })];
    await event("up-9", { phase: "done", outputs: [done] }, 0);
    await waitFor(() => expect(screen.getAllByTestId("history-row")).toHaveLength(1));
    expect(screen.queryByTestId("queue-running")).toBeNull();
    const row = screen.getByTestId("history-row");
    expect(within(row).getByTestId("history-state").textContent).toBe("Done");
    expect(within(row).getByTestId<HTMLImageElement>("history-thumb").src).toContain("thumb-2");
    await fireEvent.click(within(row).getByRole("button", { name: /^Open in the gallery: .*a lighthouse at dusk/ }));
    await waitFor(() => expect(screen.getByTestId("detail-upscaled-text").textContent).toBe("Upscaled ×2 from 512×512 with Lanczos"));
    expect(app.detail).toBe(2);
  });
});
