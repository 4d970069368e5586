import { describe, expect, it } from "vitest";
import { fireEvent, render, screen, waitFor } from "@testing-library/svelte";
import Queue from "../panels/Queue.svelte";
import { app, refreshQueue } from "../lib/state.svelte";
import type { JobInfo } from "../lib/bindings";
import { mockCore } from "./fixtures";

function job(id: string, state: JobInfo["state"], source: string, position: number): JobInfo {
  return { id, state, position, source, model: "tiny", prompt: `prompt of ${id}`, created: 1, outputs: [], error: null, last_event: null };
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
    expect(waiting[1].textContent).toContain("A1111 API");
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
