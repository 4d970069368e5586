import { describe, expect, it } from "vitest";
import { fireEvent, render, screen, waitFor } from "@testing-library/svelte";
import Gallery from "../panels/Gallery.svelte";
import { app, form, emptyForm } from "../lib/state.svelte";
import type { Query } from "../lib/bindings";
import { entry, mockCore } from "./fixtures";

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

  it("the detail view shows every parameter; Remix loads them into Generate", async () => {
    Object.assign(form, emptyForm());
    app.detail = null;
    app.view = "gallery";
    const e = entry(5, { prompt: "a red fox in snow", seed: 777, steps: 12, sampler: "euler" });
    mockCore({
      gallery_count: () => 1,
      gallery_page: () => ({ entries: [e], next_cursor: null }),
      gallery_entry: () => e,
      gallery_remix: () => ({ ...emptyForm(), model: "tiny", prompt: e.prompt, seed: 777, steps: 12, width: 64, height: 64 }),
    });
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
    expect(app.detail).toBeNull();
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
