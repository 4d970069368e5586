import { describe, expect, it } from "vitest";
import { fireEvent, render, screen, waitFor } from "@testing-library/svelte";
import Generate from "../panels/Generate.svelte";
import { app, emptyForm, form, start } from "../lib/state.svelte";
import { formatMemory } from "../lib/api";
import { planPeaks } from "../lib/memory";
import type { Handler } from "./fixtures";
import { card, mockCore, models, plan, GIB } from "./fixtures";

const cards = [
  card(),
  card({ id: "flux-q8", name: "flux q8", family: "flux", source: "assembled" }),
  card({ id: "flux-dev", name: "flux dev", family: "flux", source: "assembled" }),
];

const plans: Record<string, ReturnType<typeof plan>> = {
  tiny: plan(),
  "flux-q8": plan({
    placement: { diffusion: "gpu", clip_l: "cpu", t5xxl: "cpu", vae: "gpu" },
    vae_tiling: true,
    estimated_vram_peak_bytes: 7.4 * GIB,
    estimated_ram_peak_bytes: 10.2 * GIB,
  }),
  "flux-dev": plan({
    fits: false,
    estimated_vram_peak_bytes: 23.6 * GIB,
    estimated_ram_peak_bytes: 12 * GIB,
    advice: [
      "it needs about 22.0 GiB of VRAM and 11.2 GiB of RAM at best, with 6.5 GiB and 28.0 GiB available",
      "make a smaller copy of the diffusion diffusion model (6.3 GiB at q4_k): diffugen models convert flux-dev --part diffusion --type q4_k",
    ],
  }),
};

async function setup(planModel: Handler = (a) => plans[a.model as string]) {
  Object.assign(form, emptyForm());
  app.current = null;
  app.jobs = {};
  const calls = mockCore({ list_models: () => models(cards), plan_model: planModel });
  await start();
  render(Generate);
  await screen.findByText("tiny");
  return calls;
}

async function pick(id: string) {
  await fireEvent.click(screen.getByTestId("model-picker"));
  await fireEvent.click(screen.getByTestId(`model-option-${id}`));
}

const fitLine = () => screen.getByTestId("fit-line");
const planCalls = (calls: { cmd: string; args: Record<string, unknown> }[]) => calls.filter((c) => c.cmd === "plan_model");

describe("Model picker: does the model fit", () => {
  it("says a model fits on the GPU, with offload, or not (and why), with the estimated VRAM and RAM peaks", async () => {
    const calls = await setup();
    await waitFor(() => expect(fitLine().dataset.fit).toBe("gpu"));
    expect(fitLine().textContent).toContain("Fits on the GPU");
    expect(fitLine().textContent).toContain("peak ~3.2 GiB VRAM, ~1.1 GiB RAM");
    expect(planCalls(calls)[0].args).toEqual({ model: "tiny", width: null, height: null });

    await pick("flux-q8");
    await waitFor(() => expect(fitLine().dataset.fit).toBe("offload"));
    expect(fitLine().textContent).toContain("Fits with offload (text encoders on the CPU, VAE tiled)");
    expect(fitLine().textContent).toContain("peak ~7.4 GiB VRAM, ~10.2 GiB RAM");

    await pick("flux-dev");
    await waitFor(() => expect(fitLine().dataset.fit).toBe("none"));
    expect(fitLine().textContent).toContain(
      "Does not fit: it needs about 22.0 GiB of VRAM and 11.2 GiB of RAM at best, with 6.5 GiB and 28.0 GiB available",
    );
    expect(fitLine().getAttribute("title")).toContain("diffugen models convert flux-dev");
  });

  it("asks again, once, when the size stops changing", async () => {
    const calls = await setup();
    await waitFor(() => expect(planCalls(calls)).toHaveLength(1));
    await fireEvent.change(screen.getByTestId("size"), { target: { value: "custom" } });
    for (const value of ["1", "10", "102", "1024"]) {
      await fireEvent.input(screen.getByTestId("width"), { target: { value } });
    }
    await waitFor(() => expect(planCalls(calls).at(-1)?.args).toEqual({ model: "tiny", width: 1024, height: 512 }));
    await new Promise((r) => setTimeout(r, 400));
    expect(planCalls(calls)).toHaveLength(2);
  });

  it("shows a muted line, not an alarm, when the plan cannot be made", async () => {
    await setup(() => {
      throw { field: "model", message: "cannot read the model's header" };
    });
    await waitFor(() => expect(fitLine().dataset.fit).toBe("unknown"));
    expect(fitLine().textContent).toBe("Memory need not estimated");
    expect(fitLine().classList.contains("muted")).toBe(true);
    expect(screen.queryByRole("alert")).toBeNull();
  });
});

describe("Memory amounts", () => {
  it("are written in binary units as the core writes them, and a plan without VRAM names its RAM only", () => {
    expect(formatMemory(8 * GIB)).toBe("8.0 GiB");
    expect(formatMemory(0.05 * GIB)).toBe("51 MiB");
    expect(formatMemory(0)).toBe("0.0 GiB");
    expect(planPeaks(plan({ estimated_vram_peak_bytes: 0, estimated_ram_peak_bytes: 1.3 * GIB }))).toBe("peak ~1.3 GiB RAM");
    expect(planPeaks(plan())).toBe("peak ~3.2 GiB VRAM, ~1.1 GiB RAM");
  });
});
