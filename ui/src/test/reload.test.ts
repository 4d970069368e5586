// What a reload (Ctrl+R) keeps: the window forgot the ids of the jobs it started, the queue still tells their source.
import { describe, expect, it } from "vitest";
import { fireEvent, render, screen, waitFor, within } from "@testing-library/svelte";
import { emit } from "@tauri-apps/api/event";
import Generate from "../panels/Generate.svelte";
import App from "../App.svelte";
import Toasts from "../components/Toasts.svelte";
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
  app.toasts = [];
}

/** A queue after a reload: the API's job runs, Open WebUI's waits next, and the app's own waits behind them. */
function queueWithAppWaiting() {
  return [
    jobInfo("job-api", { state: "running", position: null, source: "api", last_event: sampling("job-api") }),
    jobInfo("job-webui", { state: "queued", position: 1, source: "openai", prompt: "a cat for the chat" }),
    jobInfo("job-app", { state: "queued", position: 2, source: "app", prompt: "a lighthouse at dusk" }),
  ];
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

  it("Esc never cancels the API's running job after a reload: it cancels the app's waiting job, which is the window's again", async () => {
    reset();
    const calls = mockCore({
      cancel_job: () => true,
      queue: () => [
        jobInfo("job-api", { state: "running", position: null, source: "api", last_event: sampling("job-api") }),
        jobInfo("job-app", { state: "queued", position: 1, source: "app" }),
      ],
    });
    render(App);
    await screen.findByTestId("prompt");
    await waitFor(() => expect(app.own["job-app"]).toBe(true));
    expect(app.own["job-api"]).toBeUndefined();
    expect(screen.queryByTestId("job-step")).toBeNull();
    expect((await screen.findByTestId("job-phase")).textContent).toBe("Waiting (1 ahead)");
    await fireEvent.keyDown(window, { key: "Escape" });
    await waitFor(() => expect(calls.filter((c) => c.cmd === "cancel_job").map((c) => c.args)).toEqual([{ id: "job-app" }]));
  });

  it("shows at once a job the app sent that still waits after a reload: waiting, its place in line, and its prompt", async () => {
    reset();
    mockCore({ queue: queueWithAppWaiting });
    await start();
    render(Generate);
    expect((await screen.findByTestId("job-phase")).textContent).toBe("Waiting (2 ahead)");
    expect(screen.getByTestId("job-prompt").textContent).toBe("a lighthouse at dusk");
    expect(screen.getByTestId("progress").textContent).toContain("Waiting for the first step…");
    expect(screen.queryByTestId("job-step")).toBeNull();
    expect(screen.getByTestId("cancel")).toBeTruthy();
    // Open WebUI's waiting job and the API's running one stay out.
    expect(screen.getByTestId("progress").textContent).not.toContain("a cat for the chat");
    expect(app.own["job-webui"]).toBeUndefined();
  });

  it("the app's waiting job after a reload says when it is next, and Generate follows it once it starts", async () => {
    reset();
    mockCore({ queue: queueWithAppWaiting });
    await start();
    render(Generate);
    await screen.findByTestId("job-phase");
    await emit("job-update", { job_id: "job-app", elapsed_seconds: 30, percent: null, eta_seconds: null, phase: "queued", position: 0 });
    await waitFor(() => expect(screen.getByTestId("job-phase").textContent).toBe("Next in line"));
    await emit("job-update", sampling("job-app"));
    await waitFor(() => expect(screen.getByTestId("job-step").textContent).toBe("step 3/8"));
    expect(screen.getByTestId("job-prompt").textContent).toBe("a lighthouse at dusk");
  });

  it("Cancel on the app's waiting job after a reload cancels it and offers Undo, as for a job sent from this window", async () => {
    reset();
    const calls = mockCore({ cancel_job: () => true, queue: queueWithAppWaiting });
    await start();
    render(Generate);
    render(Toasts);
    await fireEvent.click(await screen.findByTestId("cancel"));
    await waitFor(() => expect(calls.filter((c) => c.cmd === "cancel_job").map((c) => c.args)).toEqual([{ id: "job-app" }]));
    const toast = (await screen.findByText("Job cancelled")).closest<HTMLElement>(".toast")!;
    expect(within(toast).getByRole("button", { name: "Undo" })).toBeTruthy();
  });
});
