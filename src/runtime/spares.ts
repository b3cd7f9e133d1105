import {
  closeSync,
  promises as fsp,
  ftruncateSync,
  mkdirSync,
  openSync,
  readdirSync,
  renameSync,
  rmdirSync,
  writeSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { cleanupOnSignals } from '../util/exit-signals.js';
import { removeTree } from '../util/fs.js';
import { selfIdentity } from './record.js';

/**
 * Spare container directories. A container's directory is six inodes (itself,
 * `rootfs`, `upper`, `work`, its record and its bundle) made and freed for
 * every container. On ext4 without a journal, allocating an inode skips the
 * group's recently freed ones one by one (`recently_deleted`), a cost that
 * grows with churn: 10-20 % of the CPU of many short containers. So a
 * removed container's directory, its writable layer made anew, is kept by the
 * process that removed it (once it has made two containers) and becomes the
 * next container's directory: renamed,
 * its files rewritten in place, nothing freed or allocated again.
 *
 * A spare is `containers/spare-PID-STARTTIME-N`: the owner is in its name, its
 * old record renamed to `spare.json` (no reader takes it for a container). The
 * process removes its spares when it exits (`exit`, SIGINT, SIGTERM, SIGHUP);
 * a sweep removes those of a process that died otherwise (SIGKILL).
 */

const MAX_SPARES = 8;
const SPARE_NAME = /^spare-(\d+)-(\d+)-\d+$/;
const pool: string[] = [];
let sequence = 0;
let exitHook = false;

/** The owner of a spare directory, from its name; undefined for any other name. */
export function spareOwner(name: string): { pid: number; startTime: number } | undefined {
  const match = SPARE_NAME.exec(name);
  return match ? { pid: Number(match[1]), startTime: Number(match[2]) } : undefined;
}

/**
 * Makes `dir`, a new container's directory, from a spare, with its record and
 * bundle written (the record before the directory takes its name, so that
 * nobody sees it without one). False when there is no spare, or it failed (it
 * is then removed, and the caller makes the directory the usual way).
 */
export function reuseSpare(dir: string, record: string, bundle: string): boolean {
  const spare = pool.pop();
  if (spare === undefined) return false;
  try {
    overwrite(join(spare, 'spare.json'), record);
    overwrite(join(spare, 'config.json'), bundle);
    renameSync(join(spare, 'spare.json'), join(spare, 'record.json'));
    renameSync(spare, dir);
    return true;
  } catch {
    removeQuietly(spare);
    return false;
  }
}

/**
 * Keeps a removed container's directory as a spare: its cgroups gone and
 * nothing mounted on it, holding only what `Container` made (rootfs, upper,
 * work, record.json, config.json). Makes its writable layer anew first. False
 * when the pool is full or the directory holds anything else (the caller
 * removes it then).
 */
export async function retireToSpare(dir: string): Promise<boolean> {
  if (pool.length >= MAX_SPARES) return false;
  try {
    const entries = readdirSync(dir).sort().join(',');
    if (entries !== 'config.json,record.json,rootfs,upper,work') return false;
    // overlayfs leaves `work/work` (it empties it at the next mount); an index dir would tie it to this upper dir.
    if (readdirSync(join(dir, 'work')).some((name) => name !== 'work')) return false;
    // The writable layer made anew: its root is the container's `/`, whose mode, owner and xattrs
    // (a `chmod 700 /`, overlayfs's own) must not carry over (one inode, the others kept).
    const upper = join(dir, 'upper');
    if (readdirSync(upper).length > 0) await fsp.rm(upper, { recursive: true, force: true, maxRetries: 3 });
    else rmdirSync(upper);
    mkdirSync(upper);
    if (pool.length >= MAX_SPARES) return false;
    const { pid, startTime } = selfIdentity();
    const spare = join(dirname(dir), `spare-${pid}-${startTime}-${sequence++}`);
    renameSync(join(dir, 'record.json'), join(dir, 'spare.json'));
    renameSync(dir, spare);
    pool.push(spare);
    hookExit();
    return true;
  } catch {
    return false;
  }
}

/**
 * Removes the spares at `exit`, and first on SIGINT, SIGTERM or SIGHUP (as
 * vitest ends its workers), without changing what the signal does.
 */
function hookExit(): void {
  if (exitHook) return;
  exitHook = true;
  process.on('exit', drainSpares);
  cleanupOnSignals(() => {
    process.off('exit', drainSpares);
    exitHook = false;
    drainSpares();
  });
}

/** Removes this process's spares (synchronously: also at `exit` and on a signal). */
export function drainSpares(): void {
  for (let spare = pool.pop(); spare !== undefined; spare = pool.pop()) removeQuietly(spare);
}

/** How many spares this process holds (for tests). */
export function spareCount(): number {
  return pool.length;
}

/** Writes a file in place, from offset 0, cut to its new length: the same inode, no rename over it. */
function overwrite(path: string, text: string): void {
  const data = Buffer.from(text);
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, data, 0, data.length, 0);
    // To a length above zero: ext4 then does not flush the file at close, as it does after a truncation to 0.
    ftruncateSync(fd, data.length);
  } finally {
    closeSync(fd);
  }
}

function removeQuietly(path: string): void {
  try {
    removeTree(path);
  } catch {
    // the next sweep removes it once this process is gone
  }
}
