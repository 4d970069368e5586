import { describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen, waitFor, within } from "@testing-library/svelte";
import { emit } from "@tauri-apps/api/event";
import Queue from "../panels/Queue.svelte";
import App from "../App.svelte";
import { app, applyJobEvent, refreshQueue, start } from "../lib/state.svelte";
import type { JobInfo, LaneInfo } from "../lib/bindings";
import { entry, jobInfo, mockCore } from "./fixtures";

function job(id: string, state: JobInfo["state"], source: string, position: number): JobInfo {
  return { id, state, position, source, model: "tiny", prompt: `prompt of ${id}`, created: 1, finished: null, outputs: [], error: null, last_event: null, lane: state === "running" ? 0 : null, worker: state === "running" ? "local" : null, starts_in: null, width: 512, height: 768 };
}

describe("Queue", () => {
  it("shows jobs from every source, running first, and reorders and cancels waiting ones", async () => {
    const jobs = [job("a", "running", "openai", 0), job("b", "queued", "app", 1), job("c", "queued", "a1111", 2)];
    const calls = mockCore({ queue: () => jobs, move_job: () => null, cancel_job: () => true });
    await refreshQueue();
    render(Queue);
    expect(screen.getByTestId("queue-running").textContent).toContain("OpenAI API");
    const waiting = screen.getAllByTestId("queue-waiting");
    expect(waiting.map((w) => w.textContent?.includes("prompt of b"))).toEqual([true, false]);
    expect(waiting[1].textContent).toContain("AUTOMATIC1111 API");
    // Each job says the size it makes.
    expect(within(waiting[0]).getByTestId("job-size").textContent).toBe("512×768");
    expect(screen.getByTestId("queue-running").textContent).toContain("512×768");
    await fireEvent.click(screen.getByRole("button", { name: "Move job 2: prompt of b down" }));
    await waitFor(() => expect(calls.find((c) => c.cmd === "move_job")?.args).toEqual({ id: "b", position: 1 }));
    await fireEvent.click(screen.getByRole("button", { name: "Cancel job 3: prompt of c" }));
    await waitFor(() => expect(calls.find((c) => c.cmd === "cancel_job")?.args).toEqual({ id: "c" }));
    expect(app.queue.length).toBe(3);
  });

  it("names the job each button acts on, with its number and the start of its prompt", async () => {
    const long = { ...job("a", "running", "app", 0), prompt: "a red fox in the snow at dawn, volumetric light, 85 mm" };
    mockCore({ queue: () => [long, job("b", "queued", "api", 1)] });
    await refreshQueue();
    render(Queue);
    expect(screen.getByRole("button", { name: "Cancel job 1: a red fox in the snow at dawn…" })).toBeTruthy();
    expect(screen.getByRole("button", { name: "Cancel job 2: prompt of b" })).toBeTruthy();
    expect(screen.getByRole("button", { name: "Move job 2: prompt of b up" })).toBeTruthy();
  });

  it("after Cancel the focus goes to the heading, so a second press cannot cancel the next job", async () => {
    let jobs = [job("a", "queued", "app", 0), job("b", "queued", "app", 1)];
    const calls = mockCore({
      queue: () => jobs,
      cancel_job: (args) => {
        jobs = jobs.filter((j) => j.id !== args.id);
        return true;
      },
    });
    await refreshQueue();
    render(Queue);
    const cancelA = screen.getByRole("button", { name: "Cancel job 1: prompt of a" });
    cancelA.focus();
    await fireEvent.click(cancelA);
    await waitFor(() => expect(screen.getAllByTestId("queue-waiting")).toHaveLength(1));
    expect(document.activeElement).toBe(screen.getByTestId("queue-heading"));
    // Enter or Space now presses nothing: the heading is not a button.
    await fireEvent.keyDown(document.activeElement!, { key: "Enter" });
    expect(calls.filter((c) => c.cmd === "cancel_job")).toHaveLength(1);
    expect(screen.getByTestId("queue-status").textContent).toBe("Cancelled job 1: prompt of a");
  });

  it("names the lane of each running job when several render side by side, and no lane with one", async () => {
    const two = [{ ...job("a", "running", "api", 0), lane: 0 }, { ...job("b", "running", "openai", 0), lane: 1 }, job("c", "queued", "app", 2)];
    mockCore({ queue: () => two });
    await refreshQueue();
    const { unmount } = render(Queue);
    expect(screen.getAllByTestId("job-lane").map((l) => l.textContent)).toEqual(["Lane 1", "Lane 2"]);
    expect(screen.getAllByTestId("queue-running")).toHaveLength(2);
    unmount();

    mockCore({ queue: () => [job("a", "running", "api", 0), job("c", "queued", "app", 1)] });
    await refreshQueue();
    render(Queue);
    expect(screen.getByTestId("queue-running")).toBeTruthy();
    expect(screen.queryByTestId("job-lane")).toBeNull();
  });

  it("names each running job's GPU when the lanes have a card each", async () => {
    const gpuLanes: LaneInfo[] = [0, 1].map((i) => ({ lane: i, device: { kind: "gpu", index: i }, model: "tiny", job: i ? "b" : "a", worker_pid: 100 + i }));
    mockCore({ queue: () => [{ ...job("a", "running", "api", 0), lane: 0 }, { ...job("b", "running", "app", 0), lane: 1 }], queue_lanes: () => gpuLanes });
    await refreshQueue();
    render(Queue);
    expect(screen.getAllByTestId("job-lane").map((l) => l.textContent)).toEqual(["Lane 1 · GPU 0", "Lane 2 · GPU 1"]);
  });

  it("asks again for a waiting job's start when the running job's ETA moves, so the two agree", async () => {
    let startsIn = 12;
    mockCore({ queue: () => [job("a", "running", "api", 0), { ...job("b", "queued", "app", 1), starts_in: startsIn }] });
    const sampling = (eta: number) => ({ job_id: "a", elapsed_seconds: 5, percent: null, eta_seconds: eta, phase: "sampling", image: 1, images: 1, step: 1, steps: 20, seconds_per_step: 1 }) as never;
    applyJobEvent(sampling(12));
    await refreshQueue();
    render(Queue);
    await waitFor(() => expect(screen.getByTestId("job-starts").textContent).toMatch(/starts in about 1[12] s/));
    // The running job's ETA grows (its first steps were slower than the model's history said).
    startsIn = 23;
    app.queueAt = Date.now() - 4000;
    applyJobEvent(sampling(23));
    await waitFor(() => expect(screen.getByTestId("job-starts").textContent).toMatch(/starts in about 2[23] s/));
  });

  it("names the cluster worker rendering a job, and none for this machine's own lanes", async () => {
    const jobs = [{ ...job("a", "running", "api", 0), worker: "gaming-pc" }, job("b", "running", "app", 0), job("c", "queued", "app", 2)];
    mockCore({ queue: () => jobs });
    await refreshQueue();
    render(Queue);
    expect(screen.getAllByTestId("job-worker").map((w) => w.textContent)).toEqual(["on gaming-pc"]);
  });

  it("says when each waiting job should start, counting down each second, and nothing when the core cannot tell", async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    try {
      const jobs = [job("a", "running", "api", 0), { ...job("b", "queued", "app", 1), starts_in: 40 }, { ...job("c", "queued", "app", 2), starts_in: null }];
      mockCore({ queue: () => jobs });
      await refreshQueue();
      render(Queue);
      const starts = screen.getAllByTestId("job-starts");
      expect(starts.map((s) => s.textContent)).toEqual(["starts in about 40 s"]);
      await vi.advanceTimersByTimeAsync(3000);
      expect(screen.getByTestId("job-starts").textContent).toBe("starts in about 37 s");
    } finally {
      vi.useRealTimers();
    }
  });

  it("says where jobs come from when the queue is empty", async () => {
    mockCore();
    await refreshQueue();
    render(Queue);
    expect(screen.getByText(/Open WebUI, the API and the CLI appear here/)).toBeTruthy();
  });
});

