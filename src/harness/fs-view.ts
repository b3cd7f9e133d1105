import {
  chmodSync,
  lchownSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  readdirSync,
  readlinkSync,
  type Stats,
} from 'node:fs';
import { join, posix } from 'node:path';
import { PetriError } from '../errors.js';
import { isOverlayWhiteout } from '../snapshot/whiteouts.js';

/**
 * A container's filesystem as petri reads it from the host, path by path, with
 * the container's own `/` as the root: symlinks among the parents of a path are
 * followed inside that root (an absolute target starts again at it, `..` stops
 * at it), as openat2's RESOLVE_IN_ROOT would; the final component is never followed.
 */
export interface FsView {
  /** The entry at `parts` (a path without symlinks among its parents), or undefined. */
  lstat(parts: readonly string[]): { path: string; stat: Stats } | undefined;
  /** The names in the directory at `parts`. */
  readdir(parts: readonly string[]): string[];
}

const MAX_SYMLINKS = 40;

/** Splits an absolute container path into components, `..` stopping at the root. */
export function splitPath(path: string): string[] {
  return posix.resolve('/', path).split('/').filter(Boolean);
}

/**
 * Resolves the parents of `path` in `view`: the components of the directory
 * that holds it (no symlink among them) and its last name ('' for `/`).
 * `onDirectory` sees every directory on the way (to copy it up, say).
 */
export function resolveParent(
  view: FsView,
  path: string,
  onDirectory?: (parts: string[]) => void,
): { parent: string[]; name: string } {
  const wanted = splitPath(path);
  const name = wanted.pop();
  if (name === undefined) return { parent: [], name: '' };
  const resolved: string[] = [];
  const pending = wanted.reverse();
  let followed = 0;
  for (let part = pending.pop(); part !== undefined; part = pending.pop()) {
    if (part === '.' || part === '') continue;
    if (part === '..') {
      resolved.pop();
      continue;
    }
    const entry = view.lstat([...resolved, part]);
    if (entry?.stat.isSymbolicLink()) {
      if (++followed > MAX_SYMLINKS) throw new PetriError(`${path}: too many levels of symbolic links`);
      const target = readlinkSync(entry.path);
      if (target.startsWith('/')) resolved.length = 0;
      pending.push(...target.split('/').reverse());
      continue;
    }
    if (entry && !entry.stat.isDirectory()) {
      throw new PetriError(`${path}: /${[...resolved, part].join('/')} is not a directory`, { code: 'ENOTDIR' });
    }
    resolved.push(part);
    onDirectory?.([...resolved]);
  }
  return { parent: resolved, name };
}

/** A container's root through a directory the host can reach: `/proc/self/fd/N` of its held root. */
export class RootView implements FsView {
  constructor(readonly root: string) {}

  lstat(parts: readonly string[]): { path: string; stat: Stats } | undefined {
    // The root itself is a magic link (/proc/self/fd/N): `/.` looks at the directory it leads to.
    const path = parts.length > 0 ? join(this.root, ...parts) : `${this.root}/.`;
    try {
      return { path, stat: lstatSync(path) };
    } catch {
      return undefined;
    }
  }

  readdir(parts: readonly string[]): string[] {
    return readdirSync(join(this.root, ...parts));
  }
}

/**
 * A container's root read from its layers when no overlay is mounted: an upper
 * dir over lower dirs (top first), merged as overlayfs merges them: the
 * topmost entry wins, a whiteout hides what is below, a non-directory hides
 * the layers below, an opaque directory (`opaque`, paths in the upper dir,
 * which the caller knows from a scan) hides the directories below it.
 * Opaque directories inside the lower layers are not seen.
 */
export class LayeredView implements FsView {
  constructor(
    readonly layers: readonly string[],
    readonly opaque: ReadonlySet<string> = new Set(),
  ) {}

  lstat(parts: readonly string[]): { path: string; stat: Stats } | undefined {
    const found = this.#lookup(parts);
    return found && { path: found.path, stat: found.stat };
  }

  readdir(parts: readonly string[]): string[] {
    const found = this.#lookup(parts);
    if (!found?.stat.isDirectory()) throw new PetriError(`/${parts.join('/')} is not a directory`, { code: 'ENOTDIR' });
    const names = new Map<string, boolean>();
    for (const layer of found.layers) {
      for (const name of readdirSync(join(layer, ...parts))) {
        if (names.has(name)) continue;
        const stat = lstatSync(join(layer, ...parts, name));
        names.set(name, !isOverlayWhiteout(stat));
      }
    }
    return [...names].filter(([, present]) => present).map(([name]) => name);
  }

  /** The topmost entry at `parts`, and for a directory the layers that contribute to it, top first. */
  #lookup(parts: readonly string[]): { path: string; stat: Stats; layers: string[] } | undefined {
    let layers = [...this.layers];
    let found: { path: string; stat: Stats; layers: string[] } | undefined;
    for (let depth = 1; depth <= parts.length; depth++) {
      const prefix = parts.slice(0, depth);
      const contributing: string[] = [];
      found = undefined;
      for (const layer of layers) {
        const path = join(layer, ...prefix);
        let stat: Stats;
        try {
          stat = lstatSync(path);
        } catch {
          continue;
        }
        if (isOverlayWhiteout(stat)) break;
        if (!found) found = { path, stat, layers: contributing };
        if (!stat.isDirectory() || !found.stat.isDirectory()) break;
        contributing.push(layer);
        if (layer === this.layers[0] && this.opaque.has(prefix.join('/'))) break;
      }
      if (!found) return undefined;
      if (depth < parts.length && !found.stat.isDirectory()) return undefined;
      layers = contributing;
    }
    return found ?? { path: this.layers[0] as string, stat: lstatSync(this.layers[0] as string), layers };
  }

  /**
   * Makes the directory at `parts` (no symlinks among them) exist in the upper
   * dir, as overlayfs' copy-up does: with the owner, mode and times of the
   * lower directory it shows, or root's 0755 for a new one.
   */
  copyUp(parts: readonly string[]): void {
    const upper = this.layers[0] as string;
    for (let depth = 1; depth <= parts.length; depth++) {
      const prefix = parts.slice(0, depth);
      const path = join(upper, ...prefix);
      let inUpper: Stats | undefined;
      try {
        inUpper = lstatSync(path);
      } catch {
        // not in the upper dir yet
      }
      if (inUpper?.isDirectory()) continue;
      if (inUpper) {
        // A whiteout: a directory made there would have to be opaque, which overlayfs marks itself when mounted.
        throw new PetriError(`/${prefix.join('/')} was deleted in the container: start it to copy something there`);
      }
      const below = this.#lookup(prefix);
      const from = below?.stat.isDirectory() ? below.stat : undefined;
      mkdirSync(path);
      chmodSync(path, from ? from.mode & 0o7777 : 0o755);
      if (from) {
        lchownSync(path, from.uid, from.gid);
        lutimesSync(path, from.atime, from.mtime);
      }
    }
  }
}
