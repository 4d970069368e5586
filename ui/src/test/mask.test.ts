// The inpainting mask editor: the model (brush, eraser, invert, clear, undo) and the editor over the init image.
import { describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen, waitFor } from "@testing-library/svelte";
import Generate from "../panels/Generate.svelte";
import { app, form, start } from "../lib/state.svelte";
import { Mask, UNDO_STEPS } from "../lib/mask";
import { mockCore, pngFile } from "./fixtures";

const painted = (m: Mask) => m.data.reduce((n, v) => n + (v ? 1 : 0), 0);

describe("Mask: what the editor paints", () => {
  it("a stroke paints a round-ended band of the brush's width, and the eraser clears it", () => {
    const m = new Mask(40, 20);
    const touched = m.stroke(5, 10, 35, 10, 6);
    expect(touched).toEqual({ x: 2, y: 7, width: 37, height: 7 });
    expect(m.data[10 * 40 + 20]).toBe(255);
    expect(m.data[10 * 40 + 2]).toBe(255); // the round end, 3 px before the start
    expect(m.data[0]).toBe(0);
    expect(m.data[16 * 40 + 20]).toBe(0); // outside the band
    m.stroke(20, 10, 20, 10, 8, true);
    expect(m.data[10 * 40 + 20]).toBe(0);
    expect(m.data[10 * 40 + 10]).toBe(255);
  });

  it("invert swaps painted and kept; clear leaves nothing painted", () => {
    const m = new Mask(10, 10);
    m.stroke(0, 0, 0, 0, 4);
    const before = painted(m);
    m.invert();
    expect(painted(m)).toBe(100 - before);
    m.clear();
    expect(m.painted).toBe(false);
  });

  it("undo goes back one change at a time, at most UNDO_STEPS", () => {
    const m = new Mask(10, 10);
    for (let i = 0; i < UNDO_STEPS + 5; i++) {
      m.checkpoint();
      m.stroke(i % 10, 0, i % 10, 0, 1);
    }
    let undone = 0;
    while (m.undo()) undone++;
    expect(undone).toBe(UNDO_STEPS);
    expect(m.canUndo).toBe(false);
  });

  it("reads a mask image: light pixels are painted", () => {
    const rgba = [255, 255, 255, 255, 0, 0, 0, 255, 200, 180, 190, 255, 20, 20, 20, 255];
    expect(Array.from(Mask.fromRgba(2, 2, rgba).data)).toEqual([255, 0, 255, 0]);
    expect(Array.from(new Mask(2, 1, new Uint8Array([255, 0])).rgba())).toEqual([255, 255, 255, 255, 0, 0, 0, 255]);
  });
});

describe("Generate: the mask editor over the init image", () => {
  it("paints with brush and eraser, undoes, clears and inverts, and the form carries the mask it shows", async () => {
    app.current = null;
    app.jobs = {};
    app.own = {};
    mockCore({ generate: () => "job-m" });
    // No canvas in the test browser: strokes change the mask itself; its PNG is a stand-in.
    vi.spyOn(HTMLCanvasElement.prototype, "getContext").mockReturnValue(null);
    vi.spyOn(HTMLCanvasElement.prototype, "toDataURL").mockReturnValue("data:image/png;base64,TUFTSw==");
    await start();
    render(Generate);
    await screen.findByText("tiny");
    await fireEvent.click(screen.getByTestId("advanced-toggle"));
    await fireEvent.change(screen.getByTestId("init-image-input"), { target: { files: [pngFile("photo.png", 64, 64)] } });
    const image = await screen.findByAltText("Init image photo.png");
    Object.defineProperty(image, "naturalWidth", { value: 64 });
    Object.defineProperty(image, "naturalHeight", { value: 64 });
    await fireEvent.load(image);
    await fireEvent.click(screen.getByTestId("paint-mask"));

    const editor = await screen.findByTestId("mask-editor");
    const canvas = screen.getByTestId("mask-canvas");
    expect(screen.getByTestId<HTMLInputElement>("mask-brush").checked).toBe(true);
    expect(screen.getByTestId<HTMLButtonElement>("mask-undo").disabled).toBe(true);
    expect(screen.getByTestId<HTMLButtonElement>("mask-clear").disabled).toBe(true);

    // A stroke: the mask goes into the form; the brush's cursor follows the pointer.
    await fireEvent.pointerDown(canvas, { button: 0, buttons: 1, clientX: 10, clientY: 10, pointerId: 1 });
    await fireEvent.pointerMove(canvas, { buttons: 1, clientX: 30, clientY: 10, pointerId: 1 });
    await fireEvent.pointerUp(canvas, { button: 0, clientX: 30, clientY: 10, pointerId: 1 });
    expect(form.mask).toBe("data:image/png;base64,TUFTSw==");
    expect(screen.getByTestId("brush-cursor")).toBeTruthy();
    expect(screen.getByTestId<HTMLButtonElement>("mask-undo").disabled).toBe(false);

    // Undo takes the only stroke back: no mask, plain img2img.
    await fireEvent.keyDown(editor, { key: "z", ctrlKey: true });
    expect(form.mask).toBeNull();
    expect(screen.getByTestId<HTMLButtonElement>("mask-undo").disabled).toBe(true);

    // Invert paints everything; Clear leaves nothing (no mask); Undo brings the inverted one back.
    await fireEvent.click(screen.getByTestId("mask-invert"));
    expect(form.mask).not.toBeNull();
    await fireEvent.click(screen.getByTestId("mask-clear"));
    expect(form.mask).toBeNull();
    await fireEvent.click(screen.getByTestId("mask-undo"));
    expect(form.mask).not.toBeNull();

    // Keys: E eraser, B brush, [ and ] the size.
    await fireEvent.keyDown(editor, { key: "e" });
    expect(screen.getByTestId<HTMLInputElement>("mask-eraser").checked).toBe(true);
    await fireEvent.keyDown(editor, { key: "]" });
    expect(screen.getByTestId<HTMLInputElement>("mask-size").value).toBe("28");
    await fireEvent.keyDown(editor, { key: "b" });
    expect(screen.getByTestId<HTMLInputElement>("mask-brush").checked).toBe(true);

    await fireEvent.click(screen.getByTestId("mask-done"));
    await waitFor(() => expect(screen.queryByTestId("mask-editor")).toBeNull());
    expect(screen.getByTestId("paint-mask").textContent).toContain("Edit mask");
    vi.restoreAllMocks();
  });
});
