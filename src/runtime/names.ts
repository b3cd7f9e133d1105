import { existsSync, lstatSync, mkdirSync, readlinkSync, rmdirSync, statSync, symlinkSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { PetriError } from '../errors.js';
import { containerDir, petriRoot } from './paths.js';
import { listRecords, readRecord } from './record.js';

/**
 * Container names, reserved atomically: `$PETRI_ROOT/names/<name>` is a
 * symlink to the id of the container holding the name. Creating it is one
 * syscall that fails when the name is taken, where listing every record for
 * each new container cost a read per container on the host.
 *
 * A link is only believed while its container's record has that name: a
 * link left by a crash (the record is gone) is stale and is taken over.
 */

export function namesDir(root = petriRoot()): string {
  return join(root, 'names');
}

const LOCK_STALE_MS = 10_000;

/** Reserves `name` for container `id`, whose record must exist already; throws when another container holds it. */
export function reserveName(name: string, id: string): void {
  const dir = ensureNamesDir();
  const link = join(dir, name);
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      symlinkSync(id, link);
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const holder = readLink(link);
    if (holder === undefined || holder === id) {
      if (holder === id) return;
      continue; // released meanwhile
    }
    if (readRecord(containerDir(holder))?.name === name) throw nameInUse(name, holder);
    // Stale: replaced under a lock, so that two processes taking it over cannot both win.
    withLock(dir, () => {
      if (readLink(link) === holder) unlinkSync(link);
    });
  }
  throw new PetriError(`cannot reserve the container name "${name}": it keeps changing hands; try again`);
}

/** Throws when a live container holds `name` (the check before a container is made; `reserveName` is the one that counts). */
export function checkNameFree(name: string): void {
  const link = join(namesDir(), name);
  // lstat without throwing first: a missing name (the usual case) costs no exception.
  if (!lstatSync(link, { throwIfNoEntry: false })) return;
  const holder = readLink(link);
  if (holder !== undefined && readRecord(containerDir(holder))?.name === name) throw nameInUse(name, holder);
}

/** Frees `name` if container `id` holds it (a link to another container is left alone). */
export function releaseName(name: string, id: string, root = petriRoot()): void {
  if (name === id) return; // unnamed: the id is its name, and nothing was reserved
  const link = join(namesDir(root), name);
  if (readLink(link) !== id) return;
  try {
    unlinkSync(link);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

export function nameInUse(name: string, id: string): PetriError {
  return new PetriError(
    `the container name "${name}" is already in use by container ${id}; remove it first (petri rm ${name})`,
  );
}

/**
 * The names directory; made on first use, when the containers that a petri
 * from before it created (and kept) get their links, so that they keep their names.
 */
let readyNamesDir: string | undefined;

function ensureNamesDir(): string {
  const dir = namesDir();
  if (dir === readyNamesDir && existsSync(dir)) return dir;
  readyNamesDir = dir;
  try {
    mkdirSync(dir);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return dir;
    if (code !== 'ENOENT') throw error;
    mkdirSync(dir, { recursive: true });
  }
  for (const record of listRecords()) {
    if (record.name === record.id) continue;
    try {
      symlinkSync(record.id, join(dir, record.name));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
  }
  return dir;
}

function readLink(path: string): string | undefined {
  try {
    return readlinkSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** Runs `fn` holding `dir/.lock` (a directory; one older than LOCK_STALE_MS was left by a crash and is broken). */
function withLock(dir: string, fn: () => void): void {
  const lock = join(dir, '.lock');
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    try {
      if (Date.now() - statSync(lock).mtimeMs > LOCK_STALE_MS) rmdirSync(lock);
    } catch {
      // released meanwhile
    }
    Atomics.wait(pause, 0, 0, 5);
  }
  try {
    fn();
  } finally {
    rmdirSync(lock);
  }
}
