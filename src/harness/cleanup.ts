import { existsSync, readFileSync, rmdirSync } from 'node:fs';
import { killCgroups } from '../runtime/cgroups/index.js';
import { releaseName } from '../runtime/names.js';
import { readRecord, writeRecord } from '../runtime/record.js';
import { cleanupOnSignals } from '../util/exit-signals.js';
import { removeTree } from '../util/fs.js';

/**
 * Removes the containers this process started through the API when it ends:
 * normally (`exit`, also after an uncaught exception), or on SIGINT, SIGTERM
 * or SIGHUP (then the signal's default action is raised again, unless the
 * program has its own handler). SIGKILL cannot be caught: then every runner
 * dies with its parent (PDEATHSIG) and the next petri process sweeps the
 * records. Reused containers are never registered here.
 */

export interface Disposable {
  /** The container's directory (its record holds the cgroups). */
  readonly dir: string;
  /** Kept on purpose (withAutoRemove(false)): stopped, never removed. */
  readonly keep: boolean;
  /** Removes it (or, kept, stops it), the normal way. */
  cleanup(): Promise<void>;
  /** Called before a synchronous removal at exit: close what the process holds. */
  release(): void;
}

const live = new Set<Disposable>();
let exitHook = false;
let signalHooks = false;
let cleaning: Promise<void> | undefined;

export function track(item: Disposable): void {
  if (!exitHook) process.on('exit', removeAllSync);
  exitHook = true;
  // The containers removed first on a signal (the hook then steps aside: the next track() hooks again).
  if (!signalHooks) {
    cleanupOnSignals(() => {
      signalHooks = false;
      removeAllSync();
    });
  }
  signalHooks = true;
  live.add(item);
}

export function untrack(item: Disposable): void {
  live.delete(item);
}

/** Removes every tracked container now, the normal (asynchronous) way. */
export function removeAll(): Promise<void> {
  cleaning ??= Promise.allSettled([...live].map((item) => item.cleanup())).then(() => {
    cleaning = undefined;
  });
  return cleaning;
}

/** At `exit` nothing asynchronous runs any more: kill, wait (briefly) and remove synchronously. */
function removeAllSync(): void {
  for (const item of [...live]) {
    live.delete(item);
    try {
      item.release();
      if (item.keep) stopContainerSync(item.dir);
      else removeContainerSync(item.dir);
    } catch {
      // best effort: the next petri process sweeps what is left
    }
  }
}

/** Kills the container's processes, removes its cgroups (waiting up to 2 s for them to empty) and its directory. */
export function removeContainerSync(dir: string): void {
  const record = readRecord(dir);
  if (!removeCgroupsSync(record?.cgroupDirs ?? [])) return;
  if (record) releaseName(record.name, record.id);
  removeTree(dir);
}

/** A kept container at exit: its processes killed, its cgroups removed, its record saying it exited. */
function stopContainerSync(dir: string): void {
  const record = readRecord(dir);
  if (record?.state !== 'running' || !removeCgroupsSync(record.cgroupDirs)) return;
  record.state = 'exited';
  delete record.initPid;
  const finishedAt = new Date().toISOString();
  record.exit = { exitCode: 137, signal: 9, oomKilled: false, timedOut: false, finishedAt };
  writeRecord(dir, record);
}

/** Whether they are all gone in the end. */
function removeCgroupsSync(cgroups: string[]): boolean {
  killCgroups(cgroups);
  const deadline = Date.now() + 2000;
  let pending = cgroups.filter((cgroup) => existsSync(cgroup));
  while (pending.length > 0) {
    pending = pending.filter((cgroup) => {
      try {
        rmdirSync(cgroup);
        return false;
      } catch (error) {
        return (error as NodeJS.ErrnoException).code !== 'ENOENT';
      }
    });
    if (pending.length === 0 || Date.now() > deadline) break;
    sleepSync(10);
  }
  for (const parent of new Set(cgroups.map((cgroup) => cgroup.slice(0, cgroup.lastIndexOf('/'))))) {
    if (!parent.endsWith('/petri')) continue;
    try {
      rmdirSync(parent);
    } catch {
      // other containers still live there
    }
  }
  return pending.length === 0;
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));

function sleepSync(ms: number): void {
  Atomics.wait(sleeper, 0, 0, ms);
}

/** Whether a process still runs (not a zombie). */
export function processRuns(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return false;
  }
}
