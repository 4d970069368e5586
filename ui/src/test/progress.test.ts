import { describe, expect, it } from "vitest";
import type { JobEvent } from "../lib/bindings";
import { etaLeft, progressKey, samplingStatus, smoothEta, stagePercent, stepEta } from "../lib/progress";
import { acceptedSize, imageSize } from "../lib/images";
import { pngBytes } from "./fixtures";

const at = (stage: Partial<JobEvent> & Pick<JobEvent, "phase">): JobEvent =>
  ({ job_id: "j", elapsed_seconds: 99, percent: 87, eta_seconds: null, ...stage }) as JobEvent;

const sampling = (step: number, steps: number, image = 1, images = 1) =>
  at({ phase: "sampling", step, steps, image, images, seconds_per_step: 0.5 });

describe("Progress percent", () => {
  it("comes from the phase and the steps, whatever the core's time-based percent says", () => {
    expect(stagePercent(at({ phase: "queued", position: 2 }), null)).toBe(0);
    expect(stagePercent(sampling(0, 10), null)).toBe(12);
    expect(stagePercent(sampling(5, 10), null)).toBeCloseTo(53.5);
    expect(stagePercent(sampling(10, 10), null)).toBe(95);
    expect(stagePercent(at({ phase: "decoding" }), 95)).toBe(95);
    expect(stagePercent(at({ phase: "done", outputs: [] }), 95)).toBe(100);
  });

  it("shares the sampling among the images of a batch", () => {
    expect(stagePercent(sampling(10, 10, 1, 2), null)).toBeCloseTo(53.5);
    expect(stagePercent(sampling(0, 10, 2, 2), 53.5)).toBeCloseTo(53.5);
    expect(stagePercent(sampling(5, 10, 2, 2), 53.5)).toBeCloseTo(74.25);
  });

  it("never goes back while the job runs (a model part loaded after sampling began)", () => {
    const loading = at({ phase: "loading_model", part: 2, tensors_loaded: 10, tensors_total: 100 });
    expect(stagePercent(loading, 40)).toBe(40);
    expect(stagePercent(at({ phase: "preview", image: 1, step: 3, width: 8, height: 8, png_base64: "" }), 40)).toBe(40);
    expect(stagePercent(at({ phase: "warning", message: "x" }), 40)).toBe(40);
  });

  it("counts loading by tensors within its share", () => {
    expect(stagePercent(at({ phase: "loading_model", part: 1, tensors_loaded: 50, tensors_total: 100 }), 0)).toBe(6.5);
  });
});

describe("ETA", () => {
  it("counts down from the last estimate, never below zero", () => {
    expect(etaLeft(10, 1_000, 1_000)).toBe(10);
    expect(etaLeft(10, 1_000, 4_000)).toBe(7);
    expect(etaLeft(10, 1_000, 60_000)).toBe(0);
    expect(etaLeft(null, 1_000, 4_000)).toBeNull();
  });

  it("counts the ETA down through noisy estimates, and takes one that parts from it", () => {
    // What a real-window session read on an 80-step job, an estimate every half second.
    const estimates = [22, 18, 21, 20, 23, 22, 22, 21, 19, 18];
    let eta: number | null = null;
    let at = 0;
    const shown: number[] = [];
    estimates.forEach((estimate, i) => {
      const now = i * 500;
      eta = smoothEta(etaLeft(eta, at, now), estimate);
      at = now;
      shown.push(eta!);
    });
    expect(shown[0]).toBe(22);
    for (let i = 1; i < shown.length; i++) expect(shown[i]).toBeCloseTo(shown[i - 1] - 0.5);
    // A real slowdown (or speed-up) is taken as it is; so is an estimate once the countdown ran out.
    expect(smoothEta(10, 20)).toBe(20);
    expect(smoothEta(40, 20)).toBe(20);
    expect(smoothEta(0.5, 6)).toBe(6);
    expect(smoothEta(10, null)).toBeNull();
  });

  it("without the core's estimate, is the steps left at the last step rate", () => {
    expect(stepEta(sampling(4, 10))).toBe(3);
    expect(stepEta(sampling(4, 10, 1, 2))).toBe(8);
    expect(stepEta(at({ phase: "decoding" }))).toBeNull();
  });

  it("is announced per phase, and per quarter while sampling", () => {
    expect(progressKey("decoding", 96)).toBe("decoding");
    expect(progressKey("sampling", 12)).toBe(progressKey("sampling", 24));
    expect(progressKey("sampling", 24)).not.toBe(progressKey("sampling", 26));
  });
});