describe("Queue updates", () => {
  it("a burst of queue events reloads the queue at most twice, and ends on the newest state", async () => {
    let calls = 0;
    mockCore({
      queue: () => {
        calls++;
        return [job(`j${calls}`, "queued", "api", 0)];
      },
    });
    await Promise.all(Array.from({ length: 20 }, () => refreshQueue()));
    expect(calls).toBeLessThanOrEqual(2);
    await refreshQueue();
    expect(app.queue[0].id).toBe(`j${calls}`);
  });
});

describe("Queue: every source, in words", () => {
  it("names where each job comes from, and marks this window's own", async () => {
    app.own = { mine: true };
    const jobs = [
      jobInfo("w", { state: "running", source: "openai" }),
      jobInfo("a", { position: 1, source: "a1111-txt2img" }),
      jobInfo("b", { position: 2, source: "a1111-img2img" }),
      jobInfo("c", { position: 3, source: "api" }),
      jobInfo("d", { position: 4, source: "cli" }),
      jobInfo("e", { position: 5, source: "legacy" }),
      jobInfo("f", { position: 6, source: "app" }),
      jobInfo("mine", { position: 7, source: "app" }),
    ];
    mockCore({ queue: () => jobs });
    await refreshQueue();
    render(Queue);
    const sources = screen.getAllByTestId("job-source").map((s) => s.textContent);
    expect(sources).toEqual([
      "Open WebUI / OpenAI API",
      "AUTOMATIC1111 API",
      "AUTOMATIC1111 API (img2img)",
      "DiffuGen API",
      "DiffuGen command line",
      "DiffuGen API (old endpoints)",
      "this app",
      "this window",
    ]);
  });

  it("a job from the API shows its prompt, live preview, step and ETA while it runs; waiting jobs their place", async () => {
    app.jobs = {};
    app.own = {};
    const jobs = [
      jobInfo("api-1", { state: "running", source: "openai", prompt: "a castle in the fog", position: null }),
      jobInfo("q1", { position: 0, source: "api" }),
      jobInfo("q2", { position: 1, source: "app" }),
    ];
    mockCore({ queue: () => jobs });
    await start();
    render(Queue);
    await emit("job-update", { job_id: "api-1", elapsed_seconds: 2, percent: null, eta_seconds: 12, phase: "sampling", image: 1, images: 1, step: 3, steps: 8, seconds_per_step: 1.5 });
    await emit("job-update", { job_id: "api-1", elapsed_seconds: 2, percent: null, eta_seconds: 12, phase: "preview", image: 1, step: 3, width: 8, height: 8, png_base64: "UFJFVklFVw==" });
    const running = screen.getByTestId("queue-running");
    await waitFor(() => expect(within(running).getByTestId<HTMLImageElement>("queue-preview").src).toBe("data:image/png;base64,UFJFVklFVw=="));
    expect(running.textContent).toContain("a castle in the fog");
    expect(running.textContent).toContain("step 3/8");
    expect(running.textContent).toContain("ETA 12 s");
    const places = screen.getAllByTestId("job-place").map((p) => p.textContent);
    expect(places).toEqual(["next", "1 job ahead"]);
  });

  it("the running row of a hires job names the pass with the step: pass 1 of 2, then pass 2 of 2", async () => {
    app.jobs = {};
    app.own = {};
    mockCore({ queue: () => [jobInfo("api-h", { state: "running", source: "openai", prompt: "a castle at dusk", position: null })] });
    await start();
    render(Queue);
    const sampling = { job_id: "api-h", elapsed_seconds: 2, percent: null, eta_seconds: null, phase: "sampling", image: 1, images: 1, steps: 8, seconds_per_step: 1 };
    const running = screen.getByTestId("queue-running");
    await emit("job-update", { ...sampling, step: 2, pass: 1, passes: 2 });
    await waitFor(() => expect(running.textContent).toContain("Sampling — pass 1 of 2 · step 2/8"));
    await emit("job-update", { ...sampling, step: 5, pass: 2, passes: 2 });
    await waitFor(() => expect(running.textContent).toContain("Sampling — pass 2 of 2 · step 5/8"));
    expect(running.textContent).not.toContain("pass 1 of 2");
  });

  it("the running row of a job without hires says nothing about passes", async () => {
    app.jobs = {};
    app.own = {};
    mockCore({ queue: () => [jobInfo("api-n", { state: "running", source: "openai", prompt: "a plain castle", position: null })] });
    await start();
    render(Queue);
    const running = screen.getByTestId("queue-running");
    await emit("job-update", { job_id: "api-n", elapsed_seconds: 2, percent: null, eta_seconds: null, phase: "sampling", image: 1, images: 1, step: 5, steps: 8, seconds_per_step: 1, pass: 1, passes: 1 });
    await waitFor(() => expect(running.textContent).toContain("Sampling · step 5/8"));
    expect(running.textContent).not.toMatch(/pass/i);
  });
});

