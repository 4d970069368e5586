// What the gallery's images can be used for, wherever they show (the detail view, Generate's results, the queue's
// finished jobs): remix, init image, save as, favorite. Each reports in a toast and answers whether it worked.
import { save } from "@tauri-apps/plugin-dialog";
import { commands } from "./bindings";
import type { Entry, Page } from "./bindings";
import { call, errorText, isAppError, plural } from "./api";
import { plainText } from "./errors";
import { readGalleryImage } from "./images";
import { app, draft, loadForm, refreshBoards, setInitImage, toast, toastError } from "./state.svelte";

/** The last part of a path or file name ("C:\\in\\holiday.jpg" → "holiday.jpg"). */
export function baseName(path: string): string {
  return path.split(/[\\/]/).pop() || path;
}

/** Whether the image was made from an init image (img2img or inpainting), as its record tells. */
export function madeFromImage(entry: Entry | null | undefined): boolean {
  return !!entry && ((entry.init_image != null && entry.init_image !== "") || entry.strength != null);
}

/**
 * Every recorded parameter of image `id` into the Generate form, the seed locked, and the init image and strength
 * too when DiffuGen kept them, so Generate makes the image again. `record` is the image's entry when the caller has
 * it (else it is read when needed). Shows Generate.
 */
export async function remixImage(id: number, record: Entry | null = null): Promise<boolean> {
  try {
    const values = await call(commands.galleryRemix(id));
    // The core's remix leaves out what is not recorded; the record may still know the seed, and tells whether the
    // image was made from an init image that did not come back.
    if (!record && (values.seed == null || !values.init_image)) {
      record = await call(commands.galleryEntry(id)).catch(() => null);
    }
    if (values.seed == null && record?.seed != null) values.seed = record.seed;
    if (values.init_image && values.strength == null && record?.strength != null) values.strength = record.strength;
    // The kept copy is named by its hash: the chip names the image it belongs to instead.
    const initName = `the init image of #${id}`;
    loadForm(values, values.init_image ? initName : null);
    app.detail = null;
    const seed = values.seed != null && values.seed >= 0 ? `seed ${values.seed} locked` : "seed random";
    if (values.init_image) {
      toast(`Parameters and init image loaded (strength ${(values.strength ?? 0.75).toFixed(2)}), ${seed}`);
    } else if (madeFromImage(record)) {
      // Said calmly: images made before DiffuGen kept init images simply have none to give back.
      const from = record?.init_image ? ` (${baseName(record.init_image)})` : "";
      toast(
        `Parameters loaded, ${seed}. This image was made from an init image${from} that DiffuGen didn't keep; choose it again under img2img to reproduce it.`,
      );
    } else {
      toast(values.seed != null && values.seed >= 0 ? `Parameters loaded, ${seed}` : "Parameters loaded into Generate");
    }
    return true;
  } catch (e) {
    toastError(e);
    return false;
  }
}

/** Image `id` as the form's init image (img2img); shows Generate. `inpaint`: with the mask editor open. */
export async function useAsInitImage(id: number, inpaint = false): Promise<boolean> {
  try {
    setInitImage(await readGalleryImage(id));
    app.detail = null;
    app.view = "generate";
    if (inpaint) draft.inpaint = true;
    toast(inpaint ? `Image #${id} ready to inpaint: paint the mask` : `Image #${id} set as the init image (img2img)`);
    return true;
  } catch (e) {
    toastError(e);
    return false;
  }
}

/** Image `id` as the init image with the mask editor open ("Send to inpaint"); shows Generate. */
export function sendToInpaint(id: number): Promise<boolean> {
  return useAsInitImage(id, true);
}

/** Asks where to save a copy of image `id` (named `path`'s file name), and copies it there. */
export async function saveImageAs(id: number, path: string | null = null): Promise<boolean> {
  try {
    const name = path ? baseName(path) : `diffugen-${id}.png`;
    const destination = await save({ defaultPath: name, filters: [{ name: "PNG image", extensions: ["png"] }] });
    if (!destination) return false;
    await call(commands.gallerySaveAs(id, destination));
    toast(`Saved to ${destination}`);
    return true;
  } catch (e) {
    toastError(e);
    return false;
  }
}

/** Marks image `id` a favorite (or not); answers its updated entry, or `null` when that failed. */
export async function setFavorite(id: number, favorite: boolean): Promise<Entry | null> {
  try {
    return await call(commands.galleryFavorite(id, favorite));
  } catch (e) {
    toastError(e);
    return null;
  }
}

