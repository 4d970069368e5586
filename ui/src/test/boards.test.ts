import { describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen, waitFor, within } from "@testing-library/svelte";
import Gallery from "../panels/Gallery.svelte";
import Toasts from "../components/Toasts.svelte";
import App from "../App.svelte";
import { app, draft, form } from "../lib/state.svelte";
import type { Board, Entry, Page, Query } from "../lib/bindings";
import { dataTransfer, entry, mockCore, pngDataUrl } from "./fixtures";
import type { Handler } from "./fixtures";

/**
 * The core's gallery as the commands behave: entries with their boards, tags and favorites, boards that exist
 * without images (a name taken is refused), the page and count filtered by board and favorite, pages of at most
 * `limit` (and at most `pageSize`) entries with a cursor to the next, the trash. The bulk commands go through their
 * ids in order and stop at one in `failing`: the ones before it stay done, and the message counts them. A range is
 * every id between two under the query's filters, at most 10,000.
 */
function fakeGallery(initial: Entry[], boardNames: string[] = [], pageSize = 500) {
  const entries = initial.map((e) => ({ ...e, boards: [...e.boards], tags: [...e.tags] }));
  let boards = [...boardNames];
  const failing = new Set<number>();
  const find = (id: unknown) => entries.find((e) => e.id === id)!;
  /** What the core's `*_many` commands do: `one` on every id in order, until one fails. */
  const each = (ids: number[], one: (e: Entry) => void): Entry[] => {
    const done: Entry[] = [];
    for (const id of ids) {
      if (failing.has(id)) {
        const why = `image ${id} is locked by another program`;
        if (done.length === 0) throw { field: null, message: why };
        throw { field: null, message: `${done.length} of ${ids.length} images done; image ${id} failed: ${why}` };
      }
      const e = find(id);
      one(e);
      done.push({ ...e });
    }
    return done;
  };
  const list = (): Board[] =>
    boards.map((name) => ({ name, count: entries.filter((e) => e.trashed == null && e.boards.includes(name)).length }));
  const visible = (q: Query) =>
    entries.filter((e) => e.trashed == null && (!q.board || e.boards.includes(q.board)) && (!q.favorite || e.favorite));
  const handlers: Record<string, Handler> = {
    gallery_count: (a) => visible(a.query as Query).length,
    gallery_page: (a): Page => {
      const q = a.query as Query;
      const all = visible(q);
      const from = Number(q.cursor ?? 0);
      const to = from + Math.min(q.limit ?? 50, pageSize);
      return { entries: all.slice(from, to).map((e) => ({ ...e })), next_cursor: to < all.length ? String(to) : null };
    },
    gallery_entry: (a) => ({ ...find(a.id) }),
    gallery_boards: () => list(),
    gallery_create_board: (a) => {
      if (boards.includes(a.name as string)) throw { field: "board", message: `a board named '${a.name}' exists already` };
      boards.push(a.name as string);
      return list();
    },
    gallery_rename_board: (a) => {
      boards = boards.map((b) => (b === a.from ? (a.to as string) : b));
      for (const e of entries) e.boards = e.boards.map((b) => (b === a.from ? (a.to as string) : b));
      return list();
    },
    gallery_delete_board: (a) => {
      boards = boards.filter((b) => b !== a.name);
      for (const e of entries) e.boards = e.boards.filter((b) => b !== a.name);
      return list();
    },
    gallery_set_board: (a) => {
      const name = a.board as string;
      if (a.on && !boards.includes(name)) boards.push(name);
      return (a.ids as number[]).map((id) => {
        const e = find(id);
        e.boards = a.on ? [...new Set([...e.boards, name])] : e.boards.filter((b) => b !== name);
        return { ...e };
      });
    },
    gallery_set_tags: (a) => {
      const e = find(a.id);
      e.tags = a.tags as string[];
      return { ...e };
    },
    gallery_favorite: (a) => {
      const e = find(a.id);
      e.favorite = a.favorite as boolean;
      return { ...e };
    },
    gallery_delete: (a) => {
      const e = find(a.id);
      e.trashed = 1;
      return { ...e };
    },
    gallery_restore: (a) => {
      const e = find(a.id);
      e.trashed = null;
      return { ...e };
    },
    gallery_delete_many: (a) => each(a.ids as number[], (e) => (e.trashed = 1)),
    gallery_restore_many: (a) => each(a.ids as number[], (e) => (e.trashed = null)),
    gallery_favorite_many: (a) => each(a.ids as number[], (e) => (e.favorite = a.favorite as boolean)),
    gallery_ids_between: (a) => {
      const ids = visible(a.query as Query).map((e) => e.id);
      const [low, high] = [ids.indexOf(a.from as number), ids.indexOf(a.to as number)].sort((x, y) => x - y);
      if (low < 0) throw { field: null, message: "no such image" };
      if (high - low + 1 > 10_000) throw { field: "range", message: "the range holds more than 10000 images; select fewer" };
      return ids.slice(low, high + 1);
    },
  };
  return { entries, handlers, failing, boards: () => list() };
}

