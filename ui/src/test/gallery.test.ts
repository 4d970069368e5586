import { describe, expect, it } from "vitest";
import { fireEvent, render, screen, waitFor } from "@testing-library/svelte";
import Gallery from "../panels/Gallery.svelte";
import App from "../App.svelte";
import { app, draft, form, emptyForm } from "../lib/state.svelte";
import type { Entry, GenerateForm, Query } from "../lib/bindings";
import { entry, mockCore, pngDataUrl } from "./fixtures";

/** What the core's remix answers for an entry (as `GenerateForm::from_entry` builds it). */
function remixOf(e: Entry): GenerateForm {
  return {
    ...emptyForm(),
    model: e.model ?? "",
    prompt: e.prompt,
    negative_prompt: e.negative_prompt,
    width: e.width,
    height: e.height,
    steps: e.steps,
    cfg_scale: e.cfg_scale,
    sampler: e.sampler,
    scheduler: e.scheduler,
    seed: e.seed,
    count: 1,
    loras: e.loras,
  };
}

/** A gallery of `entries`, one page. */
function small(entries: Entry[], extra: Record<string, (a: Record<string, unknown>) => unknown> = {}) {
  return {
    gallery_count: () => entries.length,
    gallery_page: () => ({ entries, next_cursor: null }),
    gallery_entry: (a: Record<string, unknown>) => entries.find((e) => e.id === a.id),
    gallery_remix: (a: Record<string, unknown>) => remixOf(entries.find((e) => e.id === a.id)!),
    ...extra,
  };
}

const TOTAL = 100_000;

/** A gallery of 100,000 entries served in pages of `limit` after a numeric cursor. */
function bigGallery() {
  return {
    gallery_count: () => TOTAL,
    gallery_page: (args: Record<string, unknown>) => {
      const q = args.query as Query;
      const start = q.cursor ? Number(q.cursor) : 0;
      const limit = q.limit ?? 50;
      const end = Math.min(TOTAL, start + limit);
      const entries = [];
      for (let i = start; i < end; i++) entries.push(entry(i + 1));
      return { entries, next_cursor: end < TOTAL ? String(end) : null };
    },
  };
}

function cells() {
  return document.querySelectorAll('[role="gridcell"]');
}

