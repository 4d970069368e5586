import { describe, expect, it } from "vitest";
import { fireEvent, render, screen } from "@testing-library/svelte";
import Toasts from "../components/Toasts.svelte";
import { app, toastError } from "../lib/state.svelte";
import { checkNumberSetting, fieldMessage, OLLAMA_HINT, plainError, settingError } from "../lib/errors";

describe("Errors in plain words", () => {
  it("never shows an OS error raw: a refused connection becomes a sentence, the raw text its detail", () => {
    expect(plainError("Connection refused (os error 111)")).toEqual({
      text: "Nothing answered at that address: the program isn't running, or the address is wrong.",
      detail: "Connection refused (os error 111)",
      field: null,
    });
  });

  it("names Ollama when it is Ollama that does not answer, and says how to start it", () => {
    const raw = "error sending request for url (http://127.0.0.1:11434/api/ps): tcp connect error: Connection refused (os error 111)";
    expect(plainError(raw).text).toBe(OLLAMA_HINT);
    expect(plainError(raw).detail).toBe(raw);
  });

  it("keeps the app's own words about what it was doing, and replaces the OS's", () => {
    expect(plainError({ message: "cannot save the image to /home/me/a.png: No space left on device (os error 28)", field: null }).text).toBe(
      "Cannot save the image to /home/me/a.png — the disk is full.",
    );
    expect(plainError(new Error("cannot read /m/x.gguf: No such file or directory (os error 2)")).text).toBe(
      "Cannot read /m/x.gguf — a file or folder it needs isn't there.",
    );
    expect(plainError("operation timed out").text).toBe("The connection timed out: the other side took too long to answer.");
    expect(plainError("cannot listen on 127.0.0.1:5199: Address already in use (os error 98)").text).toBe(
      "Cannot listen on 127.0.0.1:5199 — that port is already used by another program.",
    );
  });

  it("leaves a message that already reads well as it is", () => {
    const message = "the unload of qwen3:4b timed out after 10 s; rendering beside it";
    expect(plainError(message)).toEqual({ text: message, detail: null, field: null });
    expect(plainError({ field: "steps", message: "must be from 1 to 150, got 200" })).toEqual({
      text: "Steps: must be from 1 to 150, got 200",
      detail: null,
      field: "steps",
    });
  });

  it("a field's error names the field", () => {
    expect(fieldMessage("width", "must be a multiple of 64 from 64 to 2048, got 70")).toBe("Width must be a multiple of 64 from 64 to 2048, got 70");
    expect(fieldMessage("cfg_scale", "is out of range")).toBe("CFG scale is out of range");
    expect(fieldMessage("sampler", "unknown sampler 'lms'")).toBe("Sampler: unknown sampler 'lms'");
    expect(fieldMessage("prompt", "Describe the image you want.")).toBe("Describe the image you want.");
    expect(fieldMessage("loras[0]", "no LoRA named 'x' in loras/")).toBe("LoRA: no LoRA named 'x' in loras/");
  });

  it("checks ports and thread counts before they are saved", () => {
    expect(checkNumberSetting("api_port", "70000")).toBe("Port must be a whole number from 1 to 65535");
    expect(checkNumberSetting("api_port", "80.5")).toBe("Port must be a whole number from 1 to 65535");
    expect(checkNumberSetting("api_port", "8080")).toBeNull();
    expect(checkNumberSetting("threads", "0")).toBe("CPU threads must be a whole number from 1 to 256");
    expect(checkNumberSetting("api_host", "70000")).toBeNull();
    // A cleared port is refused, not saved as "back to the default"; cleared threads mean all cores.
    expect(checkNumberSetting("api_port", "")).toBe("Port must be a whole number from 1 to 65535");
    expect(checkNumberSetting("gateway_port", " ")).toBe("Gateway port must be a whole number from 1 to 65535");
    expect(checkNumberSetting("threads", "")).toBeNull();
  });

  it("puts serde's words about a setting into a sentence about the field", () => {
    const e = { field: "api_port", message: "invalid setting api_port: '70000': invalid value: integer `70000`, expected u16" };
    expect(settingError("api_port", e)).toEqual({
      text: "Port must be a whole number from 1 to 65535",
      detail: e.message,
      field: "api_port",
    });
    expect(settingError("gateway_enabled", { field: "gateway_enabled", message: "invalid type: string \"yes\", expected a boolean" }).text).toBe(
      "Ollama gateway must be on or off",
    );
  });

  it("an error toast shows the plain sentence; the raw message waits behind Details", async () => {
    app.toasts = [];
    render(Toasts);
    toastError({ message: "cannot write /data/settings.json: Permission denied (os error 13)", field: null });
    const toast = await screen.findByRole("alert");
    expect(toast.textContent).toContain("Cannot write /data/settings.json — DiffuGen isn't allowed to use that file or folder (permission denied).");
    const details = toast.querySelector("details")!;
    expect(details.open).toBe(false);
    await fireEvent.click(details.querySelector("summary")!);
    expect(screen.getByTestId("toast-detail").textContent).toBe("cannot write /data/settings.json: Permission denied (os error 13)");
  });
});
