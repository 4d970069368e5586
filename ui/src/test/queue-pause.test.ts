// Pausing the queue, taking back a cancelled waiting job (Undo), and running a failed or cancelled job again.
import { beforeEach, describe, expect, it } from "vitest";
import { fireEvent, render, screen, waitFor, within } from "@testing-library/svelte";
import { emit } from "@tauri-apps/api/event";
import Queue from "../panels/Queue.svelte";
import App from "../App.svelte";
import Progress from "../components/Progress.svelte";
import Toasts from "../components/Toasts.svelte";
import { app, refreshQueue, start } from "../lib/state.svelte";
import type { JobInfo } from "../lib/bindings";
import { jobInfo, mockCore } from "./fixtures";

const BANNER = "Queue paused: the running job finishes, waiting jobs start when you resume.";

beforeEach(() => {
  app.paused = false;
  app.toasts = [];
  app.jobs = {};
  app.own = {};
  app.current = null;
  app.queue = [];
  app.history = [];
});

describe("Queue: pause and resume", () => {
  it("Pause asks the core to pause, shows the banner, and Resume takes it away", async () => {
    const calls = mockCore();
    render(Queue);
    expect(screen.queryByText(BANNER)).toBeNull();
    await fireEvent.click(screen.getByRole("button", { name: "Pause queue" }));
    await waitFor(() => expect(screen.getByTestId("queue-paused-banner").textContent).toBe(BANNER));
    expect(calls.filter((c) => c.cmd === "set_queue_paused").map((c) => c.args)).toEqual([{ paused: true }]);
    await waitFor(() => expect(screen.getByTestId("queue-status").textContent).toBe("Queue paused"));
    await fireEvent.click(screen.getByRole("button", { name: "Resume queue" }));
    await waitFor(() => expect(screen.queryByTestId("queue-paused-banner")).toBeNull());
    expect(calls.filter((c) => c.cmd === "set_queue_paused").map((c) => c.args)).toEqual([{ paused: true }, { paused: false }]);
    expect(screen.getByRole("button", { name: "Pause queue" })).toBeTruthy();
  });

  it("starts paused when the core says so", async () => {
    mockCore({ queue_paused: () => true });
    await start();
    expect(app.paused).toBe(true);
    render(Queue);
    expect(screen.getByTestId("queue-paused-banner")).toBeTruthy();
    expect(screen.getByRole("button", { name: "Resume queue" })).toBeTruthy();
  });

  it("follows a pause or resume from another door (the HTTP API), in the panel and on the Queue tab", async () => {
    app.view = "queue";
    mockCore();
    render(App);
    await screen.findByRole("button", { name: "Pause queue" });
    expect(screen.queryByTestId("nav-queue-paused")).toBeNull();
    await emit("queue-paused", true);
    await waitFor(() => expect(screen.getByTestId("queue-paused-banner")).toBeTruthy());
    expect(screen.getByRole("button", { name: "Resume queue" })).toBeTruthy();
    expect(screen.getByTestId("nav-queue-paused").textContent).toBe("paused");
    await emit("queue-paused", false);
    await waitFor(() => expect(screen.queryByTestId("queue-paused-banner")).toBeNull());
    expect(screen.queryByTestId("nav-queue-paused")).toBeNull();
    expect(screen.getByRole("button", { name: "Pause queue" })).toBeTruthy();
  });
});