function setup(initial: Entry[], boardNames: string[] = [], extra: Record<string, Handler> = {}, pageSize?: number) {
  app.detail = null;
  app.view = "gallery";
  app.toasts = [];
  app.boards = [];
  const gallery = fakeGallery(initial, boardNames, pageSize);
  const calls = mockCore({ ...gallery.handlers, ...extra });
  return { gallery, calls };
}

const three = () => [entry(1, { prompt: "red fox" }), entry(2, { prompt: "blue whale" }), entry(3, { prompt: "green frog" })];
const shown = () => [...document.querySelectorAll<HTMLElement>('[data-testid^="gallery-item-"]')].map((c) => c.dataset.testid);
const cell = (id: number) => screen.getByTestId(`gallery-item-${id}`);
const board = (name: string) => screen.getByTestId(`board-${name}`);
/** The button that shows a board (named by the board and its count; its Rename and Delete are named apart). */
const boardButton = (name: string) => within(board(name)).getByRole("button", { name: new RegExp(`^${name}`) });
/** Deletes board `name` from the sidebar: its Delete, then the confirmation's "Delete board". */
async function deleteFromSidebar(name: string) {
  await fireEvent.click(screen.getByRole("button", { name: `Delete board ${name}` }));
  await fireEvent.click(within(screen.getByTestId("delete-board-confirm")).getByTestId("delete-board-yes"));
}

