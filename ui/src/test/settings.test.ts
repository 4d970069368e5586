import { describe, expect, it } from "vitest";
import { fireEvent, render, screen, waitFor } from "@testing-library/svelte";
import SettingsPanel from "../panels/Settings.svelte";
import { app } from "../lib/state.svelte";
import { info, mockCore } from "./fixtures";

describe("Settings", () => {
  it("saves a change through the core and says when it needs a restart", async () => {
    app.info = info;
    app.settings = { extra_models_dirs: [] };
    app.toasts = [];
    const calls = mockCore({
      set_setting: (a) => ({ settings: { extra_models_dirs: [], [a.key as string]: a.value }, restart_needed: a.key === "api_host" }),
    });
    render(SettingsPanel);
    await fireEvent.change(screen.getByTestId("vram-policy"), { target: { value: "always" } });
    await waitFor(() => expect(calls.find((c) => c.cmd === "set_setting")?.args).toEqual({ key: "vram_policy", value: "always" }));
    expect(app.settings?.vram_policy).toBe("always");
    await fireEvent.change(screen.getByTestId("api-host"), { target: { value: "192.168.1.20" } });
    await waitFor(() => expect(screen.getByText("Some changes apply when DiffuGen restarts.")).toBeTruthy());
  });

  it("saves a cluster URL trimmed, clears it when emptied, and names a bad one at the field", async () => {
    app.info = info;
    app.settings = { extra_models_dirs: [] };
    app.toasts = [];
    const calls = mockCore({
      set_setting: (a) => {
        if (typeof a.value === "string" && !/^(nats|tls):\/\//.test(a.value)) {
          throw { field: "cluster_url", message: "invalid setting cluster_url: must start with nats:// or tls:// (e.g. nats://192.168.1.20:4222)" };
        }
        return { settings: { extra_models_dirs: [], cluster_url: a.value as string | null }, restart_needed: true };
      },
    });
    render(SettingsPanel);
    const field = screen.getByTestId("cluster-url");
    await fireEvent.change(field, { target: { value: "  nats://nas.local:4222 " } });
    await waitFor(() => expect(calls.filter((c) => c.cmd === "set_setting").map((c) => c.args)).toEqual([{ key: "cluster_url", value: "nats://nas.local:4222" }]));
    await waitFor(() => expect(screen.getByText("Some changes apply when DiffuGen restarts.")).toBeTruthy());
    await fireEvent.change(field, { target: { value: "" } });
    await waitFor(() => expect(calls.filter((c) => c.cmd === "set_setting").at(-1)?.args).toEqual({ key: "cluster_url", value: null }));
    await fireEvent.change(field, { target: { value: "http://nas.local:4222" } });
    expect((await screen.findByRole("alert")).textContent).toContain("Must start with nats:// or tls:// (e.g. nats://192.168.1.20:4222)");
    expect(field.getAttribute("aria-invalid")).toBe("true");
  });

  it("warns when the API would be reachable from the network without a key", () => {
    mockCore();
    app.info = info;
    app.settings = { extra_models_dirs: [], api_host: "0.0.0.0" };
    render(SettingsPanel);
    expect(screen.getByTestId("exposed-warning").textContent).toContain("Set an API key");
  });

  it("shows the core's message for a bad value next to the field", async () => {
    app.info = info;
    app.settings = { extra_models_dirs: [] };
    mockCore({
      set_setting: () => {
        throw { field: "api_host", message: "invalid setting api_host: 'my laptop' is not an IP address" };
      },
    });
    render(SettingsPanel);
    await fireEvent.change(screen.getByTestId("api-host"), { target: { value: "my laptop" } });
    expect((await screen.findByRole("alert")).textContent).toContain("'my laptop' is not an IP address");
  });

  it("saves the memory defaults as one JSON object after each complete edit, and clears them", async () => {
    app.info = info;
    app.settings = { extra_models_dirs: [] };
    app.toasts = [];
    const calls = mockCore({
      set_setting: (a) => ({
        settings: { extra_models_dirs: [], memory: a.value === null ? null : JSON.parse(a.value as string) },
        restart_needed: false,
      }),
    });
    render(SettingsPanel);
    const saves = () => calls.filter((c) => c.cmd === "set_setting").map((c) => c.args);
    await fireEvent.change(screen.getByTestId("memory-defaults-vae-tiling"), { target: { value: "on" } });
    await waitFor(() => expect(saves()).toEqual([{ key: "memory", value: '{"vae_tiling":"on"}' }]));
    expect(app.settings?.memory).toEqual({ vae_tiling: "on" });

    const size = screen.getByTestId("memory-defaults-tile-size");
    await fireEvent.input(size, { target: { value: "512" } });
    expect(saves()).toHaveLength(1);
    await fireEvent.change(size, { target: { value: "512" } });
    await fireEvent.change(screen.getByTestId("memory-defaults-placement-text_encoders"), { target: { value: "cpu" } });
    await waitFor(() => expect(saves()).toHaveLength(3));
    expect(JSON.parse(saves()[2].value as string)).toEqual({ placement: { text_encoders: "cpu" }, vae_tiling: "on", vae_tile_size: 512 });
    await waitFor(() => expect(screen.getByTestId("memory-defaults-summary").textContent).toContain("text encoders cpu · VAE tiling on (512 px)"));

    await fireEvent.click(screen.getByTestId("memory-defaults-reset"));
    await waitFor(() => expect(saves().at(-1)).toEqual({ key: "memory", value: null }));
    await waitFor(() => expect(screen.queryByTestId("memory-defaults-reset")).toBeNull());
  });

  it("refuses a memory default the core would refuse at the field, without saving", async () => {
    app.info = info;
    app.settings = { extra_models_dirs: [] };
    const calls = mockCore();
    render(SettingsPanel);
    const overlap = screen.getByTestId("memory-defaults-tile-overlap");
    await fireEvent.input(overlap, { target: { value: "0.9" } });
    await fireEvent.change(overlap, { target: { value: "0.9" } });
    expect((await screen.findByTestId("memory-defaults-error")).textContent).toContain("from 0 to 0.5");
    expect(overlap.getAttribute("aria-invalid")).toBe("true");
    expect(calls.some((c) => c.cmd === "set_setting")).toBe(false);
  });

  it("saves how long an idle model stays loaded, and shows the core's word on a bad value", async () => {
    app.info = info;
    app.settings = { extra_models_dirs: [], memory: { cache: "fast" } };
    const calls = mockCore({
      set_setting: (a) => {
        if (a.value === "soon") throw { field: "model_keep_alive", message: "'soon' is not a keep-alive; write 30s, 5m, 1h, 0 (free at once) or -1 (keep)" };
        return { settings: { extra_models_dirs: [], model_keep_alive: a.value as string }, restart_needed: false };
      },
    });
    render(SettingsPanel);
    expect(screen.getByTestId<HTMLSelectElement>("memory-defaults-cache").value).toBe("fast");
    const keep = screen.getByLabelText("Keep an idle model loaded for");
    expect(keep.getAttribute("aria-describedby")).toBe("keep-alive-hint");
    expect(screen.getByText("5m, 30s, 0 = free at once, -1 = keep")).toBeTruthy();
    await fireEvent.change(keep, { target: { value: " 30s " } });
    await waitFor(() => expect(calls.find((c) => c.cmd === "set_setting")?.args).toEqual({ key: "model_keep_alive", value: "30s" }));
    await fireEvent.change(keep, { target: { value: "soon" } });
    expect((await screen.findByRole("alert")).textContent).toContain("is not a keep-alive");
    expect(keep.classList.contains("invalid")).toBe(true);
  });

  it("refuses a port out of range at the field, in words, without asking the core", async () => {
    app.info = info;
    app.settings = { extra_models_dirs: [] };
    const calls = mockCore();
    render(SettingsPanel);
    const port = screen.getByTestId("api-port");
    await fireEvent.change(port, { target: { value: "70000" } });
    const message = await screen.findByTestId("setting-error-api_port");
    expect(message.textContent).toBe("Port must be a whole number from 1 to 65535");
    expect(port.getAttribute("aria-invalid")).toBe("true");
    expect(port.getAttribute("aria-describedby")).toBe(message.id);
    expect(calls.some((c) => c.cmd === "set_setting")).toBe(false);
  });

  it("shows a refusal that reads like Rust in words at the field, the raw text behind Details", async () => {
    app.info = info;
    app.settings = { extra_models_dirs: [] };
    mockCore({
      set_setting: () => {
        throw { field: "gateway_port", message: "invalid setting gateway_port: '8080.5': invalid type: floating point `8080.5`, expected u16" };
      },
    });
    render(SettingsPanel);
    await fireEvent.change(screen.getByTestId("gateway-port"), { target: { value: "8080" } });
    const message = await screen.findByTestId("setting-error-gateway_port");
    expect(message.textContent).toBe("Gateway port must be a whole number from 1 to 65535");
    expect(message.textContent).not.toMatch(/u16|invalid type/);
    const details = message.parentElement!.querySelector("details")!;
    expect(details.textContent).toContain("expected u16");
    expect(details.open).toBe(false);
  });

  it("drops the core's own prefix: the field already says which setting is wrong", async () => {
    app.info = info;
    app.settings = { extra_models_dirs: [] };
    mockCore({
      set_setting: () => {
        throw { field: "ollama_url", message: "invalid setting ollama_url: 'localhost' is not a URL; write http://host:port" };
      },
    });
    render(SettingsPanel);
    const url = screen.getByTestId("ollama-url");
    await fireEvent.change(url, { target: { value: "localhost" } });
    const message = await screen.findByTestId("setting-error-ollama_url");
    expect(message.textContent).toBe("'localhost' is not a URL; write http://host:port");
    expect(url.getAttribute("aria-describedby")).toBe(message.id);
  });

  it("says why the models folder cannot be chosen when an environment variable sets it", () => {
    mockCore();
    app.info = { ...info, models_dir_fixed: true };
    app.settings = { extra_models_dirs: [] };
    render(SettingsPanel);
    const choose = screen.getAllByRole<HTMLButtonElement>("button", { name: "Choose…" })[0];
    expect(choose.disabled).toBe(true);
    expect(document.getElementById(choose.getAttribute("aria-describedby")!)?.textContent).toContain(
      "Set by the environment variable DIFFUGEN_MODELS_DIR",
    );
  });

  it("locks a setting an environment variable overrides, naming the variable; the others stay editable", async () => {
    app.info = { ...info, locked: [{ key: "vram_policy", variable: "DIFFUGEN_VRAM_POLICY" }] };
    app.settings = { extra_models_dirs: [], vram_policy: "never" };
    const calls = mockCore({
      set_setting: (a) => ({ settings: { extra_models_dirs: [], [a.key as string]: a.value }, restart_needed: false }),
    });
    render(SettingsPanel);
    const policy = screen.getByTestId<HTMLSelectElement>("vram-policy");
    expect(policy.disabled).toBe(true);
    const note = document.getElementById(policy.getAttribute("aria-describedby")!);
    expect(note?.textContent).toContain("DIFFUGEN_VRAM_POLICY");
    expect(note?.textContent).toContain("unset it to use this setting");
    expect(screen.getAllByText(/Set by the environment variable/)).toHaveLength(1);

    // A change that reaches it anyway is not saved.
    await fireEvent.change(policy, { target: { value: "always" } });
    expect(calls.some((c) => c.cmd === "set_setting")).toBe(false);

    const port = screen.getByTestId<HTMLInputElement>("api-port");
    expect(port.disabled).toBe(false);
    expect(port.hasAttribute("aria-describedby")).toBe(false);
    expect(screen.getAllByRole<HTMLButtonElement>("button", { name: "Choose…" })[0].disabled).toBe(false);
    await fireEvent.change(port, { target: { value: "5200" } });
    await waitFor(() => expect(calls.find((c) => c.cmd === "set_setting")?.args).toEqual({ key: "api_port", value: "5200" }));
  });

  it("a locked field keeps its hint among what describes it, beside the note naming the variable", () => {
    mockCore();
    app.info = { ...info, locked: [{ key: "model_keep_alive", variable: "DIFFUGEN_KEEP_ALIVE" }] };
    app.settings = { extra_models_dirs: [] };
    render(SettingsPanel);
    const keepAlive = screen.getByTestId<HTMLInputElement>("keep-alive");
    expect(keepAlive.disabled).toBe(true);
    const notes = keepAlive.getAttribute("aria-describedby")!.split(" ").map((id) => document.getElementById(id)?.textContent);
    expect(notes).toHaveLength(2);
    expect(notes[0]).toContain("5m, 30s, 0 = free at once, -1 = keep");
    expect(notes[1]).toContain("Set by the environment variable DIFFUGEN_KEEP_ALIVE");
  });

  it("locks every setting the environment overrides, each with its own note", () => {
    mockCore();
    app.info = {
      ...info,
      locked: [
        { key: "api_key", variable: "DIFFUGEN_API_KEY" },
        { key: "ollama_url", variable: "OLLAMA_HOST" },
        { key: "models_dir", variable: "DIFFUGEN_MODELS_DIR" },
        { key: "extra_models_dirs", variable: "DIFFUGEN_EXTRA_MODELS_DIRS" },
        { key: "hf_token", variable: "HF_TOKEN" },
      ],
    };
    app.settings = { extra_models_dirs: [], models_dir: "/elsewhere" };
    render(SettingsPanel);
    for (const [testid, variable] of [
      ["api-key", "DIFFUGEN_API_KEY"],
      ["ollama-url", "OLLAMA_HOST"],
      ["hf-token", "HF_TOKEN"],
    ]) {
      const input = screen.getByTestId<HTMLInputElement>(testid);
      expect(input.disabled).toBe(true);
      expect(document.getElementById(input.getAttribute("aria-describedby")!)?.textContent).toContain(variable);
    }
    const [models, outputs] = screen.getAllByRole<HTMLButtonElement>("button", { name: "Choose…" });
    expect(models.disabled).toBe(true);
    expect(screen.getByRole<HTMLButtonElement>("button", { name: "Default" }).disabled).toBe(true);
    expect(outputs.disabled).toBe(false);
    expect(screen.getByTestId("setting-locked-extra_models_dirs").textContent).toContain("DIFFUGEN_EXTRA_MODELS_DIRS");
    expect(screen.getByTestId<HTMLInputElement>("api-host").disabled).toBe(false);
  });
});