describe("Queue: cancel with Undo", () => {
  /** A running job and three waiting ones; cancel takes a job out, requeue puts a new one back at its place. */
  function core(overrides: Record<string, (args: Record<string, unknown>) => unknown> = {}) {
    let jobs: JobInfo[] = [
      jobInfo("run", { state: "running", position: null }),
      jobInfo("w1", { position: 0 }),
      jobInfo("w2", { position: 1 }),
      jobInfo("w3", { position: 2 }),
    ];
    const calls = mockCore({
      queue: () => jobs,
      cancel_job: (a) => {
        jobs = jobs.filter((j) => j.id !== a.id);
        return true;
      },
      requeue_job: (a) => {
        const waiting = jobs.filter((j) => j.state === "queued");
        const at = (a.position as number | null) ?? waiting.length;
        waiting.splice(at, 0, jobInfo("again-1", { prompt: "prompt of w2" }));
        jobs = [...jobs.filter((j) => j.state !== "queued"), ...waiting];
        return "again-1";
      },
      ...overrides,
    });
    return calls;
  }

  it("cancelling a waiting job offers Undo, which puts it back where it stood", async () => {
    app.own = { w2: true };
    const calls = core();
    await refreshQueue();
    render(Queue);
    render(Toasts);
    await fireEvent.click(screen.getByRole("button", { name: "Cancel job 3: prompt of w2" }));
    await waitFor(() => expect(screen.getAllByTestId("queue-waiting")).toHaveLength(2));
    expect(calls.find((c) => c.cmd === "cancel_job")?.args).toEqual({ id: "w2" });
    const toast = screen.getByText("Job cancelled").closest(".toast") as HTMLElement;
    await fireEvent.click(within(toast).getByRole("button", { name: "Undo" }));
    await waitFor(() => expect(calls.find((c) => c.cmd === "requeue_job")?.args).toEqual({ id: "w2", position: 1 }));
    // The new job shows in the queue, at the old place, and it is this window's own as the old one was.
    await waitFor(() => expect(screen.getAllByTestId("queue-waiting")).toHaveLength(3));
    expect(screen.getAllByTestId("queue-waiting")[1].textContent).toContain("this window");
    expect(app.own["again-1"]).toBe(true);
    expect(screen.queryByText("Job cancelled")).toBeNull();
  });

  it("cancelling another client's waiting job says its client was told, and offers it again as a new job, not an undo", async () => {
    app.own = {};
    const calls = core();
    await refreshQueue();
    render(Queue);
    render(Toasts);
    const w2 = app.queue.find((j) => j.id === "w2")!;
    w2.source = "api";
    await fireEvent.click(screen.getByRole("button", { name: "Cancel job 3: prompt of w2" }));
    const toast = (await screen.findByText("Job cancelled; the client that sent it was told")).closest(".toast") as HTMLElement;
    expect(within(toast).queryByRole("button", { name: "Undo" })).toBeNull();
    await fireEvent.click(within(toast).getByRole("button", { name: "Queue it again as a new job" }));
    await waitFor(() => expect(calls.find((c) => c.cmd === "requeue_job")?.args).toEqual({ id: "w2", position: 1 }));
  });

  it("the running job's Cancel offers no Undo", async () => {
    core();
    await refreshQueue();
    render(Queue);
    render(Toasts);
    await fireEvent.click(screen.getByRole("button", { name: "Cancel job 1: prompt of run" }));
    await waitFor(() => expect(screen.queryByTestId("queue-running")).toBeNull());
    expect(screen.queryByRole("button", { name: "Undo" })).toBeNull();
  });

  it("a refused Undo shows the core's message as an error", async () => {
    core({
      requeue_job: () => {
        throw { field: null, message: "job w1 is too old to be queued again" };
      },
    });
    await refreshQueue();
    render(Queue);
    render(Toasts);
    await fireEvent.click(screen.getByRole("button", { name: "Cancel job 2: prompt of w1" }));
    await fireEvent.click(await screen.findByRole("button", { name: "Undo" }));
    const alert = await screen.findByRole("alert");
    expect(alert.textContent).toContain("job w1 is too old to be queued again");
  });

  it("Generate's Cancel on a waiting job of its own offers Undo too", async () => {
    app.own = { w3: true };
    const calls = core();
    await refreshQueue();
    render(Progress, { job: app.jobs.w3 });
    render(Toasts);
    await fireEvent.click(screen.getByTestId("cancel"));
    await fireEvent.click(await screen.findByRole("button", { name: "Undo" }));
    await waitFor(() => expect(calls.find((c) => c.cmd === "requeue_job")?.args).toEqual({ id: "w3", position: 2 }));
    expect(app.own["again-1"]).toBe(true);
  });
});

describe("Queue: run a finished job again", () => {
  const history = () => [
    jobInfo("done-1", { state: "done", prompt: "a harbour", outputs: [{ path: "/o/1.png", seed: 1, width: 64, height: 64, gallery_id: 7 }] }),
    jobInfo("failed-1", { state: "failed", prompt: "a mountain", error: "out of memory" }),
    jobInfo("cancelled-1", { state: "cancelled", prompt: "a river", error: "cancelled by the user" }),
  ];

  it("failed and cancelled jobs have Run again, which queues the same request last", async () => {
    let queued: JobInfo[] = [];
    const calls = mockCore({
      queue_history: history,
      queue: () => queued,
      requeue_job: () => {
        queued = [jobInfo("new-1", { prompt: "a mountain" })];
        return "new-1";
      },
    });
    render(Queue);
    await waitFor(() => expect(screen.getAllByTestId("history-row")).toHaveLength(3));
    const rows = screen.getAllByTestId("history-row");
    expect(rows.map((r) => within(r).queryByTestId("run-again") !== null)).toEqual([false, true, true]);
    await fireEvent.click(screen.getByRole("button", { name: "Run again: a mountain" }));
    await waitFor(() => expect(calls.find((c) => c.cmd === "requeue_job")?.args).toEqual({ id: "failed-1", position: null }));
    await waitFor(() => expect(screen.getAllByTestId("queue-waiting")).toHaveLength(1));
  });

  it("a refused Run again shows the core's message as an error", async () => {
    mockCore({
      queue_history: history,
      requeue_job: () => {
        throw { field: null, message: "only the latest 16 cancelled or failed jobs can be queued again" };
      },
    });
    render(Queue);
    render(Toasts);
    await fireEvent.click(await screen.findByRole("button", { name: "Run again: a river" }));
    const alert = await screen.findByRole("alert");
    expect(alert.textContent).toContain("only the latest 16 cancelled or failed jobs can be queued again");
  });
});
