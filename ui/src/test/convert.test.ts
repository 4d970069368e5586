import { describe, expect, it } from "vitest";
import { fireEvent, render, screen, waitFor, within } from "@testing-library/svelte";
import { emit } from "@tauri-apps/api/event";
import Models from "../panels/Models.svelte";
import { app, start } from "../lib/state.svelte";
import type { ConversionPreview, Part, QuantType } from "../lib/bindings";
import type { Handler } from "./fixtures";
import { card, mockCore, models, GIB } from "./fixtures";

const SIZES: Partial<Record<QuantType, number>> = { q8_0: 470e6, q4_k: 260e6 };

function preview(a: Record<string, unknown>): ConversionPreview {
  const type = a.weightType as QuantType;
  const name = (a.output as string | null) ?? `tiny-${type}.gguf`;
  return {
    model_id: a.model as string,
    part: (a.part as Part | null) ?? null,
    input: "/models/tiny.gguf",
    output: `/data/models/${name}`,
    weight_type: type,
    current_bytes: 883e6,
    expected_bytes: SIZES[type] ?? 300e6,
    vram_now_bytes: 3 * GIB,
    vram_after_bytes: type === "q8_0" ? 2.6 * GIB : 2.4 * GIB,
    new_model_id: name.replace(/\.gguf$/, ""),
  };
}

const multiFile = card({
  id: "flux-schnell",
  name: "flux schnell",
  family: "flux",
  source: "assembled",
  components: [
    { component: "diffusion_model", path: "/models/flux1-schnell.safetensors" },
    { component: "vae", path: "/models/ae.safetensors" },
    { component: "clip_l", path: "/models/clip_l.safetensors" },
    { component: "t5xxl", path: "/models/t5xxl_fp16.safetensors" },
  ],
});

async function setup(overrides: Record<string, Handler> = {}) {
  app.conversions = {};
  app.toasts = [];
  const calls = mockCore({
    list_models: () => models([card(), multiFile]),
    preview_conversion: preview,
    convert_model: () => "conv-1",
    ...overrides,
  });
  await start();
  render(Models);
  return calls;
}

const text = (el: HTMLElement) => (el.textContent ?? "").replace(/\s+/g, " ").trim();
const cmds = (calls: { cmd: string; args: Record<string, unknown> }[], cmd: string) => calls.filter((c) => c.cmd === cmd);

