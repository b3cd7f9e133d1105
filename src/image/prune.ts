import { lstatSync, readdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { errorLine, PetriError } from '../errors.js';
import type { BlobStore } from './blobs.js';
import { readIndex, refName } from './layout.js';
import { withIndexLock } from './lock.js';
import { referencedBlobs } from './reachable.js';
import { isTempName, tempOwnerAlive } from './temp.js';

export interface PruneOptions {
  /**
   * Blobs younger than this are kept even when nothing references them: an
   * import or build running now may have written them and not tagged its image
   * yet. Default 10 minutes.
   */
  graceMs?: number;
  /** Digests to keep whether referenced or not (blobs a caller is using). */
  keep?: Set<string>;
}

export interface PruneResult {
  /** Digests of the blobs removed. */
  removed: string[];
  /** Bytes freed, stale temp files included. */
  bytes: number;
}

export const DEFAULT_GRACE_MS = 10 * 60_000;

const HEX64 = /^[a-f0-9]{64}$/;

/**
 * Removes the blobs no index entry reaches (manifest → config and layers) and
 * the temp files of processes that are gone, under the index lock so that no
 * tag can land between the reachability walk and the deletions. A tag checks
 * its blobs under the same lock, so an image is never tagged with a blob that
 * a prune removed.
 */
export async function pruneBlobs(blobs: BlobStore, options: PruneOptions = {}): Promise<PruneResult> {
  const graceMs = options.graceMs ?? DEFAULT_GRACE_MS;
  const keep = options.keep ?? new Set<string>();
  return withIndexLock(blobs.dir, async () => {
    const reachable = new Set<string>();
    for (const entry of readIndex(blobs.dir).manifests) {
      try {
        for (const ref of await referencedBlobs(blobs, entry)) reachable.add(ref.digest);
      } catch (error) {
        const name = refName(entry) ?? entry.digest;
        throw new PetriError(
          `cannot prune the image store: image ${name} is unreadable (${errorLine(error)}); remove that image first`,
          { code: 'EPRUNE', cause: error },
        );
      }
    }
    const result: PruneResult = { removed: [], bytes: 0 };
    const cutoff = Date.now() - graceMs;
    // Temp files of dead writers in the layout's root (index.json updates) and among the blobs.
    for (const dir of [blobs.dir, blobs.blobsDir]) {
      for (const name of readdirSync(dir)) {
        if (!isTempName(name) || tempOwnerAlive(name)) continue;
        result.bytes += removeIfOlder(join(dir, name), cutoff) ?? 0;
      }
    }
    for (const name of readdirSync(blobs.blobsDir)) {
      if (!HEX64.test(name)) continue;
      const digest = `sha256:${name}`;
      if (reachable.has(digest) || keep.has(digest)) continue;
      const size = removeIfOlder(join(blobs.blobsDir, name), cutoff);
      if (size === undefined) continue;
      result.removed.push(digest);
      result.bytes += size;
    }
    return result;
  });
}

/** Removes `path` when its mtime is before `cutoff`; returns its size then, undefined when kept or gone. */
function removeIfOlder(path: string, cutoff: number): number | undefined {
  try {
    const stat = lstatSync(path);
    if (stat.mtimeMs >= cutoff) return undefined;
    unlinkSync(path);
    return stat.size;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}
