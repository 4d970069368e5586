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
    await fireEvent.click(waiting[0].querySelector('[aria-label="Move down"]')!);
    await waitFor(() => expect(calls.find((c) => c.cmd === "move_job")?.args).toEqual({ id: "b", position: 1 }));
    await fireEvent.click(waiting[1].querySelector(".danger")!);
    await waitFor(() => expect(calls.find((c) => c.cmd === "cancel_job")?.args).toEqual({ id: "c" }));
    expect(app.queue.length).toBe(3);
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
