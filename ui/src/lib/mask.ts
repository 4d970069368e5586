// The inpainting mask as the editor holds it: one value per pixel of the init image (255 = repaint, 0 = keep), with
// the brush's strokes, the eraser, invert, clear and an undo history. Kept apart from the canvas so it is plain data
// (tested without a browser); the editor draws it with `rgba()` and saves it as a PNG.

/** How many steps Undo goes back. */
export const UNDO_STEPS = 30;

export class Mask {
  readonly width: number;
  readonly height: number;
  data: Uint8Array;
  private history: Uint8Array[] = [];

  constructor(width: number, height: number, data?: Uint8Array) {
    this.width = width;
    this.height = height;
    this.data = data && data.length === width * height ? data : new Uint8Array(width * height);
  }

  /** A mask from an image's pixels (RGBA, as a canvas gives them): light pixels are painted. */
  static fromRgba(width: number, height: number, rgba: ArrayLike<number>): Mask {
    const data = new Uint8Array(width * height);
    for (let i = 0; i < data.length; i++) {
      const light = (rgba[i * 4] + rgba[i * 4 + 1] + rgba[i * 4 + 2]) / 3;
      data[i] = light >= 128 ? 255 : 0;
    }
    return new Mask(width, height, data);
  }

  /** Whether Undo has anything to bring back. */
  get canUndo(): boolean {
    return this.history.length > 0;
  }

  /** Whether any pixel is painted. */
  get painted(): boolean {
    return this.data.some((v) => v !== 0);
  }

  /** Keeps the mask as it is now for Undo; called before each change (a stroke, invert, clear). */
  checkpoint(): void {
    this.history.push(this.data.slice());
    if (this.history.length > UNDO_STEPS) this.history.shift();
  }

  /** Back to before the last change; false when there is none. */
  undo(): boolean {
    const previous = this.history.pop();
    if (!previous) return false;
    this.data = previous;
    return true;
  }

  /**
   * A stroke of the round brush (diameter `size` pixels of the image) from one point to another, painting or (with
   * `erase`) clearing. Answers the rectangle it touched, for a partial redraw.
   */
  stroke(x0: number, y0: number, x1: number, y1: number, size: number, erase = false): Rect {
    const r = Math.max(0.5, size / 2);
    const value = erase ? 0 : 255;
    const left = Math.max(0, Math.floor(Math.min(x0, x1) - r));
    const top = Math.max(0, Math.floor(Math.min(y0, y1) - r));
    const right = Math.min(this.width - 1, Math.ceil(Math.max(x0, x1) + r));
    const bottom = Math.min(this.height - 1, Math.ceil(Math.max(y0, y1) + r));
    const dx = x1 - x0;
    const dy = y1 - y0;
    const length2 = dx * dx + dy * dy;
    for (let y = top; y <= bottom; y++) {
      for (let x = left; x <= right; x++) {
        // Distance from the pixel's centre to the segment.
        const px = x + 0.5;
        const py = y + 0.5;
        const t = length2 === 0 ? 0 : Math.max(0, Math.min(1, ((px - x0) * dx + (py - y0) * dy) / length2));
        const cx = x0 + t * dx - px;
        const cy = y0 + t * dy - py;
        if (cx * cx + cy * cy <= r * r) this.data[y * this.width + x] = value;
      }
    }
    return { x: left, y: top, width: Math.max(0, right - left + 1), height: Math.max(0, bottom - top + 1) };
  }

  /** Painted becomes kept and kept painted. */
  invert(): void {
    for (let i = 0; i < this.data.length; i++) this.data[i] = 255 - this.data[i];
  }

  /** Nothing painted. */
  clear(): void {
    this.data.fill(0);
  }

  /** RGBA pixels of `rect` (the whole mask by default): white where painted, black elsewhere, opaque. */
  rgba(rect: Rect = { x: 0, y: 0, width: this.width, height: this.height }): Uint8ClampedArray<ArrayBuffer> {
    const out = new Uint8ClampedArray(rect.width * rect.height * 4);
    for (let y = 0; y < rect.height; y++) {
      for (let x = 0; x < rect.width; x++) {
        const v = this.data[(rect.y + y) * this.width + rect.x + x];
        const o = (y * rect.width + x) * 4;
        out[o] = v;
        out[o + 1] = v;
        out[o + 2] = v;
        out[o + 3] = 255;
      }
    }
    return out;
  }
}

export interface Rect {
  x: number;
  y: number;
  width: number;
  height: number;
}
