import { describe, expect, it } from "vitest";
import { fireEvent, render, screen, waitFor } from "@testing-library/svelte";
import Generate from "../panels/Generate.svelte";
import { app, applyJobEvent, form, start } from "../lib/state.svelte";
import { mockCore } from "./fixtures";

async function setup(overrides = {}) {
  app.current = null;
  app.jobs = {};
  app.own = {};
  app.toasts = [];
  const calls = mockCore(overrides);
  await start();
  render(Generate);
  await screen.findByText("tiny");
  return calls;
}

describe("Enhance (the prompt assistant)", () => {
  it("shows the rewrites to edit, changes the prompt only when one is accepted, and undoes it", async () => {
    const calls = await setup({
      enhance_prompt: (args: Record<string, unknown>) => {
        const request = args.request as { prompt: string; count: number };
        return {
          model: "qwen2.5:7b",
          prompts: Array.from({ length: request.count }, (_, i) => `${request.prompt}, take ${i + 1}, golden hour`),
        };
      },
    });
    const prompt = screen.getByTestId("prompt") as HTMLTextAreaElement;
    await fireEvent.input(prompt, { target: { value: "a cat" } });
    await fireEvent.change(screen.getByTestId("enhance-count"), { target: { value: "2" } });
    await fireEvent.click(screen.getByTestId("enhance-button"));

    const takes = (await screen.findAllByTestId("enhance-take")) as HTMLTextAreaElement[];
    expect(takes.map((t) => t.value)).toEqual(["a cat, take 1, golden hour", "a cat, take 2, golden hour"]);
    const sent = calls.find((c) => c.cmd === "enhance_prompt")!.args.request as Record<string, unknown>;
    expect(sent).toMatchObject({ prompt: "a cat", model: "tiny", count: 2 });
    expect(screen.getByText(/Written by qwen2.5:7b/)).toBeTruthy();
    // Nothing changed yet.
    expect(form.prompt).toBe("a cat");

    await fireEvent.input(takes[1], { target: { value: "a ginger cat on a windowsill" } });
    await fireEvent.click(screen.getAllByTestId("enhance-accept")[1]);
    expect(form.prompt).toBe("a ginger cat on a windowsill");
    expect(screen.queryAllByTestId("enhance-take")).toHaveLength(0);

    await fireEvent.click(screen.getByTestId("enhance-undo"));
    expect(form.prompt).toBe("a cat");
  });

  it("says at the button why there is no rewrite when Ollama is not running, and leaves the prompt alone", async () => {
    await setup({
      enhance_prompt: () => {
        throw {
          field: "enhance_prompt",
          message:
            "enhance_prompt: Ollama is not reachable at http://127.0.0.1:11434 (Connection refused); start Ollama, or leave enhance_prompt off",
        };
      },
    });
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "a dog" } });
    await fireEvent.click(screen.getByTestId("enhance-button"));
    await waitFor(() => {
      const error = document.querySelector('[data-field="enhance_prompt"]');
      expect(error?.textContent).toContain("Ollama is not reachable");
    });
    expect(form.prompt).toBe("a dog");
  });

  it("cannot be asked without a prompt", async () => {
    await setup();
    await fireEvent.input(screen.getByTestId("prompt"), { target: { value: "   " } });
    expect((screen.getByTestId("enhance-button") as HTMLButtonElement).disabled).toBe(true);
  });
});

describe("the assistant's and the critic's events on a live job", () => {
  it("keeps a waiting job waiting while its prompt is rewritten, shows the rewrite, then each score", async () => {
    mockCore();
    app.jobs = {};
    const base = { job_id: "job-a", elapsed_seconds: 1, percent: null, eta_seconds: null };
    applyJobEvent({ ...base, phase: "queued", position: 2 });
    applyJobEvent({ ...base, phase: "enhancing_prompt", model: "qwen2.5:7b" });
    expect(app.jobs["job-a"].state).toBe("queued");
    expect(app.jobs["job-a"].status).toBe("qwen2.5:7b is rewriting the prompt");
    applyJobEvent({ ...base, phase: "prompt_enhanced", model: "qwen2.5:7b", original: "a cat", prompt: "a ginger cat, golden hour" });
    expect(app.jobs["job-a"].prompt).toBe("a ginger cat, golden hour");
    applyJobEvent({ ...base, phase: "critique", model: "llava:7b", attempt: 1, score: 3.2, reason: "one apple", retry: true });
    expect(app.jobs["job-a"].status).toBe("Scored 3/10 by llava:7b: rendering another take");
  });
});