/**
 * How many images a bulk command (`galleryDeleteMany`, `galleryRestoreMany`, `galleryFavoriteMany`) did before it
 * failed: the first that many of the ids it was given, as its message counts them ("3 of 5 images done; image 42
 * failed: …"). 0 when the message does not say (the first one failed, or the call never ran).
 */
export function doneBeforeFailure(e: unknown): number {
  const raw = isAppError(e) ? e.message : errorText(e);
  const counted = /^\s*(\d+) of (\d+) images? done\b/i.exec(raw);
  return counted ? Number(counted[1]) : 0;
}

/**
 * The core's message in an error toast, as it wrote it (without the field it names: "range: …" would say nothing
 * more), an OS error in plain words with the raw message as the toast's details.
 */
export function toastCoreError(e: unknown): void {
  const raw = (isAppError(e) ? e.message : errorText(e)).trim();
  const plain = plainText(raw);
  const text = plain ?? raw;
  toast(text.charAt(0).toUpperCase() + text.slice(1), "error", undefined, plain ? raw : null);
}

/** The ids of every image on board `name`, read page by page (following each page's cursor) until the last. */
export async function boardImageIds(name: string): Promise<number[]> {
  const ids: number[] = [];
  let cursor: string | null = null;
  do {
    const page: Page = await call(commands.galleryPage({ board: name, cursor, limit: 500 }));
    ids.push(...page.entries.map((e) => e.id));
    // A cursor that does not move on would read the same page forever.
    cursor = page.next_cursor !== cursor ? page.next_cursor : null;
  } while (cursor);
  return ids;
}

/**
 * Deletes board `name` (its images stay in the gallery) and offers to take that back: the toast's Undo makes the
 * board again and files the same images into it. The images are listed before the board goes, since afterwards
 * nothing says which they were. Throws what the core said when it refused (the board is then kept).
 */
export async function deleteBoard(name: string): Promise<void> {
  const ids = await boardImageIds(name);
  app.boards = await call(commands.galleryDeleteBoard(name));
  // The images' board lists named it: the grid reads them again.
  app.galleryVersion++;
  const kept = ids.length ? ` (${plural(ids.length, "image")} kept in the gallery)` : "";
  toast(`Deleted board “${name}”${kept}`, "info", { label: "Undo", run: () => void undeleteBoard(name, ids) });
}

/** A failure's reason in plain words, and the raw message when those replaced it. */
function reason(e: unknown): { text: string; detail: string | null } {
  // The core's own message, without the field it blames ("board: …"): the sentence around it says which.
  const raw = isAppError(e) ? e.message : errorText(e);
  const plain = plainText(raw);
  const text = (plain ?? raw).trim().replace(/[.]$/, "");
  return { text: text.charAt(0).toUpperCase() + text.slice(1), detail: plain ? raw : null };
}

/**
 * Undoes `deleteBoard`: makes board `name` again and files images `ids` back into it, then reads the boards again.
 * A failure is told calmly in a toast (say a board of that name was made meanwhile); answers whether it worked.
 */
export async function undeleteBoard(name: string, ids: number[]): Promise<boolean> {
  try {
    app.boards = await call(commands.galleryCreateBoard(name));
  } catch (e) {
    if (isAppError(e) && /exists already|already exists/i.test(e.message)) {
      toast(`Can't bring back “${name}”: a board of that name was made in the meantime. Its images are still in the gallery.`, "error");
    } else {
      const why = reason(e);
      toast(`Couldn't bring back the board “${name}”. ${why.text}.`, "error", undefined, why.detail);
    }
    await refreshBoards().catch(() => {});
    return false;
  }
  let filed = true;
  try {
    if (ids.length) await call(commands.gallerySetBoard(ids, name, true));
  } catch (e) {
    filed = false;
    const why = reason(e);
    toast(`The board “${name}” is back, but its images couldn't be filed into it again. ${why.text}.`, "error", undefined, why.detail);
  }
  // The counts changed with the images filed back, and the grid shows which boards each image is on.
  await refreshBoards().catch(toastError);
  app.galleryVersion++;
  if (filed) toast(ids.length ? `Board “${name}” is back with its ${plural(ids.length, "image")}` : `Board “${name}” is back`);
  return filed;
}