describe("Models: make a smaller copy", () => {
  it("shows the copy's size, VRAM need and path before it starts, then its progress and the new model's id", async () => {
    const calls = await setup();
    await fireEvent.click(await screen.findByTestId("convert-tiny"));
    const dialog = screen.getByRole("dialog", { name: "Make a smaller copy" });
    expect(dialog.getAttribute("aria-modal")).toBe("true");
    expect(within(dialog).queryByTestId("convert-part")).toBeNull();

    const shown = await within(dialog).findByTestId("convert-preview");
    expect(text(shown)).toBe("883 MB → 470 MB, VRAM need 3.0 GiB → 2.6 GiB");
    expect(text(within(dialog).getByTestId("convert-output-path"))).toBe("Writes /data/models/tiny-q8_0.gguf, listed as tiny-q8_0");
    expect(cmds(calls, "preview_conversion")[0].args).toEqual({ model: "tiny", part: null, weightType: "q8_0", output: null });
    expect(cmds(calls, "convert_model")).toHaveLength(0);

    await fireEvent.change(within(dialog).getByTestId("convert-type"), { target: { value: "q4_k" } });
    await waitFor(() => expect(text(within(dialog).getByTestId("convert-preview"))).toBe("883 MB → 260 MB, VRAM need 3.0 GiB → 2.4 GiB"));
    await fireEvent.input(within(dialog).getByTestId("convert-output"), { target: { value: "tiny-small.gguf" } });
    await waitFor(() => expect(text(within(dialog).getByTestId("convert-output-path"))).toContain("/data/models/tiny-small.gguf"));
    expect(cmds(calls, "preview_conversion").at(-1)?.args).toEqual({ model: "tiny", part: null, weightType: "q4_k", output: "tiny-small.gguf" });

    await fireEvent.click(within(dialog).getByTestId("convert-start"));
    await waitFor(() => expect(cmds(calls, "convert_model")[0]?.args).toEqual({ model: "tiny", part: null, weightType: "q4_k", output: "tiny-small.gguf" }));
    await emit("convert-progress", { id: "conv-1", event: { event: "started", input: "/models/tiny.gguf", output: "/data/models/tiny-small.gguf", weight_type: "q4_k", expected_bytes: 260e6 } });
    await emit("convert-progress", { id: "conv-1", event: { event: "progress", done: 5, total: 20, percent: null } });
    await waitFor(() => expect(within(dialog).getByRole("progressbar").getAttribute("aria-valuenow")).toBe("25"));
    expect(within(dialog).getByTestId("convert-type").matches(":disabled")).toBe(true);

    const listed = cmds(calls, "list_models").length;
    await emit("convert-progress", { id: "conv-1", event: { event: "done", output: "/data/models/tiny-small.gguf", bytes: 259e6, seconds: 12, model_id: "tiny-small" } });
    const done = await within(dialog).findByTestId("convert-done");
    expect(text(done)).toContain("Done: the copy is listed as tiny-small");
    expect(within(dialog).getByRole("progressbar").getAttribute("aria-valuenow")).toBe("100");
    await waitFor(() => expect(cmds(calls, "list_models").length).toBe(listed + 1));
    expect(app.toasts).toHaveLength(0);
  });

  it("offers the parts of a model in several files and previews the one chosen", async () => {
    const calls = await setup();
    await fireEvent.click(await screen.findByTestId("convert-flux-schnell"));
    const dialog = screen.getByRole("dialog");
    const part = within(dialog).getByTestId<HTMLSelectElement>("convert-part");
    expect(Array.from(part.options).map((o) => o.value)).toEqual(["diffusion", "vae", "clip_l", "t5xxl"]);
    expect(part.value).toBe("diffusion");
    await within(dialog).findByTestId("convert-preview");
    await fireEvent.change(part, { target: { value: "t5xxl" } });
    await waitFor(() => expect(cmds(calls, "preview_conversion").at(-1)?.args).toMatchObject({ model: "flux-schnell", part: "t5xxl" }));
  });

  it("marks the field the core refuses and does not start", async () => {
    const calls = await setup({
      preview_conversion: (a) => {
        if (a.output) throw { field: "output", message: "the file name must end in .gguf" };
        return preview(a);
      },
    });
    await fireEvent.click(await screen.findByTestId("convert-tiny"));
    const dialog = screen.getByRole("dialog");
    await within(dialog).findByTestId("convert-preview");
    const output = within(dialog).getByTestId("convert-output");
    await fireEvent.input(output, { target: { value: "small.bin" } });
    expect((await within(dialog).findByTestId("convert-problem")).textContent).toBe("the file name must end in .gguf");
    expect(output.classList.contains("invalid")).toBe(true);
    expect(output.getAttribute("aria-describedby")).toBe("convert-problem");
    expect(within(dialog).queryByTestId("convert-preview")).toBeNull();
    expect(within(dialog).getByTestId<HTMLButtonElement>("convert-start").disabled).toBe(true);
    expect(cmds(calls, "convert_model")).toHaveLength(0);
  });

  it("shows why a conversion failed", async () => {
    await setup();
    await fireEvent.click(await screen.findByTestId("convert-tiny"));
    const dialog = screen.getByRole("dialog");
    await within(dialog).findByTestId("convert-preview");
    await fireEvent.click(within(dialog).getByTestId("convert-start"));
    await waitFor(() => expect(app.conversions["conv-1"]).toBeTruthy());
    await emit("convert-progress", { id: "conv-1", event: { event: "failed", error: "sd.cpp could not read /models/tiny.gguf" } });
    expect((await within(dialog).findByTestId("convert-failed")).textContent).toBe("sd.cpp could not read /models/tiny.gguf");
    expect(within(dialog).getByTestId("convert-start").textContent).toContain("Try again");
  });

  it("closes on Escape and gives the focus back to its button", async () => {
    await setup();
    const button = await screen.findByTestId("convert-tiny");
    button.focus();
    await fireEvent.click(button);
    const dialog = screen.getByRole("dialog");
    await waitFor(() => expect(dialog.contains(document.activeElement)).toBe(true));
    await fireEvent.keyDown(document.activeElement!, { key: "Escape" });
    expect(screen.queryByRole("dialog")).toBeNull();
    expect(document.activeElement).toBe(button);
  });
});
