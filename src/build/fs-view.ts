import { lstatSync, readdirSync, readFileSync, readlinkSync, type Stats } from 'node:fs';
import { join, resolve } from 'node:path';
import { IgnoreMatcher } from '../dockerfile/dockerignore.js';
import { PetriError } from '../errors.js';
import { runnerPath } from '../runtime/runner-binary.js';
import { recordedOpaqueDirs } from '../snapshot/layer-meta.js';
import { isOverlayWhiteout, OVERLAY_OPAQUE_XATTR } from '../snapshot/whiteouts.js';
import { childProcess } from '../util/lazy-builtins.js';

/**
 * A read-only view of a filesystem tree that COPY/ADD read from: the build
 * context, or a stage's or image's layers. Paths are relative to the view's root,
 * `/`-separated, without `.`/`..` (see `cleanRel`); `''` is the root. The parent
 * components of a path are taken as they are: a symlink or a file among them
 * makes the path missing. `resolvePath` follows symlinks inside the root.
 */
export interface FsView {
  /** What the view shows, for messages: `the build context`, `the --from stage or image`. */
  readonly description: string;
  /** The entry's metadata without following it, or undefined when it is not there (missing, whited out, ignored). */
  lstat(rel: string): Stats | undefined;
  /** The names in a directory, sorted; `[]` for anything but a directory. */
  readdir(rel: string): string[];
  /** The host file that holds the entry (its content, its metadata). Throws when the entry is not there. */
  hostPath(rel: string): string;
  /** A symlink's target. */
  readlink(rel: string): string;
}

/** Like the kernel's limit on symlinks followed while resolving one path. */
const MAX_SYMLINKS = 40;

/** A path as a clean relative path inside a root: `/`, `.` and empty components dropped, `..` stopping at the root. */
export function cleanRel(path: string): string {
  const parts: string[] = [];
  for (const part of path.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') parts.pop();
    else parts.push(part);
  }
  return parts.join('/');
}

const parentOf = (rel: string) => {
  const slash = rel.lastIndexOf('/');
  return slash < 0 ? '' : rel.slice(0, slash);
};

/**
 * `path` (absolute or relative, both from the view's root) with its symlinks
 * resolved inside the view, as openat2's RESOLVE_IN_ROOT does: absolute targets
 * start again at the root, `..` stops at the root, at most 40 links. A final
 * symlink is followed unless `followFinal` is false. Components that are missing
 * stay as named. Returns a clean relative path.
 */
export function resolvePath(view: FsView, path: string, followFinal = true): string {
  const pending = path
    .split('/')
    .filter((p) => p !== '' && p !== '.')
    .reverse();
  const resolved: string[] = [];
  let followed = 0;
  for (let part = pending.pop(); part !== undefined; part = pending.pop()) {
    if (part === '..') {
      resolved.pop();
      continue;
    }
    const rel = resolved.length === 0 ? part : `${resolved.join('/')}/${part}`;
    const final = pending.length === 0;
    const stat = view.lstat(rel);
    if (!stat?.isSymbolicLink() || (final && !followFinal)) {
      resolved.push(part);
      continue;
    }
    if (++followed > MAX_SYMLINKS) throw new PetriError(`${path}: too many levels of symbolic links`);
    const target = view.readlink(rel);
    if (target.startsWith('/')) resolved.length = 0;
    pending.push(
      ...target
        .split('/')
        .filter((p) => p !== '' && p !== '.')
        .reverse(),
    );
  }
  return resolved.join('/');
}

/** The content of a file in a view, symlinks followed inside it; undefined when it is not a regular file there. */
export function readViewFile(view: FsView, path: string): Buffer | undefined {
  const rel = resolvePath(view, path);
  if (!view.lstat(rel)?.isFile()) return undefined;
  return readFileSync(view.hostPath(rel));
}

function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path, { throwIfNoEntry: false });
  } catch {
    return undefined; // ENOTDIR, EACCES…
  }
}

/**
 * The build context: a host directory with its `.dockerignore`d paths invisible,
 * as Docker's context transfer leaves them out. An ignored directory stays
 * visible only when an exception re-includes something in it (and then only
 * with that), by Docker's walker rule (see IgnoreMatcher.exceptionBelow).
 */
export class ContextView implements FsView {
  readonly description = 'the build context';
  readonly root: string;
  readonly ignore: IgnoreMatcher;
  /** rel → whether it is a visible real directory reached through real directories. */
  readonly #dirs = new Map<string, boolean>();
  /** rel of an ignored directory → whether something below it is re-included. */
  readonly #reincluded = new Map<string, boolean>();

  constructor(dir: string, ignore: IgnoreMatcher = new IgnoreMatcher([])) {
    this.root = resolve(dir);
    this.ignore = ignore;
  }

