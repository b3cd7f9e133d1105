import { existsSync, linkSync, mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { errorLine, PetriError } from '../errors.js';
import { tempName } from './temp.js';
import { type Descriptor, type ImageIndex, MEDIA_TYPES, REF_NAME_ANNOTATION } from './types.js';

/**
 * The files of an OCI image layout (image-spec `image-layout.md`):
 * `oci-layout`, `index.json` and `blobs/sha256/`. Standard tools (skopeo,
 * umoci) read a layout like this one directly.
 */
export const LAYOUT_FILE = 'oci-layout';
export const INDEX_FILE = 'index.json';

export function blobsDir(dir: string): string {
  return join(dir, 'blobs', 'sha256');
}

/** Creates whatever of the layout is missing; concurrent callers are fine (each file appears whole or not at all). */
export function createLayout(dir: string): void {
  // Already there (each open of the store): three stats, no temp file.
  if (existsSync(join(dir, INDEX_FILE)) && existsSync(join(dir, LAYOUT_FILE)) && existsSync(blobsDir(dir))) return;
  try {
    mkdirSync(blobsDir(dir), { recursive: true });
    createFileOnce(join(dir, LAYOUT_FILE), `${JSON.stringify({ imageLayoutVersion: '1.0.0' })}\n`);
    const empty: ImageIndex = { schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests: [] };
    createFileOnce(join(dir, INDEX_FILE), JSON.stringify(empty));
  } catch (error) {
    if (error instanceof PetriError) throw error;
    throw new PetriError(
      `cannot create the image store at ${dir}: ${errorLine(error)}; run petri as root or set PETRI_ROOT to a writable directory`,
      { cause: error },
    );
  }
}

/** Writes `path` with `content` unless it exists: a temp file hard-linked into place, so readers never see it half-written. */
function createFileOnce(path: string, content: string): void {
  const temp = join(path, '..', tempName());
  writeFileSync(temp, content);
  try {
    linkSync(temp, path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  } finally {
    unlinkSync(temp);
  }
}

/** Reads index.json. It is replaced atomically, so reading needs no lock. */
export function readIndex(dir: string): ImageIndex {
  const path = join(dir, INDEX_FILE);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new PetriError(`cannot read the image store's index ${path}: ${errorLine(error)}`, { cause: error });
  }
  let index: ImageIndex;
  try {
    index = JSON.parse(text) as ImageIndex;
  } catch (error) {
    throw new PetriError(
      `the image store's index ${path} is not valid JSON (${errorLine(error)}): restore it from a backup or remove the store`,
      { cause: error },
    );
  }
  if (index?.schemaVersion !== 2 || !Array.isArray(index.manifests)) {
    throw new PetriError(
      `the image store's index ${path} is not an OCI image index (schemaVersion 2 with manifests): restore it or remove the store`,
    );
  }
  return index;
}

/** Replaces index.json atomically (temp file + rename). Callers hold the index lock. */
export function writeIndex(dir: string, index: ImageIndex): void {
  const temp = join(dir, tempName());
  writeFileSync(temp, JSON.stringify(index));
  try {
    renameSync(temp, join(dir, INDEX_FILE));
  } catch (error) {
    try {
      unlinkSync(temp);
    } catch {
      // already gone
    }
    throw error;
  }
}

/** The `name:tag` an index entry carries, if any. */
export function refName(entry: Descriptor): string | undefined {
  return entry.annotations?.[REF_NAME_ANNOTATION];
}

/** An index entry for `manifest` named `ref`. */
export function namedEntry(manifest: Descriptor, ref: string): Descriptor {
  const entry: Descriptor = { mediaType: manifest.mediaType, digest: manifest.digest, size: manifest.size };
  if (manifest.platform) entry.platform = manifest.platform;
  entry.annotations = { ...manifest.annotations, [REF_NAME_ANNOTATION]: ref };
  return entry;
}
