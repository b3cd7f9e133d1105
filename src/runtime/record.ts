import { closeSync, openSync, readdirSync, readFileSync, renameSync, writeFileSync, writeSync } from 'node:fs';
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

/** Replaces a record (a new file renamed over the old); returns its length in bytes. */
export function writeRecord(dir: string, record: ContainerRecord): number {
  const path = recordPath(dir);
  const data = Buffer.from(JSON.stringify(record));
  writeFileSync(`${path}.tmp`, data);
  renameSync(`${path}.tmp`, path);
  return data.length;
}

/** `writeRecord` off the event loop; `record` may be given already serialized. */
export async function writeRecordAsync(dir: string, record: ContainerRecord | string): Promise<number> {
  const path = recordPath(dir);
  const data = Buffer.from(typeof record === 'string' ? record : JSON.stringify(record));
  await writeFile(`${path}.tmp`, data);
  await rename(`${path}.tmp`, path);
  return data.length;
}

/** A new container's first record, written straight (nothing to replace; readers retry a half-written one). */
export async function createRecordAsync(dir: string, record: ContainerRecord): Promise<number> {
  const data = Buffer.from(JSON.stringify(record));
  await writeFile(recordPath(dir), data, { flag: 'wx' });
  return data.length;
}

/**
 * Rewrites a record where it is: one write at offset 0 of the JSON padded with
 * spaces to at least `minLength` (the file's length), so nothing is truncated.
 * Not a rename over the old file, which ext4 answers by flushing the new one
 * (auto_da_alloc): that cost most of a millisecond per container start. A
 * reader that catches the write half done sees bad JSON and reads again
 * (`readRecord`). Returns the length written.
 */
export function rewriteRecordInPlace(dir: string, record: ContainerRecord, minLength: number): number {
  const json = Buffer.from(JSON.stringify(record));
  const data = json.length < minLength ? Buffer.concat([json, Buffer.alloc(minLength - json.length, ' ')]) : json;
  const fd = openSync(recordPath(dir), 'r+');
  try {
    writeSync(fd, data, 0);
  } finally {
    closeSync(fd);
  }
  return data.length;
}

export function readRecord(dir: string): ContainerRecord | undefined {
  for (let attempt = 0; ; attempt++) {
    let text: string;
    try {
      text = readFileSync(recordPath(dir), 'utf8');
    } catch {
      return undefined;
    }
    try {
      return JSON.parse(text) as ContainerRecord;
    } catch {
      // Being written (the first write, or an in-place rewrite): again, then give up.
      if (attempt === 2) return undefined;
    }
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
      const path = recordPath(join(containersDir(), id));
      for (let attempt = 0; attempt < 3; attempt++) {
        try {
          return JSON.parse(await readFile(path, 'utf8')) as ContainerRecord;
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code) return undefined; // no record
        }
      }
      return undefined;
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