describe("Gallery boards", () => {
  it("the sidebar lists every board with its count; a board shows only its images, All images every one", async () => {
    const { calls } = setup([entry(1, { boards: ["Foxes"] }), entry(2), entry(3, { boards: ["Foxes"] })], ["Foxes", "Empty"]);
    render(Gallery);
    await waitFor(() => expect(shown()).toHaveLength(3));
    expect(boardButton("Foxes").textContent).toContain("2");
    expect(boardButton("Empty").textContent).toContain("0");
    await fireEvent.click(boardButton("Foxes"));
    await waitFor(() => expect(shown()).toEqual(["gallery-item-1", "gallery-item-3"]));
    expect(calls.some((c) => c.cmd === "gallery_page" && (c.args.query as Query).board === "Foxes")).toBe(true);
    expect(screen.getByTestId("gallery-count").textContent).toBe("2 images in “Foxes”");
    await fireEvent.click(screen.getByTestId("board-all"));
    await waitFor(() => expect(shown()).toHaveLength(3));
  });

  it("a new board is made from the sidebar and shown at once", async () => {
    const { calls } = setup(three());
    render(Gallery);
    await fireEvent.click(await screen.findByTestId("new-board"));
    const name = screen.getByTestId("new-board-name");
    expect(document.activeElement).toBe(name);
    await fireEvent.input(name, { target: { value: "  Keepers " } });
    await fireEvent.submit(name.closest("form")!);
    await waitFor(() => expect(calls.find((c) => c.cmd === "gallery_create_board")?.args).toEqual({ name: "Keepers" }));
    await waitFor(() => expect(boardButton("Keepers").getAttribute("aria-pressed")).toBe("true"));
    await waitFor(() => expect(shown()).toEqual([]));
    expect(screen.getByText(/“Keepers” is empty: drag images onto it/)).toBeTruthy();
  });

  it("a board the core refuses to make shows why, next to the name", async () => {
    setup(three(), [], {
      gallery_create_board: () => {
        throw { field: null, message: "a board named 'Keepers' already exists" };
      },
    });
    render(Gallery);
    await fireEvent.click(await screen.findByTestId("new-board"));
    await fireEvent.input(screen.getByTestId("new-board-name"), { target: { value: "Keepers" } });
    await fireEvent.submit(screen.getByTestId("new-board-name").closest("form")!);
    expect((await screen.findByTestId("board-error")).textContent).toContain("already exists");
  });

  it("a board is renamed in place (Esc leaves it as it was), and its images follow the new name", async () => {
    const { calls } = setup([entry(1, { boards: ["Foxes"] }), entry(2)], ["Foxes"]);
    render(Gallery);
    await waitFor(() => expect(shown()).toHaveLength(2));
    await fireEvent.click(screen.getByRole("button", { name: "Rename board Foxes" }));
    let input = screen.getByTestId("rename-board-name");
    await fireEvent.input(input, { target: { value: "Vixens" } });
    await fireEvent.keyDown(input, { key: "Escape" });
    expect(screen.queryByTestId("rename-board-name")).toBeNull();
    expect(calls.some((c) => c.cmd === "gallery_rename_board")).toBe(false);

    await fireEvent.click(boardButton("Foxes"));
    await waitFor(() => expect(shown()).toEqual(["gallery-item-1"]));
    await fireEvent.click(screen.getByRole("button", { name: "Rename board Foxes" }));
    input = screen.getByTestId("rename-board-name");
    await fireEvent.input(input, { target: { value: "Vixens" } });
    await fireEvent.submit(input.closest("form")!);
    await waitFor(() => expect(calls.find((c) => c.cmd === "gallery_rename_board")?.args).toEqual({ from: "Foxes", to: "Vixens" }));
    await waitFor(() => expect(screen.getByTestId("board-Vixens")).toBeTruthy());
    expect(screen.queryByTestId("board-Foxes")).toBeNull();
    // Still showing the same board, under its new name.
    await waitFor(() => expect(shown()).toEqual(["gallery-item-1"]));
    expect(screen.getByTestId("gallery-count").textContent).toBe("1 image in “Vixens”");
  });

  it("deleting a board asks first and says its images stay in the gallery", async () => {
    const { calls } = setup([entry(1, { boards: ["Foxes"] }), entry(2, { boards: ["Foxes"] })], ["Foxes"]);
    render(Gallery);
    await waitFor(() => expect(screen.getByTestId("board-Foxes")).toBeTruthy());
    await fireEvent.click(screen.getByRole("button", { name: "Delete board Foxes" }));
    const confirm = screen.getByTestId("delete-board-confirm");
    expect(confirm.textContent).toContain("Delete “Foxes”? Its 2 images stay in the gallery.");
    await fireEvent.click(within(confirm).getByRole("button", { name: "Keep" }));
    expect(calls.some((c) => c.cmd === "gallery_delete_board")).toBe(false);

    await fireEvent.click(screen.getByRole("button", { name: "Delete board Foxes" }));
    await fireEvent.click(screen.getByTestId("delete-board-yes"));
    await waitFor(() => expect(calls.find((c) => c.cmd === "gallery_delete_board")?.args).toEqual({ name: "Foxes" }));
    await waitFor(() => expect(screen.queryByTestId("board-Foxes")).toBeNull());
    expect(shown()).toHaveLength(2);
  });

  it("deleting a board can be undone: the message counts the images kept, and Undo brings the board back with them", async () => {
    const { gallery, calls } = setup([entry(1, { boards: ["Foxes"] }), entry(2), entry(3, { boards: ["Foxes", "Keepers"] })], ["Foxes", "Keepers"]);
    render(Gallery);
    render(Toasts);
    await waitFor(() => expect(boardButton("Foxes").textContent).toContain("2"));
    await deleteFromSidebar("Foxes");
    await waitFor(() => expect(screen.queryByTestId("board-Foxes")).toBeNull());
    const message = await screen.findByText("Deleted board “Foxes” (2 images kept in the gallery)");
    expect(gallery.entries.map((e) => e.boards)).toEqual([[], [], ["Keepers"]]);

    await fireEvent.click(within(message.closest<HTMLElement>(".toast")!).getByRole("button", { name: "Undo" }));
    await waitFor(() => expect(boardButton("Foxes").textContent).toContain("2"));
    expect(calls.find((c) => c.cmd === "gallery_create_board")?.args).toEqual({ name: "Foxes" });
    expect(calls.find((c) => c.cmd === "gallery_set_board")?.args).toEqual({ ids: [1, 3], board: "Foxes", on: true });
    expect(gallery.entries.map((e) => e.boards)).toEqual([["Foxes"], [], ["Keepers", "Foxes"]]);
    expect(await screen.findByText("Board “Foxes” is back with its 2 images")).toBeTruthy();
    await fireEvent.click(boardButton("Foxes"));
    await waitFor(() => expect(shown()).toEqual(["gallery-item-1", "gallery-item-3"]));
  });

  it("a board's images are all noted before it is deleted, however many pages they take, so Undo files every one back", async () => {
    const many = Array.from({ length: 7 }, (_, i) => entry(i + 1, { boards: i === 5 ? [] : ["Foxes"] }));
    // A core that answers at most three images a page: the board's six take two pages.
    const { gallery, calls } = setup(many, ["Foxes"], {}, 3);
    render(Gallery);
    await waitFor(() => expect(boardButton("Foxes").textContent).toContain("6"));
    await deleteFromSidebar("Foxes");
    await waitFor(() => expect(calls.some((c) => c.cmd === "gallery_delete_board")).toBe(true));
    const reads = calls.filter((c) => c.cmd === "gallery_page" && (c.args.query as Query).board === "Foxes");
    expect(reads.map((c) => (c.args.query as Query).cursor ?? null)).toEqual([null, "3"]);
    const undo = app.toasts.find((t) => t.action?.label === "Undo");
    expect(undo?.text).toBe("Deleted board “Foxes” (6 images kept in the gallery)");

    undo!.action!.run();
    await waitFor(() => expect(calls.find((c) => c.cmd === "gallery_set_board")?.args).toEqual({ ids: [1, 2, 3, 4, 5, 7], board: "Foxes", on: true }));
    expect(gallery.entries.filter((e) => e.boards.includes("Foxes")).map((e) => e.id)).toEqual([1, 2, 3, 4, 5, 7]);
    await waitFor(() => expect(boardButton("Foxes").textContent).toContain("6"));
  });

  it("Undo after a new board took the same name says calmly why the old one can't come back, and changes nothing", async () => {
    const { calls } = setup([entry(1, { boards: ["Foxes"] }), entry(2)], ["Foxes"]);
    render(Gallery);
    render(Toasts);
    await waitFor(() => expect(screen.getByTestId("board-Foxes")).toBeTruthy());
    await deleteFromSidebar("Foxes");
    const message = await screen.findByText("Deleted board “Foxes” (1 image kept in the gallery)");
    const undo = within(message.closest<HTMLElement>(".toast")!).getByRole("button", { name: "Undo" });

    // Meanwhile a new, empty board is made with the same name.
    await fireEvent.click(screen.getByTestId("new-board"));
    await fireEvent.input(screen.getByTestId("new-board-name"), { target: { value: "Foxes" } });
    await fireEvent.submit(screen.getByTestId("new-board-name").closest("form")!);
    await waitFor(() => expect(boardButton("Foxes").textContent).toContain("0"));

    await fireEvent.click(undo);
    const alert = await screen.findByRole("alert");
    expect(alert.textContent).toContain(
      "Can't bring back “Foxes”: a board of that name was made in the meantime. Its images are still in the gallery.",
    );
    expect(alert.textContent).not.toContain("exists already");
    expect(alert.textContent).not.toContain("[object Object]");
    expect(calls.some((c) => c.cmd === "gallery_set_board")).toBe(false);
    expect(boardButton("Foxes").textContent).toContain("0");
  });

  it("an image dragged onto a board is filed into it, and the board's count goes up", async () => {
    const { calls } = setup(three(), ["Keepers"]);
    render(Gallery);
    await waitFor(() => expect(shown()).toHaveLength(3));
    const transfer = dataTransfer();
    await fireEvent.dragStart(cell(2), { dataTransfer: transfer });
    const over = new Event("dragover", { bubbles: true, cancelable: true });
    Object.assign(over, { dataTransfer: transfer });
    board("Keepers").dispatchEvent(over);
    expect(over.defaultPrevented).toBe(true);
    await fireEvent.drop(board("Keepers"), { dataTransfer: transfer });
    await waitFor(() => expect(calls.find((c) => c.cmd === "gallery_set_board")?.args).toEqual({ ids: [2], board: "Keepers", on: true }));
    await waitFor(() => expect(boardButton("Keepers").textContent).toContain("1"));
    expect(app.toasts.map((t) => t.text)).toContain("1 image added to “Keepers”");
  });

  it("dragging one of the selected images files the whole selection", async () => {
    const { calls } = setup(three(), ["Keepers"]);
    render(Gallery);
    await waitFor(() => expect(shown()).toHaveLength(3));
    await fireEvent.click(cell(1), { ctrlKey: true });
    await fireEvent.click(cell(3), { metaKey: true });
    const transfer = dataTransfer();
    await fireEvent.dragStart(cell(3), { dataTransfer: transfer });
    await fireEvent.drop(board("Keepers"), { dataTransfer: transfer });
    await waitFor(() => expect(calls.find((c) => c.cmd === "gallery_set_board")?.args).toEqual({ ids: [1, 3], board: "Keepers", on: true }));
  });
});

