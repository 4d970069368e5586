import { describe, expect, it } from "vitest";
import { fireEvent, render, screen, waitFor } from "@testing-library/svelte";
import Generate from "../panels/Generate.svelte";
import { app, emptyForm, form, loadForm, start } from "../lib/state.svelte";
import { mockCore } from "./fixtures";

async function setup(overrides = {}) {
  Object.assign(form, emptyForm());
  app.current = null;
  app.jobs = {};
  const calls = mockCore(overrides);
  await start();
  render(Generate);
  await screen.findByText("tiny");
  return calls;
}

function sentForm(calls: { cmd: string; args: Record<string, unknown> }[]) {
  return calls.find((c) => c.cmd === "generate")!.args.form as Record<string, unknown>;
}

describe("Generate: Memory & speed", () => {
  it("is collapsed at first, writes the options into the form, and its summary and ✕ stay in view when collapsed", async () => {
    await setup();
    const toggle = screen.getByTestId("memory-toggle");
    expect(toggle.getAttribute("aria-expanded")).toBe("false");
    expect(screen.queryByTestId("memory")).toBeNull();
    expect(screen.queryByTestId("memory-summary")).toBeNull();

    await fireEvent.click(toggle);
    expect(toggle.getAttribute("aria-expanded")).toBe("true");
    await fireEvent.change(screen.getByTestId("memory-placement-diffusion"), { target: { value: "offload" } });
    await fireEvent.change(screen.getByTestId("memory-vae-tiling"), { target: { value: "on" } });
    await fireEvent.input(screen.getByTestId("memory-tile-size"), { target: { value: "512" } });
    await fireEvent.change(screen.getByTestId("memory-flash-attn"), { target: { value: "on" } });
    await fireEvent.change(screen.getByTestId("memory-cache"), { target: { value: "fast" } });
    expect(form.memory).toEqual({
      placement: { diffusion: "offload" },
      vae_tiling: "on",
      vae_tile_size: 512,
      flash_attn: true,
      cache: "fast",
    });

    await fireEvent.click(toggle);
    expect(screen.queryByTestId("memory")).toBeNull();
    expect(screen.getByTestId("memory-summary").textContent).toBe(
      "diffusion offload · VAE tiling on (512 px) · flash attention on · step cache fast",
    );

    await fireEvent.click(screen.getByRole("button", { name: "Reset the memory and speed options" }));
    expect(form.memory).toEqual({ placement: {} });
    expect(screen.queryByTestId("memory-summary")).toBeNull();
  });

  it("'auto' removes a part's placement, and turning tiling off hides and clears the tile size and overlap", async () => {
    await setup();
    await fireEvent.click(screen.getByTestId("memory-toggle"));
    const encoders = screen.getByTestId("memory-placement-text_encoders");
    await fireEvent.change(encoders, { target: { value: "cpu" } });
    expect(form.memory?.placement).toEqual({ text_encoders: "cpu" });
    await fireEvent.change(encoders, { target: { value: "auto" } });
    expect(form.memory?.placement).toEqual({});

    await fireEvent.input(screen.getByTestId("memory-tile-overlap"), { target: { value: "0.25" } });
    expect(form.memory?.vae_tile_overlap).toBe(0.25);
    await fireEvent.change(screen.getByTestId("memory-vae-tiling"), { target: { value: "off" } });
    expect(screen.queryByTestId("memory-tile-size")).toBeNull();
    expect(screen.queryByTestId("memory-tile-overlap")).toBeNull();
    expect(form.memory).toEqual({ placement: {}, vae_tiling: "off" });
    await fireEvent.change(screen.getByTestId("memory-vae-tiling"), { target: { value: "auto" } });
    expect(form.memory).toEqual({ placement: {} });
    expect(screen.getByTestId("memory-tile-size")).toBeTruthy();
  });

  it("sends the options with the job, only what is set", async () => {
    const calls = await setup({ generate: () => "job-1" });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "a lighthouse" } });
    await fireEvent.click(screen.getByTestId("memory-toggle"));
    await fireEvent.change(screen.getByTestId("memory-placement-vae"), { target: { value: "cpu" } });
    await fireEvent.input(screen.getByTestId("memory-vram-budget"), { target: { value: "4" } });
    await fireEvent.input(screen.getByTestId("memory-vram-budget"), { target: { value: "" } });
    await fireEvent.change(screen.getByTestId("memory-mmap"), { target: { value: "off" } });
    await fireEvent.click(screen.getByTestId("generate"));
    await waitFor(() => expect(calls.find((c) => c.cmd === "generate")).toBeTruthy());
    expect(sentForm(calls).memory).toEqual({ placement: { vae: "cpu" }, mmap: false });
  });

  it("refuses a tile size that is not a multiple of 32 at the field, without calling the core", async () => {
    const calls = await setup({ generate: () => "job-1" });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "x" } });
    await fireEvent.click(screen.getByTestId("memory-toggle"));
    await fireEvent.input(screen.getByTestId("memory-tile-size"), { target: { value: "300" } });
    await fireEvent.click(screen.getByTestId("generate"));
    expect((await screen.findByTestId("form-error")).textContent).toMatch(/multiple of 32/);
    const size = screen.getByTestId("memory-tile-size");
    expect(size.classList.contains("invalid")).toBe(true);
    expect(size.getAttribute("aria-invalid")).toBe("true");
    expect(size.getAttribute("aria-describedby")).toBe("generate-error");
    expect(calls.some((c) => c.cmd === "generate")).toBe(false);
  });

  it("opens itself on the option the core refused and marks it", async () => {
    await setup({
      generate: () => {
        throw { field: "memory.placement.t5xxl", message: "this model has no t5xxl" };
      },
    });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "x" } });
    loadForm({ ...form, memory: { placement: { t5xxl: "cpu" } } });
    await fireEvent.click(screen.getByTestId("generate"));
    expect((await screen.findByTestId("form-error")).textContent).toContain("this model has no t5xxl");
    expect(screen.getByTestId("memory-toggle").getAttribute("aria-expanded")).toBe("true");
    const encoders = screen.getByTestId<HTMLSelectElement>("memory-placement-text_encoders");
    expect(encoders.value).toBe("cpu");
    expect(encoders.classList.contains("invalid")).toBe(true);
    expect(screen.getByTestId("memory-summary").textContent).toBe("t5xxl cpu");
  });

  it("a remix without memory options leaves the form's options an empty object", () => {
    Object.assign(form, emptyForm(), { memory: { placement: { vae: "cpu" } } });
    const { memory: _, ...rest } = emptyForm();
    loadForm({ ...rest, model: "tiny", prompt: "again" });
    expect(form.memory).toEqual({ placement: {} });
    loadForm({ ...rest, model: "tiny", prompt: "again", memory: { vae_tiling: "on" } });
    expect(form.memory).toEqual({ placement: {}, vae_tiling: "on" });
  });
});