  lstat(path: string): Stats | undefined {
    const rel = cleanRel(path);
    if (rel === '') return lstatOrUndefined(this.root);
    if (!this.#isDir(parentOf(rel))) return undefined;
    const stat = lstatOrUndefined(join(this.root, rel));
    if (!stat || !this.#visible(rel, stat.isDirectory())) return undefined;
    return stat;
  }

  readdir(path: string): string[] {
    const rel = cleanRel(path);
    if (!this.#isDir(rel)) return [];
    return this.#children(rel);
  }

  hostPath(path: string): string {
    const rel = cleanRel(path);
    if (!this.lstat(rel)) throw new PetriError(`${rel}: not in the build context`);
    return rel === '' ? this.root : join(this.root, rel);
  }

  readlink(path: string): string {
    return readlinkSync(this.hostPath(path), 'utf8');
  }

  #isDir(rel: string): boolean {
    const known = this.#dirs.get(rel);
    if (known !== undefined) return known;
    let result: boolean;
    if (rel === '') result = lstatOrUndefined(this.root)?.isDirectory() ?? false;
    else {
      const stat = this.#isDir(parentOf(rel)) ? lstatOrUndefined(join(this.root, rel)) : undefined;
      result = stat?.isDirectory() === true && this.#visible(rel, true);
    }
    this.#dirs.set(rel, result);
    return result;
  }

  /** The visible names in `rel`, a directory whose parents are known to be visible directories. */
  #children(rel: string): string[] {
    let entries: import('node:fs').Dirent[];
    try {
      entries = readdirSync(rel === '' ? this.root : join(this.root, rel), { withFileTypes: true });
    } catch {
      return [];
    }
    const names: string[] = [];
    for (const entry of entries) {
      const child = rel === '' ? entry.name : `${rel}/${entry.name}`;
      if (this.#visible(child, entry.isDirectory())) names.push(entry.name);
    }
    return names.sort(byteOrder);
  }

  #visible(rel: string, isDir: boolean): boolean {
    if (!this.ignore.matches(rel)) return true;
    if (!isDir || !this.ignore.exceptionBelow(rel)) return false;
    let reincluded = this.#reincluded.get(rel);
    if (reincluded === undefined) {
      reincluded = this.#children(rel).length > 0;
      this.#reincluded.set(rel, reincluded);
    }
    return reincluded;
  }
}

/** Opaque directories of layers, by layer directory and identity: unpacked layers do not change. */
const opaqueCache = new Map<string, ReadonlySet<string>>();
const OPAQUE_VALUE = Buffer.from('y').toString('base64');

/**
 * The directories (relative paths) of an unpacked layer or upper dir that carry
 * overlayfs' opaque xattr: as the layer cache recorded them when it unpacked or
 * adopted the layer, else read with one `petri-runner scan` (Node cannot read
 * xattrs). The layer root is left out: overlayfs ignores it there. Remembered
 * per directory for the life of the process.
 */
export function opaqueDirs(layerDir: string): ReadonlySet<string> {
  const stat = lstatOrUndefined(layerDir);
  if (!stat?.isDirectory()) return new Set();
  const key = `${resolve(layerDir)}\0${stat.dev}:${stat.ino}:${stat.ctimeMs}`;
  const known = opaqueCache.get(key);
  if (known) return known;
  const recorded = recordedOpaqueDirs(layerDir);
  if (recorded) {
    const dirs = new Set(recorded);
    opaqueCache.set(key, dirs);
    return dirs;
  }
  const result = childProcess().spawnSync(runnerPath(), ['scan', layerDir], { maxBuffer: 2 ** 31 - 1 });
  if (result.error) throw new PetriError(`cannot start petri-runner scan: ${result.error.message}`);
  if (result.status !== 0) {
    const why =
      result.stderr
        .toString()
        .trim()
        .replace(/^petri-runner: /, '') || `exit status ${result.status}`;
    throw new PetriError(`cannot read the layer ${layerDir}: ${why}`);
  }
  const out = result.stdout.toString('utf8');
  const dirs = new Set<string>();
  const needle = `"${OVERLAY_OPAQUE_XATTR}"`;
  for (let at = out.indexOf(needle); at >= 0; at = out.indexOf(needle, at + 1)) {
    const start = out.lastIndexOf('\n', at) + 1;
    const end = out.indexOf('\n', at);
    const entry = JSON.parse(out.slice(start, end < 0 ? undefined : end)) as {
      path: string;
      type: string;
      xattrs?: Record<string, string>;
    };
    if (entry.type === 'd' && entry.xattrs?.[OVERLAY_OPAQUE_XATTR] === OPAQUE_VALUE) dirs.add(entry.path);
  }
  opaqueCache.set(key, dirs);
  return dirs;
}

export interface LayeredViewOptions {
  /** For messages (default `the --from stage or image`). */
  description?: string;
  /** The opaque directories of each layer when the caller knows them (else read with opaqueDirs when needed). */
  opaque?: readonly (ReadonlySet<string> | undefined)[];
}

/**
 * The merged tree of overlay lower dirs (top first, as petri stores them), looked
 * up as overlayfs does: a whiteout (char device 0/0) hides the name below it, a
 * non-directory hides everything below it, an opaque directory hides the
 * directories below it. Never follows a symlink on the host.
 */
export class LayeredView implements FsView {
  readonly lowerDirs: readonly string[];
  readonly description: string;
  readonly #opaque: (ReadonlySet<string> | undefined)[];
  /** Merged directory rel → the layers that make it up (top first), or null when it is not a directory. */
  readonly #dirs = new Map<string, number[] | null>();

