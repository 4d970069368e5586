// Failures in a user's words. The core's messages are mostly written for people, but some carry what the OS or a
// library said ("Connection refused (os error 111)", "invalid type: integer `70000`, expected u16"): those are
// mapped to plain sentences here, and the raw text is kept as the detail a user (or a bug report) can open.
import { errorText, isAppError, label } from "./api";

export interface PlainError {
  /** What to show. */
  text: string;
  /** The raw message, when `text` replaced it. */
  detail: string | null;
  /** The form field to blame, when the core named one. */
  field: string | null;
}

/** What to tell a user whose DiffuGen cannot reach Ollama. */
export const OLLAMA_HINT =
  "Ollama isn't running — start it (ollama serve) or set its URL in Settings to share the GPU with an LLM.";

export type Shape =
  | "refused"
  | "timeout"
  | "reset"
  | "unreachable"
  | "dns"
  | "in-use"
  | "permission"
  | "missing"
  | "disk-full";

const SHAPES: { shape: Shape; test: RegExp; text: string }[] = [
  {
    shape: "refused",
    test: /connection refused|os error (111|61|10061)\b|ECONNREFUSED/i,
    text: "nothing answered at that address: the program isn't running, or the address is wrong.",
  },
  {
    shape: "timeout",
    test: /(operation|connection|request) timed out|os error (110|60|10060)\b|ETIMEDOUT|deadline has elapsed/i,
    text: "the connection timed out: the other side took too long to answer.",
  },
  {
    shape: "reset",
    test: /connection reset|broken pipe|os error (104|54|10054|32)\b|ECONNRESET|EPIPE/i,
    text: "the connection was cut off before the answer came.",
  },
  {
    shape: "unreachable",
    test: /no route to host|network is unreachable|os error (113|101|65|51)\b|EHOSTUNREACH|ENETUNREACH/i,
    text: "that address can't be reached from this computer's network.",
  },
  {
    shape: "dns",
    test: /dns error|failed to lookup address|name or service not known|nodename nor servname|no such host is known/i,
    text: "that host name couldn't be found.",
  },
  {
    shape: "in-use",
    test: /address already in use|os error (98|48|10048)\b|EADDRINUSE/i,
    text: "that port is already used by another program.",
  },
  {
    shape: "permission",
    test: /permission denied|access is denied|os error (13|5)\b|EACCES|EPERM/i,
    text: "DiffuGen isn't allowed to use that file or folder (permission denied).",
  },
  {
    shape: "missing",
    test: /no such file or directory|cannot find the (file|path)|os error (2|3)\b|ENOENT/i,
    text: "a file or folder it needs isn't there.",
  },
  {
    shape: "disk-full",
    test: /no space left|disk (is )?full|os error (28|112)\b|ENOSPC/i,
    text: "the disk is full.",
  },
];

/** Which known OS or network failure a message reports, if any. */
export function errorShape(raw: string): Shape | null {
  return SHAPES.find((s) => s.test.test(raw))?.shape ?? null;
}

/** Whether a message says a network peer could not be reached (refused, timed out, unreachable, unknown host). */
export function isConnectionFailure(raw: string): boolean {
  const shape = errorShape(raw);
  return shape === "refused" || shape === "timeout" || shape === "unreachable" || shape === "dns" || shape === "reset";
}