describe("Sampling status", () => {
  const hires = (step: number, pass: number | undefined, passes: number | undefined, image = 1, images = 1) =>
    at({ phase: "sampling", step, steps: 8, image, images, seconds_per_step: 0.5, pass, passes }) as Extract<JobEvent, { phase: "sampling" }>;

  it("names the hires pass: pass 1 of 2 during the first, pass 2 of 2 during the second", () => {
    expect(samplingStatus(hires(2, 1, 2))).toBe("Sampling — pass 1 of 2");
    expect(samplingStatus(hires(5, 2, 2))).toBe("Sampling — pass 2 of 2");
    expect(samplingStatus(hires(5, 2, 2, 2, 3))).toBe("Sampling — image 2 of 3, pass 2 of 2");
  });

  it("says nothing about passes without a hires fix: pass 1 of 1 and absent fields read as before", () => {
    expect(samplingStatus(hires(5, 1, 1))).toBe("Sampling");
    expect(samplingStatus(hires(5, undefined, undefined))).toBe("Sampling");
    expect(samplingStatus(hires(5, 1, 1, 2, 3))).toBe("Sampling image 2 of 3");
    expect(samplingStatus(sampling(5, 8, 2, 3) as Extract<JobEvent, { phase: "sampling" }>)).toBe("Sampling image 2 of 3");
  });

  it("announces the start of the hires pass even within a quarter, and nothing new without one", () => {
    expect(progressKey("sampling", 52, 1)).toBe(progressKey("sampling", 52));
    expect(progressKey("sampling", 53, 2)).not.toBe(progressKey("sampling", 52, 1));
    expect(progressKey("sampling", 53, 2)).toBe(progressKey("sampling", 60, 2));
  });
});

describe("Image sizes", () => {
  it("reads a PNG's, a JPEG's and a WebP's size from its header", () => {
    expect(imageSize(pngBytes(768, 512))).toEqual({ width: 768, height: 512 });
    // JPEG: SOI, an APP0 segment, then SOF0 with height 300 and width 400.
    const jpeg = new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 0, 4, 0, 0, 0xff, 0xc0, 0, 11, 8, 0x01, 0x2c, 0x01, 0x90, 3, 0, 0, 0]);
    expect(imageSize(jpeg)).toEqual({ width: 400, height: 300 });
    // WebP (VP8X): canvas 1024×640 stored minus one, little-endian, 24 bits.
    const webp = new Uint8Array(30);
    webp.set([...new TextEncoder().encode("RIFF"), 0, 0, 0, 0, ...new TextEncoder().encode("WEBPVP8X")]);
    webp.set([0xff, 0x03, 0x00, 0x7f, 0x02, 0x00], 24);
    expect(imageSize(webp)).toEqual({ width: 1024, height: 640 });
    expect(imageSize(new TextEncoder().encode("hello, not an image at all"))).toBeNull();
  });

  it("offers the nearest size the engine accepts: multiples of 64, at most 2048 a side, aspect kept", () => {
    expect(acceptedSize({ width: 768, height: 512 })).toEqual({ width: 768, height: 512 });
    expect(acceptedSize({ width: 1000, height: 750 })).toEqual({ width: 1024, height: 768 });
    expect(acceptedSize({ width: 4000, height: 3000 })).toEqual({ width: 2048, height: 1536 });
    expect(acceptedSize({ width: 20, height: 20 })).toEqual({ width: 64, height: 64 });
  });
});
