import { existsSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { rmdir } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Operations on a container's set of cgroup directories, whatever hierarchy
 * they belong to: the record keeps the list, so a later petri process can
 * kill and remove what a crashed one left.
 */

/** Host pids of every process in the cgroups. */
export function cgroupPids(dirs: string[]): number[] {
  const pids = new Set<number>();
  for (const dir of dirs) {
    let text = '';
    try {
      text = readFileSync(`${dir}/cgroup.procs`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n')) if (line) pids.add(Number(line));
  }
  return [...pids];
}

/** SIGKILLs every process: `cgroup.kill` where the kernel has it, else freeze, kill each, thaw. */
export function killCgroups(dirs: string[]): void {
  const killFile = dirs.map((dir) => `${dir}/cgroup.kill`).find((file) => existsSync(file));
  if (killFile) {
    try {
      writeFileSync(killFile, '1');
      return;
    } catch {
      // fall through to killing one by one
    }
  }
  const freezer = dirs.find((dir) => existsSync(`${dir}/freezer.state`));
  if (freezer) tryWrite(`${freezer}/freezer.state`, 'FROZEN');
  for (const pid of cgroupPids(dirs)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  if (freezer) tryWrite(`${freezer}/freezer.state`, 'THAWED');
}

/**
 * Removes the directories, killing what is still inside. A memory cgroup can stay
 * busy for a moment after its last process exits, so EBUSY is retried for a while.
 */
export async function removeCgroups(dirs: string[], timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let pending = dirs.filter((dir) => existsSync(dir));
  let delay = 1;
  let killed = false;
  while (pending.length > 0) {
    const busy: string[] = [];
    let lastError: unknown;
    for (const dir of pending) {
      try {
        // Off the event loop: removing a cgroup that had processes takes the kernel a few milliseconds.
        await rmdir(dir);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') continue;
        busy.push(dir);
        lastError = error;
      }
    }
    if (busy.length === 0) {
      if (parentHolds === 0) removeEmptyParents(dirs);
      else heldParents.push(...dirs);
      return;
    }
    if (Date.now() > deadline) {
      throw new Error(`cannot remove cgroup ${busy[0]}: ${(lastError as Error).message}`);
    }
    if (!killed && cgroupPids(busy).length > 0) {
      killCgroups(busy);
      killed = true;
    }
    await sleep(delay);
    delay = Math.min(delay * 2, 50);
    pending = busy;
  }
}

let parentHolds = 0;
const heldParents: string[] = [];

/**
 * Keeps the `petri` parent cgroups while many containers come and go (a test
 * run): each removal would otherwise remove the parent whenever it is empty
 * for a moment, and the next creation make it again. The returned function
 * ends the hold and removes the parents then left empty.
 */
export function holdCgroupParents(): () => void {
  parentHolds++;
  let released = false;
  return () => {
    if (released) return;
    released = true;
    parentHolds--;
    if (parentHolds === 0) removeEmptyParents(heldParents.splice(0));
  };
}

/** Removes the `petri` parents once their last container is gone (EBUSY/ENOTEMPTY: still in use). */
function removeEmptyParents(dirs: string[]): void {
  for (const parent of new Set(dirs.map((dir) => dirname(dir)))) {
    if (basename(parent) !== 'petri') continue;
    try {
      rmdirSync(parent);
    } catch {
      // another container still lives there
    }
  }
}

export function tryWrite(file: string, value: string): boolean {
  try {
    writeFileSync(file, value);
    return true;
  } catch {
    return false;
  }
}

/** Reads a `key value` line from a cgroup file such as memory.events; 0 when absent. */
export function readKeyed(file: string, key: string): number {
  try {
    const match = new RegExp(`^${key} (\\d+)$`, 'm').exec(readFileSync(file, 'utf8'));
    return match ? Number(match[1]) : 0;
  } catch {
    return 0;
  }
}