describe("Gallery multi-select", () => {
  const isSelected = (id: number) => cell(id).getAttribute("aria-selected") === "true";

  it("Ctrl/Cmd+click selects without opening; Shift+click selects the range; the bar counts them", async () => {
    // (jsdom lays nothing out: the grid shows four cells, one a row.)
    const { calls } = setup([entry(1), entry(2), entry(3), entry(4)]);
    render(Gallery);
    await waitFor(() => expect(shown()).toHaveLength(4));
    expect(screen.queryByTestId("selection-bar")).toBeNull();
    await fireEvent.click(cell(2), { ctrlKey: true });
    expect(app.detail).toBeNull();
    expect(isSelected(2)).toBe(true);
    expect(screen.getByTestId("selection-count").textContent).toBe("1 selected");
    await fireEvent.click(cell(4), { shiftKey: true });
    await waitFor(() => expect([1, 2, 3, 4].map(isSelected)).toEqual([false, true, true, true]));
    expect(screen.getByTestId("selection-count").textContent).toBe("3 selected");
    // The core listed the range, under the grid's filters (not a page of them).
    const ranges = calls.filter((c) => c.cmd === "gallery_ids_between");
    expect(ranges).toHaveLength(1);
    expect(ranges[0].args).toMatchObject({ from: 2, to: 4 });
    expect(ranges[0].args.query).not.toHaveProperty("cursor");
    expect(ranges[0].args.query).not.toHaveProperty("limit");
    await fireEvent.click(cell(3), { ctrlKey: true });
    expect(isSelected(3)).toBe(false);
    // A plain click still opens the image.
    await fireEvent.click(cell(1));
    expect(app.detail).toBe(1);
    app.detail = null;
    await fireEvent.click(screen.getByTestId("clear-selection"));
    expect(screen.queryByTestId("selection-bar")).toBeNull();
    expect([1, 2, 3, 4].some(isSelected)).toBe(false);
  });

  it("in Select mode a click selects instead of opening, and Space toggles the focused image", async () => {
    setup(three());
    render(Gallery);
    await waitFor(() => expect(shown()).toHaveLength(3));
    await fireEvent.click(screen.getByTestId("select-mode"));
    await fireEvent.click(cell(1));
    expect(app.detail).toBeNull();
    expect(isSelected(1)).toBe(true);
    cell(2).focus();
    await fireEvent.keyDown(cell(2), { key: " " });
    expect(isSelected(2)).toBe(true);
    await fireEvent.keyDown(cell(2), { key: " " });
    expect(isSelected(2)).toBe(false);
    await fireEvent.keyDown(cell(2), { key: "Enter" });
    expect(app.detail).toBe(2);
  });

  it("bulk Favorite marks every selected image in one call to the core, and pressed again takes them all back", async () => {
    const { gallery, calls } = setup(three());
    render(Gallery);
    await waitFor(() => expect(shown()).toHaveLength(3));
    await fireEvent.click(cell(1), { ctrlKey: true });
    await fireEvent.click(cell(2), { ctrlKey: true });
    const button = screen.getByTestId("bulk-favorite");
    expect(button.textContent).toBe("★ Favorite");
    await fireEvent.click(button);
    await waitFor(() => expect(gallery.entries.map((e) => e.favorite)).toEqual([true, true, false]));
    await waitFor(() => expect(cell(1).getAttribute("aria-label")).toContain("(favorite)"));
    expect(button.textContent).toBe("☆ Unfavorite");
    expect(calls.filter((c) => c.cmd === "gallery_favorite_many").map((c) => c.args)).toEqual([{ ids: [1, 2], favorite: true }]);
    expect(app.toasts.map((t) => t.text)).toContain("2 images marked favorite");
    await fireEvent.click(button);
    await waitFor(() => expect(gallery.entries.map((e) => e.favorite)).toEqual([false, false, false]));
    expect(calls.filter((c) => c.cmd === "gallery_favorite_many").map((c) => c.args)).toEqual([
      { ids: [1, 2], favorite: true },
      { ids: [1, 2], favorite: false },
    ]);
    expect(calls.some((c) => c.cmd === "gallery_favorite")).toBe(false);
  });

  it("bulk Export copies the selected images into the folder picked, in one call, and says where", async () => {
    const { calls } = setup(three(), [], {
      "plugin:dialog|open": () => "/home/me/picked",
      gallery_export_many: (a) => (a.ids as number[]).map((id) => `/home/me/picked/${id}.png`),
    });
    render(Gallery);
    await waitFor(() => expect(shown()).toHaveLength(3));
    await fireEvent.click(cell(1), { ctrlKey: true });
    await fireEvent.click(cell(3), { ctrlKey: true });
    await fireEvent.click(screen.getByTestId("bulk-export"));
    await waitFor(() => expect(calls.filter((c) => c.cmd === "gallery_export_many").map((c) => c.args)).toEqual([{ ids: [1, 3], folder: "/home/me/picked" }]));
    await waitFor(() => expect(app.toasts.map((t) => t.text)).toContain("2 images exported to /home/me/picked"));
    // The selection stays (an export changes nothing in the gallery).
    expect(screen.getByTestId("selection-bar")).toBeTruthy();
  });

  it("bulk Export does nothing when no folder is picked", async () => {
    const { calls } = setup(three(), [], { "plugin:dialog|open": () => null, gallery_export_many: () => [] });
    render(Gallery);
    await waitFor(() => expect(shown()).toHaveLength(3));
    await fireEvent.click(cell(2), { ctrlKey: true });
    await fireEvent.click(screen.getByTestId("bulk-export"));
    await waitFor(() => expect(calls.some((c) => c.cmd === "plugin:dialog|open")).toBe(true));
    expect(calls.some((c) => c.cmd === "gallery_export_many")).toBe(false);
  });

  it("bulk Delete moves the selected images to the trash in one call, and Undo brings every one back in one call", async () => {
    const { calls } = setup(three());
    render(Gallery);
    await waitFor(() => expect(shown()).toHaveLength(3));
    await fireEvent.click(cell(1), { ctrlKey: true });
    await fireEvent.click(cell(3), { ctrlKey: true });
    await fireEvent.click(screen.getByTestId("bulk-delete"));
    await waitFor(() => expect(shown()).toEqual(["gallery-item-2"]));
    expect(screen.getByTestId("gallery-count").textContent).toBe("1 image");
    expect(screen.queryByTestId("selection-bar")).toBeNull();
    expect(calls.filter((c) => c.cmd === "gallery_delete_many").map((c) => c.args)).toEqual([{ ids: [1, 3] }]);
    const undo = app.toasts.find((t) => t.action?.label === "Undo");
    expect(undo?.text).toBe("2 images moved to the trash");
    undo!.action!.run();
    await waitFor(() => expect(shown()).toHaveLength(3));
    expect(calls.filter((c) => c.cmd === "gallery_restore_many").map((c) => c.args)).toEqual([{ ids: [1, 3] }]);
    expect(calls.some((c) => c.cmd === "gallery_delete" || c.cmd === "gallery_restore")).toBe(false);
  });

  it("a bulk Delete that fails partway says what the core said, shows what was done, and Undo brings back those", async () => {
    const { gallery, calls } = setup([1, 2, 3, 4, 5].map((id) => entry(id)));
    gallery.failing.add(3);
    render(Gallery);
    render(Toasts);
    await waitFor(() => expect(shown()).toHaveLength(4));
    await fireEvent.click(cell(1), { ctrlKey: true });
    await fireEvent.click(cell(4), { shiftKey: true });
    await waitFor(() => expect(screen.getByTestId("selection-count").textContent).toBe("4 selected"));
    await fireEvent.click(screen.getByTestId("bulk-delete"));
    // The Undo toast came last; the error folded behind it is flagged on the count and shown when opened.
    await waitFor(() => expect(screen.getByTestId("toasts-more").textContent).toBe("1 more message (1 error)"));
    await fireEvent.click(screen.getByTestId("toasts-more"));
    const alert = await screen.findByRole("alert");
    expect(alert.textContent).toContain("2 of 4 images done; image 3 failed: image 3 is locked by another program");
    expect(calls.filter((c) => c.cmd === "gallery_delete_many").map((c) => c.args)).toEqual([{ ids: [1, 2, 3, 4] }]);
    // The grid was read again: the two in the trash are gone; the two not done stay selected.
    await waitFor(() => expect(shown()).toEqual(["gallery-item-3", "gallery-item-4", "gallery-item-5"]));
    expect(screen.getByTestId("gallery-count").textContent).toBe("3 images");
    expect(screen.getByTestId("selection-count").textContent).toBe("2 selected");
    expect([3, 4, 5].map(isSelected)).toEqual([true, true, false]);
    const undo = app.toasts.find((t) => t.action?.label === "Undo");
    expect(undo?.text).toBe("2 images moved to the trash");
    undo!.action!.run();
    await waitFor(() => expect(screen.getByTestId("gallery-count").textContent).toBe("5 images"));
    expect(shown()).toEqual(["gallery-item-1", "gallery-item-2", "gallery-item-3", "gallery-item-4"]);
    expect(calls.filter((c) => c.cmd === "gallery_restore_many").map((c) => c.args)).toEqual([{ ids: [1, 2] }]);
  });

  it("a bulk Favorite that fails partway says what the core said, and the grid shows the ones it marked", async () => {
    const { gallery, calls } = setup(three());
    gallery.failing.add(3);
    render(Gallery);
    render(Toasts);
    await waitFor(() => expect(shown()).toHaveLength(3));
    for (const id of [1, 2, 3]) await fireEvent.click(cell(id), { ctrlKey: true });
    await fireEvent.click(screen.getByTestId("bulk-favorite"));
    const alert = await screen.findByRole("alert");
    expect(alert.textContent).toContain("2 of 3 images done; image 3 failed: image 3 is locked by another program");
    expect(calls.filter((c) => c.cmd === "gallery_favorite_many")).toHaveLength(1);
    await waitFor(() => expect(cell(2).getAttribute("aria-label")).toContain("(favorite)"));
    expect(cell(1).getAttribute("aria-label")).toContain("(favorite)");
    expect(cell(3).getAttribute("aria-label")).not.toContain("(favorite)");
    expect(app.toasts.map((t) => t.text).join()).not.toContain("marked favorite");
  });

  it("Shift+click selects every image between the two, loaded or not; the count includes them and one call acts on all", async () => {
    const many = Array.from({ length: 1500 }, (_, i) => entry(i + 1));
    const { gallery, calls } = setup(many);
    render(Gallery);
    await waitFor(() => expect(shown()).toHaveLength(4));
    await fireEvent.click(cell(1), { ctrlKey: true });
    // Far down the grid: only a screenful of cells is in the page.
    const scroller = screen.getByTestId("gallery-scroller");
    scroller.scrollTop = 1000 * (184 + 8);
    await fireEvent.scroll(scroller);
    await waitFor(() => expect(screen.getByTestId("gallery-item-1001")).toBeTruthy());
    const pages = calls.filter((c) => c.cmd === "gallery_page").length;
    await fireEvent.click(cell(1001), { shiftKey: true });
    await waitFor(() => expect(screen.getByTestId("selection-count").textContent).toBe("1,001 selected"));
    expect(shown().length).toBeLessThan(60);
    // The core listed them: no page was read for the selection.
    expect(calls.filter((c) => c.cmd === "gallery_page").length).toBe(pages);
    expect(calls.filter((c) => c.cmd === "gallery_ids_between").map((c) => [c.args.from, c.args.to])).toEqual([[1, 1001]]);

    await fireEvent.click(screen.getByTestId("bulk-favorite"));
    await waitFor(() => expect(gallery.entries.filter((e) => e.favorite)).toHaveLength(1001));
    const favorites = calls.filter((c) => c.cmd === "gallery_favorite_many");
    expect(favorites).toHaveLength(1);
    expect(favorites[0].args.ids).toEqual(many.slice(0, 1001).map((e) => e.id));
    expect(app.toasts.map((t) => t.text)).toContain("1,001 images marked favorite");
  });

  it("Shift+Space selects the range from the last image picked to the focused one, as Shift+click does", async () => {
    const { calls } = setup([entry(1), entry(2), entry(3), entry(4)]);
    render(Gallery);
    await waitFor(() => expect(shown()).toHaveLength(4));
    cell(1).focus();
    await fireEvent.keyDown(cell(1), { key: " ", ctrlKey: true });
    expect(isSelected(1)).toBe(true);
    cell(3).focus();
    await fireEvent.keyDown(cell(3), { key: " ", shiftKey: true });
    await waitFor(() => expect([1, 2, 3, 4].map(isSelected)).toEqual([true, true, true, false]));
    expect(screen.getByTestId("selection-count").textContent).toBe("3 selected");
    expect(app.detail).toBeNull();
    expect(calls.filter((c) => c.cmd === "gallery_ids_between").map((c) => [c.args.from, c.args.to])).toEqual([[1, 3]]);
  });

  it("a range the core refuses (over 10,000 images) shows its message and leaves the selection as it was", async () => {
    setup([entry(1), entry(2), entry(3)], [], {
      gallery_ids_between: () => {
        throw { field: "range", message: "the range holds more than 10000 images; select fewer" };
      },
    });
    render(Gallery);
    render(Toasts);
    await waitFor(() => expect(shown()).toHaveLength(3));
    await fireEvent.click(cell(1), { ctrlKey: true });
    await fireEvent.click(cell(3), { shiftKey: true });
    const alert = await screen.findByRole("alert");
    expect(alert.textContent).toContain("The range holds more than 10000 images; select fewer");
    expect(alert.textContent).not.toMatch(/range:/i);
    expect(screen.getByTestId("selection-count").textContent).toBe("1 selected");
    expect([1, 2, 3].map(isSelected)).toEqual([true, false, false]);
  });

  it("Add to board… opens towards the left when there is no room on its right, and to the right otherwise", async () => {
    setup(three(), ["Keepers"]);
    render(Gallery);
    await waitFor(() => expect(shown()).toHaveLength(3));
    await fireEvent.click(cell(1), { ctrlKey: true });
    Object.defineProperty(document.documentElement, "clientWidth", { value: 1024, configurable: true });
    const place = (left: number) =>
      vi.spyOn(HTMLElement.prototype, "getBoundingClientRect").mockReturnValue({ left, right: left + 230, top: 0, bottom: 200, width: 230, height: 200, x: left, y: 0, toJSON: () => ({}) } as DOMRect);
    try {
      // Where the window would place it: past the right edge at 1024 px, then well inside.
      for (const [left, right] of [[900, true], [300, false]] as const) {
        const rect = place(left);
        await fireEvent.click(screen.getByTestId("bulk-add-to-board"));
        await waitFor(() => expect(screen.getByTestId("bulk-add-to-board-list").classList.contains("right")).toBe(right));
        await fireEvent.click(screen.getByTestId("bulk-add-to-board"));
        rect.mockRestore();
      }
    } finally {
      delete (document.documentElement as { clientWidth?: number }).clientWidth;
    }
  });

  it("Add to board… files the selection into a board, a new one included; Remove from board takes it off", async () => {
    const { gallery, calls } = setup(three(), ["Keepers"]);
    render(Gallery);
    await waitFor(() => expect(shown()).toHaveLength(3));
    await fireEvent.click(cell(1), { ctrlKey: true });
    await fireEvent.click(cell(2), { ctrlKey: true });
    await fireEvent.click(screen.getByTestId("bulk-add-to-board"));
    const menu = screen.getByTestId("bulk-add-to-board-list");
    await fireEvent.click(within(menu).getByRole("button", { name: /Keepers/ }));
    await waitFor(() => expect(gallery.entries.map((e) => e.boards)).toEqual([["Keepers"], ["Keepers"], []]));
    expect(screen.queryByTestId("bulk-add-to-board-list")).toBeNull();

    await fireEvent.click(screen.getByTestId("bulk-add-to-board"));
    await fireEvent.input(screen.getByTestId("bulk-add-to-board-new"), { target: { value: "Night" } });
    await fireEvent.submit(screen.getByTestId("bulk-add-to-board-new").closest("form")!);
    await waitFor(() => expect(screen.getByTestId("board-Night")).toBeTruthy());
    expect(calls.filter((c) => c.cmd === "gallery_set_board").at(-1)?.args).toEqual({ ids: [1, 2], board: "Night", on: true });

    // Showing the board, "Remove from" takes the selection off it, and the images leave the view.
    await fireEvent.click(boardButton("Keepers"));
    await waitFor(() => expect(shown()).toEqual(["gallery-item-1", "gallery-item-2"]));
    await fireEvent.click(cell(2), { ctrlKey: true });
    await fireEvent.click(screen.getByTestId("bulk-remove-from-board"));
    await waitFor(() => expect(shown()).toEqual(["gallery-item-1"]));
    expect(gallery.entries[1].boards).toEqual(["Night"]);
  });

  it("Compare shows two selected images side by side or under a slider, with the parameters that differ marked", async () => {
    setup([entry(1, { seed: 10, steps: 4, prompt: "a fox" }), entry(2, { seed: 11, steps: 4, prompt: "a fox" }), entry(3)]);
    render(Gallery);
    await waitFor(() => expect(shown()).toHaveLength(3));
    await fireEvent.click(cell(1), { ctrlKey: true });
    expect(screen.getByTestId<HTMLButtonElement>("bulk-compare").disabled).toBe(true);
    await fireEvent.click(cell(2), { ctrlKey: true });
    await fireEvent.click(screen.getByTestId("bulk-compare"));
    const compare = await screen.findByTestId("compare");
    expect(screen.getByTestId<HTMLImageElement>("compare-left").src).toContain("image-1");
    expect(screen.getByTestId<HTMLImageElement>("compare-right").src).toContain("image-2");
    const rows = [...within(screen.getByTestId("compare-params")).getAllByRole("row")].slice(1);
    const differing = rows.filter((r) => r.dataset.differs === "true").map((r) => r.querySelector("th")?.textContent);
    expect(differing).toEqual(["Seed (differs)"]);

    await fireEvent.click(screen.getByTestId("compare-mode-slider"));
    const slider = screen.getByTestId<HTMLInputElement>("compare-slider");
    await fireEvent.input(slider, { target: { value: "30" } });
    expect(screen.getByTestId("compare-left").style.clipPath).toBe("inset(0 70% 0 0)");
    await fireEvent.click(screen.getByTestId("compare-swap"));
    expect(screen.getByTestId<HTMLImageElement>("compare-left").src).toContain("image-2");
    await fireEvent.keyDown(compare, { key: "Escape" });
    expect(screen.queryByTestId("compare")).toBeNull();
  });
});

