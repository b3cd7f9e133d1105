import { lstatSync, readlinkSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { PetriError } from '../errors.js';

/** Like the kernel's limit on symlinks followed while resolving one path. */
const MAX_SYMLINKS = 40;

/**
 * An archive entry's name as a clean path relative to the root: `/` and `./`
 * prefixes, empty and `.` components are dropped, `a/../b` becomes `b`; `''` is
 * the root itself. A `..` that would climb out of the root is refused.
 */
export function cleanEntryPath(name: string): string {
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part !== '..') parts.push(part);
    else if (parts.pop() === undefined) {
      throw new PetriError(
        `layer entry "${name}" climbs out of the layer root with "..": the archive is broken or hostile, and petri does not unpack it`,
      );
    }
  }
  return parts.join('/');
}

/**
 * The host path of an archive entry inside `root`, such that writing there
 * never touches anything outside `root`. The parent directories are resolved
 * within the root, as openat2's RESOLVE_IN_ROOT does: a symlink among them is
 * followed with its absolute targets taken relative to the root and `..`
 * stopping at the root; missing ones stay as named (to be created as plain
 * directories). The final component is never followed. `root` must be an
 * absolute path without symlinks that nothing else writes to meanwhile.
 */
export function resolveInRoot(rootDir: string, name: string): string {
  const root = resolve(rootDir);
  const parts = cleanEntryPath(name).split('/');
  const last = parts.pop();
  if (!last) return root;
  const resolved: string[] = [];
  const pending = parts.reverse();
  let followed = 0;
  for (let part = pending.pop(); part !== undefined; part = pending.pop()) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      resolved.pop();
      continue;
    }
    const here = join(root, ...resolved, part);
    if (!isSymlink(here)) {
      resolved.push(part);
      continue;
    }
    if (++followed > MAX_SYMLINKS) {
      throw new PetriError(`layer entry "${name}": too many levels of symbolic links in its parent directories`);
    }
    const target = readlinkSync(here);
    if (target.startsWith('/')) resolved.length = 0;
    pending.push(...target.split('/').reverse());
  }
  const path = join(root, ...resolved, last);
  if (!path.startsWith(`${root}/`)) throw new PetriError(`layer entry "${name}" resolves outside the layer root`);
  return path;
}

function isSymlink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false; // missing (or under a non-directory): created, or refused, when written
  }
}