  constructor(lowerDirs: readonly string[], options: LayeredViewOptions = {}) {
    this.lowerDirs = lowerDirs.map((dir) => resolve(dir));
    this.description = options.description ?? 'the --from stage or image';
    this.#opaque = lowerDirs.map((_, i) => options.opaque?.[i]);
  }

  lstat(path: string): Stats | undefined {
    return this.#find(cleanRel(path))?.stat;
  }

  readdir(path: string): string[] {
    const rel = cleanRel(path);
    const layers = this.#layersOf(rel);
    if (!layers) return [];
    const names = new Set<string>();
    const hidden = new Set<string>();
    for (const i of layers) {
      const dir = join(this.lowerDirs[i] as string, rel);
      let entries: import('node:fs').Dirent[];
      try {
        entries = readdirSync(dir, { withFileTypes: true });
      } catch {
        continue;
      }
      for (const entry of entries) {
        if (names.has(entry.name) || hidden.has(entry.name)) continue;
        const whiteout = entry.isCharacterDevice() && isWhiteoutPath(join(dir, entry.name));
        (whiteout ? hidden : names).add(entry.name);
      }
    }
    return [...names].sort(byteOrder);
  }

  hostPath(path: string): string {
    const rel = cleanRel(path);
    const found = this.#find(rel);
    if (!found) throw new PetriError(`/${rel}: not in ${this.description}`);
    return join(this.lowerDirs[found.layer] as string, rel);
  }

  readlink(path: string): string {
    return readlinkSync(this.hostPath(path), 'utf8');
  }

  /** The topmost entry at `rel` and its layer, or undefined when the merged tree has none. */
  #find(rel: string): { stat: Stats; layer: number } | undefined {
    if (rel === '') {
      const stat = this.lowerDirs.length > 0 ? lstatOrUndefined(this.lowerDirs[0] as string) : undefined;
      return stat ? { stat, layer: 0 } : undefined;
    }
    const layers = this.#layersOf(parentOf(rel));
    if (!layers) return undefined;
    for (const i of layers) {
      const stat = lstatOrUndefined(join(this.lowerDirs[i] as string, rel));
      if (!stat) continue;
      if (isOverlayWhiteout(stat)) return undefined;
      return { stat, layer: i };
    }
    return undefined;
  }

  /** The layers whose directory `rel` makes up the merged directory, top first; undefined when it is not a directory. */
  #layersOf(rel: string): number[] | undefined {
    const known = this.#dirs.get(rel);
    if (known !== undefined) return known ?? undefined;
    let result: number[] = [];
    if (rel === '') {
      // overlayfs never looks the root up, so an opaque root does not hide the layers below it.
      result = this.lowerDirs.flatMap((dir, i) => (lstatOrUndefined(dir)?.isDirectory() ? [i] : []));
    } else {
      for (const i of this.#layersOf(parentOf(rel)) ?? []) {
        const stat = lstatOrUndefined(join(this.lowerDirs[i] as string, rel));
        if (!stat) continue;
        if (!stat.isDirectory()) break; // a whiteout or a non-directory ends the merge
        result.push(i);
      }
      // An opaque directory hides the ones below it (read only where there are some).
      const opaque = result.findIndex((i, k) => k < result.length - 1 && this.#isOpaque(i, rel));
      if (opaque >= 0) result = result.slice(0, opaque + 1);
    }
    const value = result.length > 0 ? result : null;
    this.#dirs.set(rel, value);
    return value ?? undefined;
  }

  #isOpaque(layer: number, rel: string): boolean {
    let dirs = this.#opaque[layer];
    if (!dirs) {
      dirs = opaqueDirs(this.lowerDirs[layer] as string);
      this.#opaque[layer] = dirs;
    }
    return dirs.has(rel);
  }
}

function isWhiteoutPath(path: string): boolean {
  const stat = lstatOrUndefined(path);
  return stat !== undefined && isOverlayWhiteout(stat);
}

/** Names in code unit order: deterministic, and Go's byte order for all but rare astral characters. */
export function byteOrder(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