describe("Queue: finished jobs", () => {
  const history = () => [
    jobInfo("done-1", {
      state: "done",
      source: "openai",
      prompt: "a harbour at night",
      model: "flux-schnell",
      created: 1_760_000_000,
      width: 768,
      height: 1024,
      outputs: [
        { path: "/o/1.png", seed: 1, width: 512, height: 512, gallery_id: 77 },
        { path: "/o/2.png", seed: 2, width: 512, height: 512, gallery_id: 78 },
      ],
    }),
    jobInfo("failed-1", {
      state: "failed",
      source: "api",
      prompt: "a mountain",
      error: "cannot write /out/x.png: No space left on device (os error 28)",
    }),
    jobInfo("cancelled-1", { state: "cancelled", source: "app", prompt: "a river", error: "cancelled by the user" }),
  ];

  it("lists done, failed and cancelled jobs with their source, prompt, model, time, a thumbnail and why they failed", async () => {
    app.own = {};
    mockCore({ queue_history: history });
    render(Queue);
    await waitFor(() => expect(screen.getAllByTestId("history-row")).toHaveLength(3));
    const [done, failed, cancelled] = screen.getAllByTestId("history-row");
    expect(within(done).getByTestId("history-state").textContent).toBe("Done");
    expect(done.textContent).toContain("Open WebUI / OpenAI API");
    expect(done.textContent).toContain("a harbour at night");
    expect(done.textContent).toContain("flux-schnell");
    expect(done.textContent).toContain(new Date(1_760_000_000 * 1000).toLocaleString());
    expect(within(done).getByTestId<HTMLImageElement>("history-thumb").src).toContain("thumb-77");
    expect(done.textContent).toContain("+1");
    expect(within(done).getByTestId("history-size").textContent).toBe("768×1024");

    expect(within(failed).getByTestId("history-state").textContent).toBe("Failed");
    expect(failed.textContent).toContain("DiffuGen API");
    const reason = within(failed).getByTestId("history-reason");
    expect(reason.textContent).toContain("disk is full");
    expect(reason.textContent).not.toContain("os error");
    expect(within(failed).queryByTestId("history-thumb")).toBeNull();
    expect(within(failed).getByTestId("history-size").textContent).toBe("512×512");

    expect(within(cancelled).getByTestId("history-state").textContent).toBe("Cancelled");
    expect(within(cancelled).getByTestId("history-reason").textContent).toBe("Cancelled by the user");
  });

  it("a finished row opens its image in the gallery's detail view", async () => {
    app.view = "queue";
    app.detail = null;
    mockCore({ queue_history: history, gallery_entry: (a) => entry(a.id as number, { prompt: "a harbour at night" }) });
    render(App);
    await waitFor(() => expect(screen.getAllByTestId("history-row")).toHaveLength(3));
    // Only a job with an image in the gallery opens one.
    const rows = screen.getAllByTestId("history-row");
    expect(rows.map((r) => within(r).queryByRole("button", { name: /^Open in the gallery/ }) !== null)).toEqual([true, false, false]);
    await fireEvent.click(screen.getByRole("button", { name: /^Open in the gallery: .*Done .*a harbour at night/ }));
    await waitFor(() => expect(screen.getByTestId("detail-prompt").textContent).toBe("a harbour at night"));
    expect(app.view).toBe("gallery");
    expect(app.detail).toBe(77);
  });

  it("is read again when a job ends, so the job moves from running to finished", async () => {
    app.jobs = {};
    let finished: JobInfo[] = [];
    let queued = [jobInfo("j1", { state: "running", source: "api", prompt: "a tree" })];
    mockCore({ queue: () => queued, queue_history: () => finished });
    await start();
    render(Queue);
    expect(screen.getByTestId("queue-running").textContent).toContain("a tree");
    expect(await screen.findByTestId("history-empty")).toBeTruthy();
    queued = [];
    finished = [jobInfo("j1", { state: "done", source: "api", prompt: "a tree", outputs: [{ path: "/o/t.png", seed: 3, width: 64, height: 64, gallery_id: 5 }] })];
    await emit("job-update", { job_id: "j1", elapsed_seconds: 3, percent: 100, eta_seconds: 0, phase: "done", outputs: finished[0].outputs });
    await waitFor(() => expect(screen.getAllByTestId("history-row")).toHaveLength(1));
    expect(screen.queryByTestId("queue-running")).toBeNull();
    expect(screen.getByTestId("history-row").textContent).toContain("a tree");
  });
});
