import { afterEach, vi } from "vitest";
import { flushSync } from "svelte";
import { cleanup } from "@testing-library/svelte";
import { clearMocks } from "@tauri-apps/api/mocks";
import { app, draft, emptyForm, form, sections } from "../lib/state.svelte";
import { resetUpscaling } from "../lib/upscale.svelte";
import { resetRefining } from "../lib/refine.svelte";

// jsdom lacks these; the panels use them.
if (!window.matchMedia) {
  window.matchMedia = ((query: string) => ({
    matches: false,
    media: query,
    addEventListener() {},
    removeEventListener() {},
  })) as unknown as typeof window.matchMedia;
}

// jsdom has no layout, so nothing ever resizes: an observer that never fires is what it would do.
if (!("ResizeObserver" in window)) {
  class ResizeObserver {
    observe() {}
    unobserve() {}
    disconnect() {}
  }
  (window as unknown as { ResizeObserver: unknown }).ResizeObserver = ResizeObserver;
  (globalThis as unknown as { ResizeObserver: unknown }).ResizeObserver = ResizeObserver;
}

afterEach(() => {
  cleanup();
  clearMocks();
  vi.unstubAllGlobals();
  vi.restoreAllMocks();
  vi.useRealTimers();
  // The form is shared and saved in the storage as it changes: each test starts from an empty one.
  Object.assign(form, emptyForm());
  Object.assign(draft, { seedLocked: false, init: null, control: null });
  // The lanes are read with the queue: none until a test's core reports some.
  app.lanes = [];
  // So are the form's open sections.
  Object.assign(sections, { advanced: false, memory: false, hires: false, control: false });
  // The upscaler picked is kept for the session: each test starts a new one.
  resetUpscaling();
  // So is the refine strength.
  resetRefining();
  flushSync();
  localStorage.clear();
});