describe("Gallery detail: boards and tags", () => {
  it("tags typed comma-separated become chips, saved through the core; ✕ takes one off", async () => {
    const { calls, gallery } = setup([entry(1, { tags: ["coast"] })]);
    render(Gallery);
    await fireEvent.click(await screen.findByTestId("gallery-item-1"));
    const input = await screen.findByTestId("tag-input");
    expect(screen.getAllByTestId("tag-chip").map((c) => c.textContent?.replace("✕", "").trim())).toEqual(["coast"]);
    await fireEvent.input(input, { target: { value: "night, Coast ,  long exposure" } });
    await fireEvent.keyDown(input, { key: "Enter" });
    await waitFor(() => expect(calls.find((c) => c.cmd === "gallery_set_tags")?.args).toEqual({ id: 1, tags: ["coast", "night", "long exposure"] }));
    await waitFor(() => expect(screen.getAllByTestId("tag-chip")).toHaveLength(3));
    expect((input as HTMLInputElement).value).toBe("");
    await fireEvent.click(screen.getByRole("button", { name: "Remove tag night" }));
    await waitFor(() => expect(screen.getAllByTestId("tag-chip")).toHaveLength(2));
    expect(gallery.entries[0].tags).toEqual(["coast", "long exposure"]);
  });

  it("the detail view files the image into a board from its menu, and its chip's ✕ takes it off", async () => {
    const { gallery } = setup([entry(1)], ["Keepers", "Night"]);
    render(Gallery);
    await fireEvent.click(await screen.findByTestId("gallery-item-1"));
    await screen.findByTestId("detail-boards");
    expect(screen.getByTestId("detail-boards").textContent).toContain("none");
    await fireEvent.click(screen.getByTestId("detail-add-to-board"));
    await fireEvent.click(within(screen.getByTestId("detail-add-to-board-list")).getByRole("button", { name: /Night/ }));
    await waitFor(() => expect(gallery.entries[0].boards).toEqual(["Night"]));
    await waitFor(() => expect(screen.getByTestId("detail-boards").textContent).toContain("Night"));
    // A board it is in is not offered again.
    await fireEvent.click(screen.getByTestId("detail-add-to-board"));
    const offered = within(screen.getByTestId("detail-add-to-board-list")).queryAllByRole("button", { name: /Night|Keepers/ });
    expect(offered.map((b) => b.textContent)).toEqual(["Keepers0"]);
    await fireEvent.keyDown(screen.getByTestId("detail-add-to-board-list"), { key: "Escape" });
    expect(screen.queryByTestId("detail-add-to-board-list")).toBeNull();
    expect(screen.getByTestId("detail")).toBeTruthy();
    await fireEvent.click(screen.getByRole("button", { name: "Remove from board Night" }));
    await waitFor(() => expect(gallery.entries[0].boards).toEqual([]));
  });
});

describe("Gallery images as init images", () => {
  it("a gallery image dropped on the Generate tab becomes the init image, and Generate shows", async () => {
    const { calls } = setup([entry(4, { width: 512, height: 512 })], [], { gallery_image_data: () => pngDataUrl(512, 512) });
    render(App);
    await waitFor(() => expect(screen.getByTestId("gallery-item-4")).toBeTruthy());
    const transfer = dataTransfer();
    await fireEvent.dragStart(cell(4), { dataTransfer: transfer });
    await fireEvent.drop(screen.getByTestId("nav-generate"), { dataTransfer: transfer });
    await waitFor(() => expect(app.view).toBe("generate"));
    expect(calls.find((c) => c.cmd === "gallery_image_data")?.args).toEqual({ id: 4 });
    expect(form.init_image).toBe(pngDataUrl(512, 512));
    expect(draft.init?.name).toBe("gallery image #4");
    expect((await screen.findByTestId("init-chip")).textContent).toContain("img2img: gallery image #4");
  });
});
