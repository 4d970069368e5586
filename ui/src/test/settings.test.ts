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
});
