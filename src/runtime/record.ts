import { readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { containersDir } from './paths.js';

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
  /** The image it runs (as the user named it) and its ID, when it came from one. */
  image?: string;
  imageId?: string;
  command: string[];
  /** The read-only layers under its upper dir, top first. */
  lower: string[];
  /** The ports asked for (`host` 0: any free one), and while it runs the host ports they are published on. */
  publish?: { container: number; host: number }[];
  ports?: PortMapping[];
  /** How the command ended, once it has. */
  exit?: { exitCode: number; signal: number | null; oomKilled: boolean; timedOut: boolean; finishedAt: string };
}

/** A published port: the container's port and the host port (on 127.0.0.1) forwarded to it. */
export interface PortMapping {
  container: number;
  host: number;
}

export function recordPath(dir: string): string {
  return join(dir, 'record.json');
}

export function writeRecord(dir: string, record: ContainerRecord): void {
  const path = recordPath(dir);
  writeFileSync(`${path}.tmp`, JSON.stringify(record));
  renameSync(`${path}.tmp`, path);
}

/** `writeRecord` off the event loop; `record` may be given already serialized. */
export async function writeRecordAsync(dir: string, record: ContainerRecord | string): Promise<void> {
  const path = recordPath(dir);
  await writeFile(`${path}.tmp`, typeof record === 'string' ? record : JSON.stringify(record));
  await rename(`${path}.tmp`, path);
}

export function readRecord(dir: string): ContainerRecord | undefined {
  try {
    return JSON.parse(readFileSync(recordPath(dir), 'utf8')) as ContainerRecord;
  } catch {
    return undefined;
  }
}

/** Every container record under `$PETRI_ROOT/containers`, oldest first. */
export function listRecords(): ContainerRecord[] {
  let ids: string[];
  try {
    ids = readdirSync(containersDir());
  } catch {
    return [];
  }
  const records: ContainerRecord[] = [];
  for (const id of ids) {
    const record = readRecord(join(containersDir(), id));
    if (record) records.push(record);
  }
  return records.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
}

/** `listRecords`, off the event loop (unsorted). */
export async function listRecordsAsync(): Promise<ContainerRecord[]> {
  let ids: string[];
  try {
    ids = await readdir(containersDir());
  } catch {
    return [];
  }
  const records = await Promise.all(
    ids.map(async (id) => {
      try {
        return JSON.parse(await readFile(recordPath(join(containersDir(), id)), 'utf8')) as ContainerRecord;
      } catch {
        return undefined;
      }
    }),
  );
  return records.filter((record): record is ContainerRecord => record !== undefined);
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

export function processStartTime(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22 (starttime); the command name (field 2) may hold spaces and parentheses.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[19]);
  } catch {
    return undefined;
  }
}
