// Pictures handed to the form as img2img sources: read from a file (picked or dropped) or from a gallery image, as
// the data URL the core takes, with their name and pixel size (read from the file's header, so a mismatch with the
// form's size shows before anything is sent).
import { commands } from "./bindings";
import { call } from "./api";

export interface Size {
  width: number;
  height: number;
}

/** An image ready to be the form's init image. */
export interface PickedImage {
  dataUrl: string;
  /** A file name, or what the gallery calls the image. */
  name: string;
  /** `null` when the header could not be read (the core still decodes the image itself). */
  size: Size | null;
}

export const IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp"];

function u16be(b: Uint8Array, i: number): number {
  return (b[i] << 8) | b[i + 1];
}
function u32be(b: Uint8Array, i: number): number {
  return ((b[i] << 24) >>> 0) + (b[i + 1] << 16) + (b[i + 2] << 8) + b[i + 3];
}
function u16le(b: Uint8Array, i: number): number {
  return b[i] | (b[i + 1] << 8);
}
function u24le(b: Uint8Array, i: number): number {
  return b[i] | (b[i + 1] << 8) | (b[i + 2] << 16);
}
function ascii(b: Uint8Array, i: number, n: number): string {
  return String.fromCharCode(...b.subarray(i, i + n));
}

/** An image's pixel size from its header (PNG, JPEG, WebP), or `null` when the bytes are none of those. */
export function imageSize(b: Uint8Array): Size | null {
  if (b.length >= 24 && b[0] === 0x89 && ascii(b, 1, 3) === "PNG" && ascii(b, 12, 4) === "IHDR") {
    return { width: u32be(b, 16), height: u32be(b, 20) };
  }
  if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8) {
    let i = 2;
    while (i + 9 < b.length) {
      if (b[i] !== 0xff) return null;
      const marker = b[i + 1];
      if (marker === 0xff) {
        i++;
        continue;
      }
      const length = u16be(b, i + 2);
      // Start-of-frame markers (baseline, progressive, ...), not DHT (c4), JPG (c8) or DAC (cc).
      if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
        return { width: u16be(b, i + 7), height: u16be(b, i + 5) };
      }
      i += 2 + length;
    }
    return null;
  }
  if (b.length >= 30 && ascii(b, 0, 4) === "RIFF" && ascii(b, 8, 4) === "WEBP") {
    const chunk = ascii(b, 12, 4);
    if (chunk === "VP8X") return { width: u24le(b, 24) + 1, height: u24le(b, 27) + 1 };
    if (chunk === "VP8L" && b[20] === 0x2f) {
      const bits = b[21] | (b[22] << 8) | (b[23] << 16) | (b[24] << 24);
      return { width: (bits & 0x3fff) + 1, height: ((bits >> 14) & 0x3fff) + 1 };
    }
    if (chunk === "VP8 ") return { width: u16le(b, 26) & 0x3fff, height: u16le(b, 28) & 0x3fff };
  }
  return null;
}

function base64(bytes: Uint8Array): string {
  let binary = "";
  const CHUNK = 0x8000;
  for (let i = 0; i < bytes.length; i += CHUNK) {
    binary += String.fromCharCode(...bytes.subarray(i, i + CHUNK));
  }
  return btoa(binary);
}

function bytesOf(file: Blob): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(new Uint8Array(reader.result as ArrayBuffer));
    reader.onerror = () => reject(reader.error ?? new Error("cannot read the file"));
    reader.readAsArrayBuffer(file);
  });
}

/** A picked or dropped file as an init image; refuses what is not a PNG, JPEG or WebP picture. */
export async function readImageFile(file: File): Promise<PickedImage> {
  if (!IMAGE_TYPES.includes(file.type)) {
    throw new Error(`${file.name} is not an image DiffuGen can use (PNG, JPEG or WebP)`);
  }
  const bytes = await bytesOf(file);
  return { dataUrl: `data:${file.type};base64,${base64(bytes)}`, name: file.name, size: imageSize(bytes) };
}

