// The themes against WCAG 2.2 AA, read from app.css itself: text at least 4.5:1 on every surface, the focus ring
// and the borders of inputs at least 3:1 (SC 1.4.3, 1.4.11, 2.4.7).
import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const css = readFileSync(resolve(dirname(fileURLToPath(import.meta.url)), "../app.css"), "utf8");

function block(selector: string): Record<string, string> {
  const start = css.indexOf(selector);
  expect(start, `${selector} in app.css`).toBeGreaterThanOrEqual(0);
  const body = css.slice(css.indexOf("{", start) + 1, css.indexOf("}", start));
  return Object.fromEntries([...body.matchAll(/(--[\w-]+):\s*(#[0-9a-fA-F]{6})\s*;/g)].map((m) => [m[1], m[2].toLowerCase()]));
}

const dark = block('[data-theme="dark"]');
const themes = { dark, light: { ...dark, ...block('[data-theme="light"]') } };

function luminance(hex: string): number {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255).map((c) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4));
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

function contrast(a: string, b: string): number {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

const SURFACES = ["--bg", "--panel", "--panel-2"];
const TEXT = ["--text", "--muted", "--placeholder", "--accent", "--good", "--warn", "--bad"];

/** The rule whose selector list includes `selector`. */
function rule(selector: string): string {
  const at = css.indexOf(selector);
  expect(at, `${selector} in app.css`).toBeGreaterThanOrEqual(0);
  return css.slice(css.indexOf("{", at) + 1, css.indexOf("}", at));
}

describe.each(Object.entries(themes))("The %s theme", (_name, colors) => {
  const color = (v: string) => {
    expect(colors[v], `${v} is set`).toMatch(/^#[0-9a-f]{6}$/);
    return colors[v];
  };

  it.each(TEXT)("%s text reads at 4.5:1 or more on every surface", (text) => {
    for (const surface of SURFACES) expect(contrast(color(text), color(surface)), `${text} on ${surface}`).toBeGreaterThanOrEqual(4.5);
  });

  it("the primary button's text reads at 4.5:1 or more", () => {
    expect(contrast(color("--on-primary"), color("--primary"))).toBeGreaterThanOrEqual(4.5);
  });

  it("the focus ring stands out at 3:1 or more from every surface", () => {
    for (const surface of SURFACES) expect(contrast(color("--focus"), color(surface)), `--focus on ${surface}`).toBeGreaterThanOrEqual(3);
  });

  it("the borders of inputs stand out at 3:1 or more from every surface and from the input's own fill", () => {
    for (const surface of SURFACES) expect(contrast(color("--field-border"), color(surface)), `--field-border on ${surface}`).toBeGreaterThanOrEqual(3);
  });
});

describe("Focus and invalid styles", () => {
  it("focus is a 2 px outline in the focus colour, set apart from the control by a gap", () => {
    const focus = rule("button:focus-visible");
    expect(focus).toMatch(/outline:\s*2px solid var\(--focus\)/);
    expect(focus).toMatch(/outline-offset:\s*2px/);
    expect(focus).not.toContain("--bad");
  });

  it("inputs are drawn with the border colour that meets 3:1", () => {
    expect(rule("textarea {\n  background")).toContain("border: 1px solid var(--field-border)");
  });

  it("invalid is a red border, never the focus colour, so the two cannot be confused", () => {
    const invalid = rule('[aria-invalid="true"]');
    expect(invalid).toContain("var(--bad)");
    expect(invalid).not.toContain("--focus");
    expect(invalid).not.toContain("outline");
    for (const colors of Object.values(themes)) expect(colors["--bad"]).not.toBe(colors["--focus"]);
  });

  it("placeholders look like placeholders: muted and italic", () => {
    const placeholder = rule("::placeholder");
    expect(placeholder).toContain("var(--placeholder)");
    expect(placeholder).toContain("font-style: italic");
  });
});
