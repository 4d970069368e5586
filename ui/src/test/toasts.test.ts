// The toasts: one at a time unless asked, so a burst of messages never covers the buttons that caused them.
import { beforeEach, describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen, waitFor } from "@testing-library/svelte";
import Toasts from "../components/Toasts.svelte";
import { app, dismiss, ERROR_SHOWN_MS, toast } from "../lib/state.svelte";

const texts = () => [...document.querySelectorAll(".toast")].map((t) => t.querySelector("span")?.textContent);

describe("Toasts", () => {
  beforeEach(() => {
    app.toasts = [];
  });

  it("three messages in a row show only the newest, with a button counting the two others", async () => {
    render(Toasts);
    toast("Upscaled ×2");
    toast("Added to “Keepers”");
    toast("Image moved to the trash", "info", { label: "Undo", run: () => {} });
    await waitFor(() => expect(texts()).toEqual(["Image moved to the trash"]));
    expect(screen.getByTestId("toasts-more").textContent).toBe("2 more messages");
    expect(screen.getByTestId("toasts-more").getAttribute("aria-expanded")).toBe("false");
  });

  it("the count button opens every message, oldest first, and folds them again", async () => {
    render(Toasts);
    toast("First");
    toast("Second");
    await fireEvent.click(await screen.findByText("1 more message"));
    expect(texts()).toEqual(["First", "Second"]);
    expect(screen.getByTestId("toasts-more").getAttribute("aria-expanded")).toBe("true");
    await fireEvent.click(screen.getByText("Show the newest only"));
    expect(texts()).toEqual(["Second"]);
  });

  it("an error folded behind a later message turns the count red and names it; opening shows it", async () => {
    render(Toasts);
    toast("Image 3 is locked by another program", "error", undefined, "os error 32");
    toast("Saved");
    toast("2 images moved to the trash", "info", { label: "Undo", run: () => {} });
    await waitFor(() => expect(texts()).toEqual(["2 images moved to the trash"]));
    const more = screen.getByTestId("toasts-more");
    expect(more.textContent).toBe("2 more messages (1 error)");
    expect(more.classList.contains("error")).toBe(true);
    await fireEvent.click(more);
    expect(texts()).toEqual(["Image 3 is locked by another program", "Saved", "2 images moved to the trash"]);
    expect(screen.getByRole("alert").textContent).toContain("Image 3 is locked by another program");
  });

  it("when the others are dismissed the count goes and the list folds back for the next burst", async () => {
    render(Toasts);
    toast("First");
    toast("Second");
    await fireEvent.click(await screen.findByText("1 more message"));
    dismiss(app.toasts[0].id);
    await waitFor(() => expect(screen.queryByTestId("toasts-more")).toBeNull());
    toast("Third");
    await waitFor(() => expect(texts()).toEqual(["Third"]));
  });

  it("an error kept for its details folds into a red count after a while, so it covers nothing for good", async () => {
    vi.useFakeTimers();
    render(Toasts);
    toast("Show in folder needs the program xdg-open", "error", undefined, "No such file or directory (os error 2)");
    await vi.advanceTimersByTimeAsync(100);
    expect(texts()).toEqual(["Show in folder needs the program xdg-open"]);
    await vi.advanceTimersByTimeAsync(ERROR_SHOWN_MS);
    expect(texts()).toEqual([]);
    const more = screen.getByTestId("toasts-more");
    expect(more.textContent).toBe("1 message (1 error)");
    expect(more.classList.contains("error")).toBe(true);
    // Still there to read: the count opens it.
    await fireEvent.click(more);
    expect(texts()).toEqual(["Show in folder needs the program xdg-open"]);
    vi.useRealTimers();
  });

  it("an error without details folds the same way rather than vanishing unread", async () => {
    vi.useFakeTimers();
    render(Toasts);
    toast("Download of sd-turbo failed: the download kept failing", "error");
    await vi.advanceTimersByTimeAsync(ERROR_SHOWN_MS + 100);
    expect(texts()).toEqual([]);
    expect(screen.getByTestId("toasts-more").textContent).toBe("1 message (1 error)");
    vi.useRealTimers();
  });
});