describe("Gallery", () => {
  it("keeps only a screenful of cells in the page for 100,000 images, and fetches pages in order as it scrolls", async () => {
    app.detail = null;
    const calls = mockCore(bigGallery());
    render(Gallery);
    await waitFor(() => expect(screen.getByTestId("gallery-count").textContent).toBe("100,000 images"));
    await waitFor(() => expect(screen.getByTestId("gallery-item-1")).toBeTruthy());
    expect(cells().length).toBeLessThan(60);

    const scroller = screen.getByTestId("gallery-scroller");
    const rowHeight = 184 + 8;
    scroller.scrollTop = 1000 * rowHeight;
    await fireEvent.scroll(scroller);
    await waitFor(() => expect(document.querySelector('[data-index="1000"] img')).toBeTruthy());
    expect(cells().length).toBeLessThan(60);
    const cursors = calls.filter((c) => c.cmd === "gallery_page").map((c) => (c.args.query as Query).cursor ?? null);
    expect(cursors.slice(0, 3)).toEqual([null, "200", "400"]);
    expect(new Set(cursors).size).toBe(cursors.length);
  });

  it("searches as the user types (debounced) and says when nothing matches", async () => {
    app.detail = null;
    const calls = mockCore({ gallery_count: (a) => ((a.query as Query).text ? 0 : 3) });
    render(Gallery);
    await waitFor(() => expect(screen.getByTestId("gallery-count").textContent).toBe("3 images"));
    await fireEvent.input(screen.getByTestId("gallery-search"), { target: { value: "lighthouse" } });
    await waitFor(() => expect(screen.getByText("No image matches these filters.")).toBeTruthy());
    expect(calls.some((c) => c.cmd === "gallery_count" && (c.args.query as Query).text === "lighthouse")).toBe(true);
  });

  it("the detail view shows every parameter; Remix loads them into Generate with the seed locked", async () => {
    app.detail = null;
    app.view = "gallery";
    const e = entry(5, { prompt: "a red fox in snow", seed: 777, steps: 12, sampler: "euler" });
    mockCore(small([e]));
    render(Gallery);
    await fireEvent.click(await screen.findByTestId("gallery-item-5"));
    const detail = await screen.findByTestId("detail");
    await waitFor(() => expect(detail.textContent).toContain("a red fox in snow"));
    expect(detail.textContent).toContain("777");
    expect(detail.textContent).toContain("euler");
    await fireEvent.click(screen.getByTestId("remix"));
    await waitFor(() => expect(app.view).toBe("generate"));
    expect(form.prompt).toBe("a red fox in snow");
    expect(form.seed).toBe(777);
    expect(draft.seedLocked).toBe(true);
    expect(app.detail).toBeNull();
  });

  it("a remix reproduces the image: Generate then sends every recorded parameter and the recorded seed", async () => {
    app.detail = null;
    app.view = "generate";
    const e = entry(5, { prompt: "a red fox in snow", negative_prompt: "blurry", seed: 777, steps: 12, cfg_scale: 4.5, sampler: "euler", scheduler: "karras", width: 512, height: 768, loras: [{ name: "detail-tweaker", weight: 0.6 }] });
    const calls = mockCore(small([e], { generate: () => "job-r" }));
    render(App);
    await fireEvent.click(await screen.findByTestId("nav-gallery"));
    await fireEvent.click(await screen.findByTestId("gallery-item-5"));
    await waitFor(() => expect(screen.getByTestId("detail").textContent).toContain("a red fox in snow"));
    await fireEvent.click(screen.getByTestId("remix"));
    expect(await screen.findByTestId("seed")).toBeTruthy();
    expect(screen.getByTestId("seed-lock").getAttribute("aria-pressed")).toBe("true");
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(calls.find((c) => c.cmd === "generate")).toBeTruthy());
    expect(calls.find((c) => c.cmd === "generate")!.args.form).toMatchObject({
      model: "tiny",
      prompt: "a red fox in snow",
      negative_prompt: "blurry",
      seed: 777,
      steps: 12,
      cfg_scale: 4.5,
      sampler: "euler",
      scheduler: "karras",
      width: 512,
      height: 768,
      loras: [{ name: "detail-tweaker", weight: 0.6 }],
    });
  });

  it("a remix of a hires render loads the first pass's size and the hires pass, so Generate renders it again", async () => {
    app.detail = null;
    app.view = "gallery";
    const e = entry(8, { seed: 81, width: 1024, height: 1024 });
    const remix = { ...remixOf(e), width: 512, height: 512, hires_scale: 2, hires_upscaler: "model" as const, hires_model: "4x-UltraSharp", hires_steps: 10, hires_denoise: 0.5 };
    const calls = mockCore(small([e], { gallery_remix: () => remix, generate: () => "job-hr" }));
    render(App);
    await fireEvent.click(await screen.findByTestId("gallery-item-8"));
    await waitFor(() => expect(screen.getByTestId("detail-prompt")).toBeTruthy());
    await fireEvent.click(screen.getByTestId("remix"));
    const summary = await screen.findByTestId("hires-summary");
    expect(summary.textContent).toContain("2×");
    expect(summary.textContent).toContain("1024×1024");
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(calls.find((c) => c.cmd === "generate")).toBeTruthy());
    expect(calls.find((c) => c.cmd === "generate")!.args.form).toMatchObject({
      width: 512,
      height: 512,
      seed: 81,
      hires_scale: 2,
      hires_upscaler: "model",
      hires_model: "4x-UltraSharp",
      hires_steps: 10,
      hires_denoise: 0.5,
    });
  });

  it("a remix of an img2img image brings its kept init image and strength back: the chip shows them, Generate sends them", async () => {
    app.detail = null;
    app.view = "gallery";
    app.toasts = [];
    const kept = pngDataUrl(512, 768);
    const e = entry(6, { init_image: "/data/outputs/init/holiday.png", strength: 0.4, seed: 66, width: 512, height: 768 });
    const calls = mockCore(small([e], { gallery_remix: () => ({ ...remixOf(e), init_image: kept, strength: 0.4 }), generate: () => "job-i" }));
    render(App);
    await fireEvent.click(await screen.findByTestId("gallery-item-6"));
    await waitFor(() => expect(screen.getByTestId("detail").textContent).toContain("holiday.png"));
    await fireEvent.click(screen.getByTestId("remix"));
    const chip = await screen.findByTestId("init-chip");
    // The kept copy's file is named by its hash: the chip names the image it came with.
    expect(chip.textContent).toContain("img2img: the init image of #6 · strength 0.40");
    expect(screen.queryByTestId("init-size-mismatch")).toBeNull();
    expect(draft.init).toEqual({ name: "the init image of #6", size: { width: 512, height: 768 } });
    expect(app.toasts.map((t) => t.text).join()).not.toContain("didn't keep");
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(calls.find((c) => c.cmd === "generate")).toBeTruthy());
    expect(calls.find((c) => c.cmd === "generate")!.args.form).toMatchObject({ init_image: kept, strength: 0.4, seed: 66 });
  });

  it("a remix of an img2img image whose init image was not kept says so calmly, and leaves the form text-to-image", async () => {
    app.detail = null;
    app.toasts = [];
    const e = entry(6, { init_image: "holiday.jpg", strength: 0.4 });
    mockCore(small([e]));
    render(Gallery);
    await fireEvent.click(await screen.findByTestId("gallery-item-6"));
    await waitFor(() => expect(screen.getByTestId("detail").textContent).toContain("holiday.jpg"));
    await fireEvent.click(screen.getByTestId("remix"));
    await waitFor(() => expect(app.toasts.map((t) => t.text).join()).toContain("made from an init image (holiday.jpg) that DiffuGen didn't keep"));
    expect(app.toasts.every((t) => t.kind === "info")).toBe(true);
    expect(form.init_image).toBeNull();
    expect(draft.init).toBeNull();
  });

  it("a remix of a text-to-image image says nothing about an init image", async () => {
    app.detail = null;
    app.toasts = [];
    mockCore(small([entry(4, { seed: 12 })]));
    render(Gallery);
    await fireEvent.click(await screen.findByTestId("gallery-item-4"));
    await waitFor(() => expect(screen.getByTestId("detail-prompt")).toBeTruthy());
    await fireEvent.click(screen.getByTestId("remix"));
    await waitFor(() => expect(app.toasts.map((t) => t.text)).toEqual(["Parameters loaded, seed 12 locked"]));
  });

  it("Reuse seed and Use as init image act from the detail view", async () => {
    app.detail = null;
    app.view = "gallery";
    const e = entry(7, { seed: 31337, width: 512, height: 512 });
    const calls = mockCore(small([e], { gallery_image_data: () => pngDataUrl(512, 512) }));
    render(Gallery);
    await fireEvent.click(await screen.findByTestId("gallery-item-7"));
    await fireEvent.click(await screen.findByTestId("detail-reuse-seed"));
    expect(form.seed).toBe(31337);
    expect(draft.seedLocked).toBe(true);
    expect(app.view).toBe("generate");

    app.view = "gallery";
    await fireEvent.click(await screen.findByTestId("gallery-item-7"));
    await fireEvent.click(await screen.findByTestId("detail-use-as-init"));
    await waitFor(() => expect(form.init_image).toBe(pngDataUrl(512, 512)));
    expect(calls.find((c) => c.cmd === "gallery_image_data")?.args).toEqual({ id: 7 });
    expect(draft.init).toEqual({ name: "gallery image #7", size: { width: 512, height: 512 } });
    expect(app.view).toBe("generate");

    // Send to inpaint: the same, and Generate opens the mask editor once the image is shown.
    draft.inpaint = false;
    app.view = "gallery";
    await fireEvent.click(await screen.findByTestId("gallery-item-7"));
    await fireEvent.click(await screen.findByTestId("detail-inpaint"));
    await waitFor(() => expect(draft.inpaint).toBe(true));
    expect(app.view).toBe("generate");
    draft.inpaint = false;
  });

  it("← and → step through the images in the detail view", async () => {
    app.detail = null;
    const entries = [entry(1, { prompt: "first" }), entry(2, { prompt: "second" }), entry(3, { prompt: "third" })];
    mockCore(small(entries));
    render(Gallery);
    await fireEvent.click(await screen.findByTestId("gallery-item-2"));
    const prompt = () => screen.getByTestId("detail-prompt").textContent;
    await waitFor(() => expect(prompt()).toBe("second"));
    await fireEvent.keyDown(window, { key: "ArrowRight" });
    await waitFor(() => expect(prompt()).toBe("third"));
    expect(screen.getByTestId<HTMLButtonElement>("detail-next").disabled).toBe(true);
    await fireEvent.keyDown(window, { key: "ArrowRight" });
    expect(app.detail).toBe(3);
    await fireEvent.keyDown(window, { key: "ArrowLeft" });
    await fireEvent.keyDown(window, { key: "ArrowLeft" });
    await waitFor(() => expect(prompt()).toBe("first"));
    expect(screen.getByTestId<HTMLButtonElement>("detail-previous").disabled).toBe(true);
  });

  it("→ on the last loaded image loads the next page and shows its first image", async () => {
    app.detail = null;
    const calls = mockCore({ ...bigGallery(), gallery_entry: (a) => entry(a.id as number) });
    render(Gallery);
    await waitFor(() => expect(screen.getByTestId("gallery-item-1")).toBeTruthy());
    app.detail = 200;
    await waitFor(() => expect(screen.getByTestId("detail-prompt").textContent).toBe("image number 200"));
    const pages = calls.filter((c) => c.cmd === "gallery_page").length;
    await fireEvent.keyDown(window, { key: "ArrowRight" });
    await waitFor(() => expect(app.detail).toBe(201));
    expect(calls.filter((c) => c.cmd === "gallery_page").length).toBe(pages + 1);
  });

  it("the grid is one Tab stop; arrow keys move the focus between the images", async () => {
    app.detail = null;
    mockCore(small([entry(1), entry(2), entry(3), entry(4)]));
    render(Gallery);
    await waitFor(() => expect(screen.getByTestId("gallery-item-4")).toBeTruthy());
    const stops = () => [...document.querySelectorAll<HTMLElement>('[role="gridcell"]')].filter((c) => c.tabIndex === 0);
    expect(stops().map((c) => c.dataset.index)).toEqual(["0"]);
    expect(document.querySelectorAll('[role="row"] > [role="gridcell"]').length).toBe(4);

    const first = screen.getByTestId("gallery-item-1");
    first.focus();
    await fireEvent.keyDown(first, { key: "ArrowRight" });
    await waitFor(() => expect(document.activeElement).toBe(screen.getByTestId("gallery-item-2")));
    expect(stops().map((c) => c.dataset.index)).toEqual(["1"]);
    await fireEvent.keyDown(document.activeElement!, { key: "End", ctrlKey: true });
    await waitFor(() => expect(document.activeElement).toBe(screen.getByTestId("gallery-item-4")));
    await fireEvent.keyDown(document.activeElement!, { key: "ArrowLeft" });
    await waitFor(() => expect(document.activeElement).toBe(screen.getByTestId("gallery-item-3")));
    expect(stops()).toHaveLength(1);
    await fireEvent.keyDown(document.activeElement!, { key: "Enter" });
    await waitFor(() => expect(app.detail).toBe(3));
  });

  it("empty date filters look empty (placeholder style) until a date is set, and can be cleared", async () => {
    app.detail = null;
    const calls = mockCore();
    render(Gallery);
    const from = screen.getByTestId<HTMLInputElement>("gallery-from");
    expect(from.classList.contains("unset")).toBe(true);
    expect(screen.getByTestId("gallery-to").classList.contains("unset")).toBe(true);
    await fireEvent.input(from, { target: { value: "2025-01-31" } });
    expect(from.classList.contains("unset")).toBe(false);
    await waitFor(() => expect(calls.some((c) => c.cmd === "gallery_count" && (c.args.query as Query).from != null)).toBe(true));
    await fireEvent.click(screen.getByRole("button", { name: "Clear the dates" }));
    expect(from.value).toBe("");
    expect(from.classList.contains("unset")).toBe(true);
  });

  it("a date typed only in part stays visible and marked as not filtering, and Clear empties it", async () => {
    app.detail = null;
    mockCore();
    render(Gallery);
    const from = screen.getByTestId<HTMLInputElement>("gallery-from");
    // The browser keeps a part-typed date out of `value` and says so in `validity.badInput`.
    Object.defineProperty(from, "validity", { configurable: true, value: { badInput: true } });
    await fireEvent.input(from, { target: { value: "" } });
    await fireEvent.blur(from);
    expect(from.classList.contains("unset")).toBe(false);
    expect(from.getAttribute("aria-invalid")).toBe("true");
    expect(from.title).toBe("This date is not complete: it does not filter yet");
    Object.defineProperty(from, "validity", { configurable: true, value: { badInput: false } });
    await fireEvent.click(screen.getByRole("button", { name: "Clear the dates" }));
    expect(from.classList.contains("unset")).toBe(true);
    expect(from.getAttribute("aria-invalid")).toBeNull();
  });

  it("says where an image's parameters came from, and how long its render took", async () => {
    app.detail = null;
    const e = entry(9, { source: "comfyui", generation_seconds: 75, client: null, queue_seconds: null });
    mockCore(small([e]));
    render(Gallery);
    await fireEvent.click(await screen.findByTestId("gallery-item-9"));
    await waitFor(() => expect(screen.getByTestId("detail-source").textContent).toBe("ComfyUI workflow in the PNG"));
    const took = screen.getByTestId("detail-time");
    expect(took.previousElementSibling?.textContent).toBe("Took");
    expect(took.textContent).toBe("1 min 15 s");
    // An image from elsewhere says nothing about a client or a wait.
    expect(screen.queryByTestId("detail-client")).toBeNull();
    expect(screen.queryByTestId("detail-wait")).toBeNull();
  });

  it("says which client asked for an image and how long it waited, apart from its render time", async () => {
    app.detail = null;
    const e = entry(10, { client: "openai", generation_seconds: 2, queue_seconds: 12.4 });
    mockCore(small([e]));
    render(Gallery);
    await fireEvent.click(await screen.findByTestId("gallery-item-10"));
    await waitFor(() => expect(screen.getByTestId("detail-client").textContent).toBe("Open WebUI / OpenAI API"));
    expect(screen.getByTestId("detail-time").textContent).toBe("2 s");
    expect(screen.getByTestId("detail-wait").textContent).toBe("12 s");
  });

  it("delete moves the image to the trash and Undo restores it", async () => {
    app.detail = null;
    app.toasts = [];
    const e = entry(8);
    const calls = mockCore({
      gallery_count: () => 1,
      gallery_page: () => ({ entries: [e], next_cursor: null }),
      gallery_entry: () => e,
      gallery_delete: () => ({ ...e, trashed: 1 }),
      gallery_restore: () => e,
    });
    render(Gallery);
    await fireEvent.click(await screen.findByTestId("gallery-item-8"));
    await fireEvent.click(await screen.findByText("Delete"));
    await waitFor(() => expect(calls.some((c) => c.cmd === "gallery_delete")).toBe(true));
    await waitFor(() => expect(screen.queryByTestId("gallery-item-8")).toBeNull());
    const undo = app.toasts.find((t) => t.action?.label === "Undo");
    expect(undo).toBeTruthy();
    undo!.action!.run();
    await waitFor(() => expect(calls.find((c) => c.cmd === "gallery_restore")?.args).toEqual({ id: 8 }));
  });
});
