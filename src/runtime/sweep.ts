import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { removeTree } from '../util/fs.js';
import { killCgroups, removeCgroups } from './cgroups/index.js';
import { releaseName } from './names.js';
import { containersDir } from './paths.js';
import { ownerAlive, readRecord, writeRecord } from './record.js';
import { spareOwner } from './spares.js';

let swept = false;

/**
 * Sweeps once per process, in the background of the first container's creation:
 * from the event loop's next turn, so that reading the records overlaps the
 * runner's start instead of delaying it.
 */
export function sweepOnce(): void {
  if (swept) return;
  swept = true;
  setImmediate(() => void sweepContainers().catch(() => {}));
}

/**
 * Removes what petri processes that died (crash, SIGKILL) left behind: their
 * containers' processes are already gone with the runner (PDEATHSIG), and their
 * mounts with its mount namespace; the cgroups and the directory remain.
 * Returns the ids it removed.
 */
export async function sweepContainers(root?: string): Promise<string[]> {
  const dir = containersDir(root);
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const id of entries) {
    const path = join(dir, id);
    const spareOf = spareOwner(id);
    if (spareOf) {
      // A spare directory (spares.ts): its owner's, while that process lives.
      if (ownerAlive(spareOf)) continue;
      removeTree(path);
      removed.push(id);
      continue;
    }
    const record = readRecord(path);
    if (record) {
      if (record.keep && record.state === 'exited') continue;
      if (ownerAlive(record.owner)) continue;
      killCgroups(record.cgroupDirs);
      await removeCgroups(record.cgroupDirs);
      if (record.keep) {
        // Kept on purpose: it stays, as a container that exited when its petri process died.
        record.state = 'exited';
        delete record.initPid;
        record.exit = {
          exitCode: 137,
          signal: 9,
          oomKilled: false,
          timedOut: false,
          finishedAt: new Date().toISOString(),
        };
        writeRecord(path, record);
        continue;
      }
      releaseName(record.name, record.id, root);
    } else if (!olderThan(path, 60_000)) {
      continue; // being created right now by another process
    }
    removeTree(path);
    removed.push(id);
  }
  return removed;
}

function olderThan(path: string, ms: number): boolean {
  try {
    return Date.now() - statSync(path).mtimeMs > ms;
  } catch {
    return false;
  }
}