const OLLAMA = /ollama|:11434\b|\/api\/(ps|tags|generate|chat|version)\b/i;
// The words before a library's own chain ("error sending request for url (…): tcp connect error: …") are the
// app's, and say what was being done; the chain is not.
const TECHNICAL = /error sending request|tcp connect|error trying to connect|hyper|reqwest|client error|os error|\(url|https?:\/\//i;

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** `raw` in plain words when it reports a known OS or network failure; `null` when it reads fine as it is. */
export function plainText(raw: string): string | null {
  const known = SHAPES.find((s) => s.test.test(raw));
  if (!known) return null;
  if (isConnectionFailure(raw) && OLLAMA.test(raw)) return OLLAMA_HINT;
  const context = raw.split(": ")[0];
  if (context !== raw && !TECHNICAL.test(context) && !known.test.test(context)) {
    return `${capitalize(context)} — ${known.text}`;
  }
  return capitalize(known.text);
}

/** Why a job failed or was cancelled, as a sentence: plain words for a known OS failure, and the core's own reasons
 * ("cancelled in the app") with a capital. */
export function reasonSentence(raw: string): string {
  return capitalize(plainText(raw) ?? raw);
}

/** Any failure as a user should read it, with the raw message kept as its detail when it was replaced. */
export function plainError(e: unknown): PlainError {
  const raw = errorText(e);
  const field = isAppError(e) ? e.field : null;
  const text = plainText(raw);
  return text ? { text, detail: raw, field } : { text: raw, detail: null, field };
}

/** A number setting's allowed values, for the check before saving and for the words after a refusal. */
interface NumberRule {
  name: string;
  min: number;
  max: number;
  /** Whether an empty field is refused: a port has no "none" (it would silently fall back to the default). */
  required?: boolean;
}

const NUMBER_SETTINGS: Record<string, NumberRule> = {
  api_port: { name: "Port", min: 1, max: 65535, required: true },
  gateway_port: { name: "Gateway port", min: 1, max: 65535, required: true },
  threads: { name: "CPU threads", min: 1, max: 256 },
};

function ruleText(rule: NumberRule): string {
  return `${rule.name} must be a whole number from ${rule.min} to ${rule.max}`;
}

/** Checks a number setting before it is saved: `null` when fine (or not a number setting), else what is wrong. */
export function checkNumberSetting(key: string, value: string): string | null {
  const rule = NUMBER_SETTINGS[key];
  const text = value.trim();
  if (!rule) return null;
  if (text === "") return rule.required ? ruleText(rule) : null;
  const n = Number(text);
  return Number.isInteger(n) && n >= rule.min && n <= rule.max ? null : ruleText(rule);
}

// serde's words for a value of the wrong type or range.
const SERDE = /invalid (type|value|digit)|expected (u8|u16|u32|u64|usize|i8|i16|i32|i64|isize|f32|f64|a boolean|a string|a sequence|a map|struct)|number too large|number too small|cannot parse/i;

/** A refused setting in words a user can act on, at its field. */
export function settingError(key: string, e: unknown): PlainError {
  const raw = isAppError(e) ? e.message : errorText(e);
  const rule = NUMBER_SETTINGS[key];
  if (SERDE.test(raw)) {
    const text = rule
      ? ruleText(rule)
      : /boolean/i.test(raw)
        ? `${capitalize(label(key))} must be on or off`
        : `${capitalize(label(key))} doesn't accept that value`;
    return { text, detail: raw, field: key };
  }
  const plain = plainText(raw);
  // The core's messages start with its own prefix ("invalid setting api_host: …"); the field already says which.
  const own = raw.replace(/^invalid setting [a-z_]+: /, "");
  return plain ? { text: plain, detail: raw, field: key } : { text: capitalize(own), detail: null, field: key };
}

/**
 * A field's error as a sentence that names the field: the core writes "must be a multiple of 64 … got 70" for
 * `width`, which becomes "Width must be a multiple of 64 … got 70".
 */
export function fieldMessage(field: string, message: string): string {
  const name = label(field);
  const text = message.trim();
  if (text.toLowerCase().startsWith(name.toLowerCase())) return capitalize(text);
  if (/^(must|is|are|needs|need|only|should|cannot|can't|has|have|was|does|doesn't)\b/i.test(text)) {
    return `${name} ${text.charAt(0).toLowerCase()}${text.slice(1)}`;
  }
  if (/^[a-z'"`]/.test(text)) return `${name}: ${text}`;
  return text;
}
