import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';

/**
 * Temporary files in the store are named `.tmp-<pid>-<start time>-<random>`, so
 * that a prune can tell the temp file of a live writer (kept) from one a dead
 * process left behind (removed once older than the grace period).
 */
const TEMP = /^\.tmp-(\d+)-(\d+)-[0-9a-f]+$/;

let ownStartTime: number | undefined;

/** A fresh temp file name owned by this process. */
export function tempName(): string {
  ownStartTime ??= processStartTime(process.pid) ?? 0;
  return `.tmp-${process.pid}-${ownStartTime}-${randomBytes(8).toString('hex')}`;
}

export function isTempName(name: string): boolean {
  return name.startsWith('.tmp-');
}

/** Whether the process that made temp file `name` still runs (same pid and start time). */
export function tempOwnerAlive(name: string): boolean {
  const match = TEMP.exec(name);
  if (!match) return false;
  const pid = Number(match[1]);
  if (pid === process.pid) return true;
  const startTime = processStartTime(pid);
  return startTime !== undefined && startTime === Number(match[2]);
}

/** A process's start time in clock ticks since boot (field 22 of /proc/PID/stat); undefined when it is gone. */
function processStartTime(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z') return undefined;
    return Number(fields[19]);
  } catch {
    return undefined;
  }
}
