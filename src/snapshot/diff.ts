import { lstatSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { type ScanEntry, scanTree } from './scan.js';
import { isOverlayWhiteout, OVERLAY_OPAQUE_XATTR } from './whiteouts.js';

export interface Change {
  /** Added, Changed, Deleted: as `docker diff` prints them. */
  kind: 'A' | 'C' | 'D';
  /** Absolute path inside the container. */
  path: string;
}

const OPAQUE_VALUE = Buffer.from('y').toString('base64');

/**
 * What a container changed, like `docker diff`, from its overlay upper dir and
 * the lower dirs (top first) under it: `D` for a whiteout, `C` for an entry
 * that exists in a lower layer (so for every directory holding a change below
 * it), `A` for a new one. Sorted by path. (Opaque directories inside the lower
 * layers are not read: an entry they hide still counts as existing below.)
 */
export async function diffUpper(upperDir: string, lowerDirs: readonly string[]): Promise<Change[]> {
  const changes: Change[] = [];
  const opaque: string[] = [];
  for (const entry of await scanTree(upperDir)) {
    const path = `/${entry.path}`;
    if (isWhiteoutEntry(entry)) {
      changes.push({ kind: 'D', path });
      continue;
    }
    const hidden = opaque.some((dir) => path.startsWith(`${dir}/`));
    changes.push({ kind: !hidden && existsBelow(lowerDirs, entry.path) ? 'C' : 'A', path });
    if (entry.type === 'd' && entry.xattrs?.[OVERLAY_OPAQUE_XATTR] === OPAQUE_VALUE) opaque.push(path);
  }
  return changes.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

function isWhiteoutEntry(entry: ScanEntry): boolean {
  return entry.type === 'c' && entry.rdev[0] === 0 && entry.rdev[1] === 0;
}

/**
 * Whether `rel` exists in the merged view of `lowers` (top first), looked up as
 * overlayfs does: component by component, a whiteout or a non-directory in a
 * layer hiding what the layers below it have there. Symlinks are never followed.
 */
function existsBelow(lowers: readonly string[], rel: string): boolean {
  const parts = rel.split('/');
  let layers = lowers;
  for (let i = 0; i < parts.length; i++) {
    const prefix = parts.slice(0, i + 1);
    const deeper: string[] = [];
    for (const layer of layers) {
      const stat = lstatOrUndefined(join(layer, ...prefix));
      if (!stat) continue;
      if (isOverlayWhiteout(stat)) break;
      if (i === parts.length - 1) return true;
      if (!stat.isDirectory()) break;
      deeper.push(layer);
    }
    if (deeper.length === 0) return false;
    layers = deeper;
  }
  return false;
}

function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}
