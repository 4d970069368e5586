import { describe, expect, it } from "vitest";
import { fireEvent, render, screen, waitFor } from "@testing-library/svelte";
import { emit } from "@tauri-apps/api/event";
import VramMeter from "../panels/VramMeter.svelte";
import { app, start } from "../lib/state.svelte";
import { mockCore, vram } from "./fixtures";

describe("VRAM meter", () => {
  it("splits each GPU's bar into LLM, DiffuGen and other in proportion, with the free memory", async () => {
    mockCore();
    app.vram = vram();
    render(VramMeter);
    const meter = screen.getByTestId("vram-meter");
    expect(meter.textContent).toContain("NVIDIA GeForce RTX 4060");
    expect(meter.textContent).toContain("2.0 GB free of 8.0 GB");
    const widths = [...meter.querySelectorAll<HTMLElement>(".bar > span")].map((s) => s.style.width);
    expect(widths).toEqual(["58.75%", "12.5%", "3.75%"]);
    expect(screen.getByTestId("vram-phase").textContent).toBe("idle");
  });

  it("shows the VRAM budget DiffuGen holds itself to while it shares the GPU with the LLM", () => {
    mockCore();
    app.vram = vram({ phase: "diffusion", engine: { worker_pid: 4242, loaded_model: "sd15", estimated_bytes: 2e9, budget_bytes: 5.5e9 } });
    render(VramMeter);
    expect(screen.getByTestId("vram-budget").textContent).toContain("sharing");
    expect(screen.getByTestId("vram-budget").textContent).toContain("5.5 GB");
  });

  it("shows no budget when DiffuGen does not share the GPU", () => {
    mockCore();
    app.vram = vram();
    render(VramMeter);
    expect(screen.queryByTestId("vram-budget")).toBeNull();
  });

  it("says plainly when there is no NVIDIA GPU", () => {
    mockCore();
    app.vram = vram({ gpu: { available: false, message: "no NVIDIA GPU detected (libnvidia-ml.so.1 is not installed)", gpus: [], llm_bytes: null, diffugen_bytes: null } });
    render(VramMeter);
    expect(screen.getByTestId("no-gpu").textContent).toBe("No NVIDIA GPU");
    expect(screen.getByTestId("no-gpu").getAttribute("title")).toContain("libnvidia-ml.so.1");
  });

  it("follows the meter's live snapshots and switches", async () => {
    mockCore();
    app.vram = vram();
    app.lastSwitch = null;
    await start();
    render(VramMeter);
    await emit("vram-update", { type: "snapshot", snapshot: vram({ phase: "diffusion" }) });
    await waitFor(() => expect(screen.getByTestId("vram-phase").textContent).toBe("diffusion"));
    await emit("vram-update", { type: "switch", to: "diffusion", milliseconds: 812, unloaded: ["qwen3:4b"], restored: [] });
    await waitFor(() => expect(screen.getByTestId("vram-meter").textContent).toContain("in 812 ms"));
  });

  it("hands the GPU to the LLM on request and reports what moved", async () => {
    app.toasts = [];
    const calls = mockCore({
      vram_switch: () => ({ phase: "llm", unloaded: [], restored: ["qwen3:4b"], milliseconds: 950, warnings: [] }),
    });
    app.vram = vram();
    render(VramMeter);
    await fireEvent.click(screen.getByText("GPU → LLM"));
    await waitFor(() => expect(calls.find((c) => c.cmd === "vram_switch")?.args).toEqual({ to: "llm" }));
    await waitFor(() => expect(app.toasts.map((t) => t.text).join()).toContain("restored qwen3:4b (950 ms)"));
  });
});
