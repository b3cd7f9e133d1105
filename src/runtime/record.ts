import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** What a container leaves on disk, so that any later petri process can find and clean it. */
export interface ContainerRecord {
  id: string;
  name: string;
  createdAt: string;
  /** The petri process that owns the container, and its start time (pid reuse check). */
  owner: { pid: number; startTime: number };
  cgroupDirs: string[];
  state: 'created' | 'running' | 'exited' | 'removing';
  /** Host pid of the container's PID 1 while it runs. */
  initPid?: number;
  /** Keep the container after it exits (until `petri rm`); otherwise it is removed. */
  keep?: boolean;
}

export function recordPath(dir: string): string {
  return join(dir, 'record.json');
}

export function writeRecord(dir: string, record: ContainerRecord): void {
  const path = recordPath(dir);
  writeFileSync(`${path}.tmp`, JSON.stringify(record));
  renameSync(`${path}.tmp`, path);
}

export function readRecord(dir: string): ContainerRecord | undefined {
  try {
    return JSON.parse(readFileSync(recordPath(dir), 'utf8')) as ContainerRecord;
  } catch {
    return undefined;
  }
}

let ownStartTime: number | undefined;

/** This process's identity: pid and start time in clock ticks since boot. */
export function selfIdentity(): { pid: number; startTime: number } {
  ownStartTime ??= processStartTime(process.pid) ?? 0;
  return { pid: process.pid, startTime: ownStartTime };
}

/** Whether the process that owned a record is still the same live process. */
export function ownerAlive(owner: { pid: number; startTime: number }): boolean {
  const startTime = processStartTime(owner.pid);
  return startTime !== undefined && startTime === owner.startTime;
}

function processStartTime(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22 (starttime); the command name (field 2) may hold spaces and parentheses.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[19]);
  } catch {
    return undefined;
  }
}
