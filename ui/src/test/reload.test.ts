// What a reload (Ctrl+R) keeps: the window forgot the ids of the jobs it started, the queue still tells their source.
import { describe, expect, it } from "vitest";
import { fireEvent, render, screen, waitFor } from "@testing-library/svelte";
import Generate from "../panels/Generate.svelte";
import App from "../App.svelte";
import { app, start } from "../lib/state.svelte";
import type { JobEvent } from "../lib/bindings";
import { jobInfo, mockCore } from "./fixtures";

function sampling(id: string): JobEvent {
  return { job_id: id, elapsed_seconds: 4, percent: null, eta_seconds: 10, phase: "sampling", image: 1, images: 1, step: 3, steps: 8, seconds_per_step: 1 };
}

function reset() {
  app.current = null;
  app.jobs = {};
  app.own = {};
  app.queue = [];
  app.view = "generate";
  app.detail = null;
}

describe("Generate after a reload", () => {
  it("shows the progress of a running job the app started (source app) though the window forgot its id", async () => {
    reset();
    mockCore({ queue: () => [jobInfo("job-app", { state: "running", position: null, source: "app", last_event: sampling("job-app") })] });
    await start();
    render(Generate);
    expect(await screen.findByTestId("job-step")).toBeTruthy();
    expect(screen.getByTestId("job-step").textContent).toBe("step 3/8");
    expect(app.current).toBe("job-app");
  });

  it("leaves a running job from the API out (it shows in the Queue only)", async () => {
    reset();
    mockCore({ queue: () => [jobInfo("job-api", { state: "running", position: null, source: "api", last_event: sampling("job-api") })] });
    await start();
    render(Generate);
    await screen.findByTestId("prompt");
    expect(screen.queryByTestId("job-step")).toBeNull();
    expect(screen.queryByTestId("cancel")).toBeNull();
    expect(app.current).toBeNull();
  });

  it("Esc cancels the app's running job after a reload", async () => {
    reset();
    const calls = mockCore({
      cancel_job: () => true,
      queue: () => [jobInfo("job-app", { state: "running", position: null, source: "app", last_event: sampling("job-app") })],
    });
    render(App);
    await screen.findByTestId("job-step");
    await fireEvent.keyDown(window, { key: "Escape" });
    await waitFor(() => expect(calls.find((c) => c.cmd === "cancel_job")?.args).toEqual({ id: "job-app" }));
  });

  it("Esc never cancels the API's running job after a reload; the app's queued one is the window's again", async () => {
    reset();
    const calls = mockCore({
      cancel_job: () => true,
      queue: () => [
        jobInfo("job-api", { state: "running", position: null, source: "api", last_event: sampling("job-api") }),
        jobInfo("job-app", { state: "queued", position: 0, source: "app" }),
      ],
    });
    render(App);
    await screen.findByTestId("prompt");
    await waitFor(() => expect(app.own["job-app"]).toBe(true));
    expect(app.own["job-api"]).toBeUndefined();
    expect(screen.queryByTestId("job-step")).toBeNull();
    await fireEvent.keyDown(window, { key: "Escape" });
    await new Promise((r) => setTimeout(r, 20));
    expect(calls.some((c) => c.cmd === "cancel_job")).toBe(false);
  });
});
