import { describe, expect, it } from "vitest";
import { fireEvent, render, screen, waitFor, within } from "@testing-library/svelte";
import { emit } from "@tauri-apps/api/event";
import VramMeter from "../panels/VramMeter.svelte";
import App from "../App.svelte";
import { app, start } from "../lib/state.svelte";
import { mockCore, vram, GIB } from "./fixtures";

const ollamaDown = {
  url: "http://127.0.0.1:11434",
  reachable: false,
  version: null,
  error: "error sending request for url (http://127.0.0.1:11434/api/ps): tcp connect error: Connection refused (os error 111)",
  models: [],
};

async function openDetails() {
  await fireEvent.click(screen.getByTestId("vram-chip"));
  return screen.getByTestId("vram-details");
}

describe("VRAM chip", () => {
  it("sums the GPU up in one short line: a small bar and used/total", () => {
    mockCore();
    app.vram = vram();
    render(VramMeter);
    const chip = screen.getByTestId("vram-chip");
    expect(screen.getByTestId("vram-chip-text").textContent).toBe("6.0/8.0 GiB");
    expect(chip.getAttribute("aria-label")).toBe("6.0/8.0 GiB of GPU memory used, no hand-over in force");
    expect(chip.getAttribute("aria-expanded")).toBe("false");
    expect(screen.queryByTestId("vram-details")).toBeNull();
  });

  it("keeps its text the same length when the figures change, so the header does not move", async () => {
    mockCore();
    app.vram = vram();
    render(VramMeter);
    const before = screen.getByTestId("vram-chip-text").textContent!.length;
    const gpu = vram().gpu.gpus[0];
    app.vram = vram({ phase: "diffusion", gpu: { ...vram().gpu, gpus: [{ ...gpu, used_bytes: 7.2 * GIB, free_bytes: 0.8 * GIB }] } });
    await waitFor(() => expect(screen.getByTestId("vram-chip-text").textContent).toBe("7.2/8.0 GiB"));
    expect(screen.getByTestId("vram-chip-text").textContent!.length).toBe(before);
  });

  it("opens a popover that splits each GPU's bar into LLM, DiffuGen and other in proportion, with the free memory", async () => {
    mockCore();
    app.vram = vram();
    render(VramMeter);
    const details = await openDetails();
    expect(screen.getByTestId("vram-chip").getAttribute("aria-expanded")).toBe("true");
    expect(details.textContent).toContain("NVIDIA GeForce RTX 4060");
    expect(details.textContent).toContain("2.0 GiB free of 8.0 GiB");
    const widths = [...details.querySelectorAll<HTMLElement>(".bar > span")].map((s) => s.style.width);
    expect(widths).toEqual(["58.75%", "12.5%", "3.75%"]);
    expect(screen.getByTestId("vram-phase").textContent).toBe("idle");
  });

  it("Escape closes the popover without cancelling the running job", async () => {
    app.current = null;
    app.jobs = {};
    app.own = {};
    app.view = "generate";
    const calls = mockCore({ cancel_job: () => true, generate: () => "job-1" });
    render(App);
    await fireEvent.input(await screen.findByTestId("prompt"), { target: { value: "x" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await emit("job-update", { job_id: "job-1", elapsed_seconds: 0, percent: null, eta_seconds: null, phase: "encoding_prompt" });
    await waitFor(() => expect(app.current).toBe("job-1"));
    expect(screen.getByTestId("job-phase").textContent).toBe("Encoding the prompt");
    await openDetails();
    await fireEvent.keyDown(screen.getByTestId("vram-details"), { key: "Escape" });
    expect(screen.queryByTestId("vram-details")).toBeNull();
    expect(document.activeElement).toBe(screen.getByTestId("vram-chip"));
    expect(calls.some((c) => c.cmd === "cancel_job")).toBe(false);
  });

  it("shows the VRAM budget DiffuGen holds itself to while it shares the GPU with the LLM", async () => {
    mockCore();
    app.vram = vram({ phase: "diffusion", engine: { worker_pid: 4242, loaded_model: "sd15", estimated_bytes: 2 * GIB, budget_bytes: 5.5 * GIB } });
    render(VramMeter);
    await openDetails();
    expect(screen.getByTestId("vram-budget").textContent).toContain("sharing");
    expect(screen.getByTestId("vram-budget").textContent).toContain("5.5 GiB");
  });

  it("shows no budget when DiffuGen does not share the GPU", async () => {
    mockCore();
    app.vram = vram();
    render(VramMeter);
    await openDetails();
    expect(screen.queryByTestId("vram-budget")).toBeNull();
  });

  it("says plainly when there is no NVIDIA GPU", async () => {
    mockCore();
    app.vram = vram({ gpu: { available: false, message: "no NVIDIA GPU detected (libnvidia-ml.so.1 is not installed)", gpus: [], llm_bytes: null, diffugen_bytes: null } });
    render(VramMeter);
    expect(screen.getByTestId("vram-chip-text").textContent).toBe("No GPU meter");
    await openDetails();
    expect(screen.getByTestId("no-gpu").textContent).toBe("No NVIDIA GPU");
    expect(screen.getByTestId("no-gpu").getAttribute("title")).toContain("libnvidia-ml.so.1");
  });

  it("follows the meter's live snapshots and switches", async () => {
    mockCore();
    app.vram = vram();
    app.lastSwitch = null;
    await start();
    render(VramMeter);
    await openDetails();
    await emit("vram-update", { type: "snapshot", snapshot: vram({ phase: "diffusion" }) });
    await waitFor(() => expect(screen.getByTestId("vram-phase").textContent).toBe("diffusion"));
    expect(screen.getByTestId("vram-chip").getAttribute("aria-label")).toContain("diffusion has the GPU");
    await emit("vram-update", { type: "switch", to: "diffusion", milliseconds: 812, unloaded: ["qwen3:4b"], restored: [] });
    await waitFor(() => expect(screen.getByTestId("vram-details").textContent).toContain("in 812 ms"));
  });

  it("hands the GPU to the LLM on request and reports what moved", async () => {
    app.toasts = [];
    const calls = mockCore({
      vram_switch: () => ({ phase: "llm", unloaded: [], restored: ["qwen3:4b"], milliseconds: 950, warnings: [] }),
    });
    app.vram = vram();
    render(VramMeter);
    await openDetails();
    await fireEvent.click(screen.getByText("GPU → LLM"));
    await waitFor(() => expect(calls.find((c) => c.cmd === "vram_switch")?.args).toEqual({ to: "llm" }));
    await waitFor(() => expect(app.toasts.map((t) => t.text).join()).toContain("restored qwen3:4b (950 ms)"));
  });
});

describe("Without Ollama", () => {
  it("disables the hand-over buttons and says, in one calm line, how to set Ollama up", async () => {
    mockCore();
    app.vram = vram({ ollama: ollamaDown });
    render(VramMeter);
    const details = await openDetails();
    const llm = within(details).getByRole<HTMLButtonElement>("button", { name: "GPU → LLM" });
    const diffusion = within(details).getByRole<HTMLButtonElement>("button", { name: "GPU → Diffusion" });
    expect(llm.disabled).toBe(true);
    expect(diffusion.disabled).toBe(true);
    const line = screen.getByTestId("ollama-state");
    expect(line.textContent).toContain("Ollama isn't running — start it (ollama serve) or set its URL in Settings");
    expect(line.textContent).not.toContain("os error");
    expect(line.getAttribute("title")).toContain("Connection refused (os error 111)");
    expect(llm.getAttribute("aria-describedby")).toBe(line.id);
    await fireEvent.click(within(line).getByRole("button", { name: "Open Settings" }));
    expect(app.view).toBe("settings");
  });

  it("raises no error toast for Ollama refusing the connection, at start or while rendering", async () => {
    app.toasts = [];
    mockCore({ vram: () => vram({ ollama: ollamaDown }) });
    await start();
    await emit("vram-update", { type: "warning", message: "cannot unload qwen3:4b: error sending request for url (http://127.0.0.1:11434/api/generate): Connection refused (os error 111)" });
    await emit("vram-update", { type: "phase", phase: "diffusion", reason: "job" });
    await new Promise((r) => setTimeout(r, 20));
    expect(app.toasts).toEqual([]);
  });

  it("other warnings still show, in plain words with the raw text as details", async () => {
    app.toasts = [];
    mockCore();
    app.vram = vram();
    await start();
    await emit("vram-update", { type: "warning", message: "cannot write the state file: Permission denied (os error 13)" });
    await waitFor(() => expect(app.toasts).toHaveLength(1));
    expect(app.toasts[0].text).toBe("Cannot write the state file — DiffuGen isn't allowed to use that file or folder (permission denied).");
    expect(app.toasts[0].detail).toContain("os error 13");
  });

  it("lists which lane renders on each card when the lanes have a GPU each", async () => {
    mockCore();
    const card0 = vram().gpu.gpus[0];
    app.vram = vram({ gpu: { ...vram().gpu, gpus: [card0, { ...card0, index: 1, name: "Second GPU" }] } });
    app.lanes = [
      { lane: 0, device: { kind: "gpu", index: 0 }, model: null, job: null, worker_pid: null },
      { lane: 1, device: { kind: "gpu", index: 1 }, model: "sd15", job: "j1", worker_pid: 4242 },
    ];
    render(VramMeter);
    const details = await openDetails();
    expect(within(details).getByTestId("vram-lane-0").textContent?.trim()).toBe("Lane 1 renders here");
    expect(within(details).getByTestId("vram-lane-1").textContent?.trim()).toBe("Lane 2 renders here (rendering) · holds sd15");
    app.lanes = [];
  });
});