/** The bytes of a `data:...;base64,` URL (empty when it is not one). */
export function dataUrlBytes(url: string): Uint8Array {
  const comma = url.indexOf(",");
  if (!url.startsWith("data:") || comma < 0 || !url.slice(0, comma).endsWith(";base64")) return new Uint8Array();
  try {
    const binary = atob(url.slice(comma + 1));
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  } catch {
    return new Uint8Array();
  }
}

/** The pixel size of the image in a data URL, read from its header; `null` when it cannot be read. */
export function dataUrlSize(url: string): Size | null {
  return imageSize(dataUrlBytes(url));
}

/**
 * A gallery image as an init image: the core reads the file and answers a data URL (the window cannot read the
 * pixels of a `gallery://` image itself). Throws the core's error when the file cannot be read.
 */
export async function readGalleryImage(id: number): Promise<PickedImage> {
  const dataUrl = await call(commands.galleryImageData(id));
  return { dataUrl, name: `gallery image #${id}`, size: dataUrlSize(dataUrl) };
}

/** The drag data type that carries a gallery image's id (results and gallery cells set it; the form reads it). */
export const GALLERY_DRAG_TYPE = "application/x-diffugen-gallery-id";

/** The drag data type that carries the ids of the gallery images dragged (a JSON array: the selection, or the one
 * cell dragged); boards read it. */
export const GALLERY_IDS_TYPE = "application/x-diffugen-gallery-ids";

/** Whether a drag carries something that can become the init image: files from the OS, or a gallery image. */
export function carriesImage(dataTransfer: DataTransfer | null): boolean {
  return !!dataTransfer && [...dataTransfer.types].some((t) => t === "Files" || t === GALLERY_DRAG_TYPE);
}

/** The gallery ids a drag carries (for boards), or an empty list. */
export function draggedIds(dataTransfer: DataTransfer | null): number[] {
  if (!dataTransfer) return [];
  let ids: unknown;
  try {
    ids = JSON.parse(dataTransfer.getData(GALLERY_IDS_TYPE) || "[]");
  } catch {
    return [];
  }
  return Array.isArray(ids) ? ids.filter((id): id is number => Number.isInteger(id)) : [];
}

/**
 * What a drop hands over as the init image: the first picture among the files dropped from the OS (a file that is
 * no picture is refused, naming it), else the gallery image dragged from a result or a gallery cell; `null` when
 * the drop carries neither.
 */
export async function droppedImage(dataTransfer: DataTransfer | null): Promise<PickedImage | null> {
  if (!dataTransfer) return null;
  const files = [...(dataTransfer.files ?? [])];
  if (files.length > 0) return readImageFile(files.find((f) => IMAGE_TYPES.includes(f.type)) ?? files[0]);
  const id = Number(dataTransfer.getData(GALLERY_DRAG_TYPE) || NaN);
  return Number.isInteger(id) ? readGalleryImage(id) : null;
}

/** The first picture a paste carries (a copied image or image file), or `null` when it carries none. */
export async function pastedImage(clipboard: DataTransfer | null): Promise<PickedImage | null> {
  if (!clipboard) return null;
  const files = [...(clipboard.files ?? [])];
  for (const item of [...(clipboard.items ?? [])]) {
    if (item.kind !== "file") continue;
    const file = item.getAsFile();
    if (file && !files.includes(file)) files.push(file);
  }
  const image = files.find((f) => IMAGE_TYPES.includes(f.type));
  return image ? readImageFile(image) : null;
}

/**
 * The size nearest to `size` that the engine accepts: both sides multiples of `multiple`, from 64 to `max`, scaled
 * down (keeping the aspect ratio) when a side is larger.
 */
export function acceptedSize(size: Size, multiple = 64, max = 2048): Size {
  const scale = Math.min(1, max / Math.max(size.width, size.height));
  const side = (v: number) => Math.min(max, Math.max(64, Math.round((v * scale) / multiple) * multiple));
  return { width: side(size.width), height: side(size.height) };
}
