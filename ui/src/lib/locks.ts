// Settings an environment variable overrides this run (`AppInfo.locked`): the settings file keeps its value, but the
// variable wins while it is set, so the panels show such a setting locked and name the variable.
import type { AppInfo, Settings } from "./bindings";

/** The environment variable that sets `key` this run, or null when the settings file's value applies. */
export function lockedBy(info: AppInfo | null | undefined, key: keyof Settings): string | null {
  const lock = info?.locked?.find((l) => l.key === key);
  if (lock) return lock.variable;
  // The older flag, for the models folder only.
  if (key === "models_dir" && info?.models_dir_fixed) return "DIFFUGEN_MODELS_DIR";
  return null;
}

/** The id of the note that says which variable locks `key` (what its control's `aria-describedby` names). */
export const lockNoteId = (key: keyof Settings) => `setting-locked-${key}`;

/** What a control's attributes become (spread onto it: `<button {...lockAttributes(...)}>`). */
export interface LockAttributes {
  disabled?: boolean;
  title?: string;
  "aria-describedby"?: string;
}

/**
 * The attributes of a control that changes `key`. While an environment variable sets `key` the control is disabled,
 * titled with the variable and described by the note naming it (`lockNoteId(key)`, which `LockNote` shows). `other`
 * is what the control already has: disabled for another reason, and the id of the note (or hint) that says why; that
 * note stays among the ones describing it.
 */
export function lockAttributes(
  info: AppInfo | null | undefined,
  key: keyof Settings,
  other: { disabled?: boolean; describedBy?: string | null } = {},
): LockAttributes {
  const variable = lockedBy(info, key);
  const ids = [other.describedBy, variable ? lockNoteId(key) : null].filter(Boolean).join(" ");
  return {
    ...(variable || other.disabled ? { disabled: true } : {}),
    ...(variable ? { title: `Set by the environment variable ${variable}` } : {}),
    ...(ids ? { "aria-describedby": ids } : {}),
  };
}
