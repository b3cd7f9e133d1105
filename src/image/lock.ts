import { join } from 'node:path';
import { errorLine, PetriError } from '../errors.js';

/** A lock held longer than this without its holder refreshing it (every STALE_MS/4) is taken as abandoned. */
const STALE_MS = 20_000;
/** How long to wait for another process's lock before giving up. */
const WAIT_MS = 60_000;

/** The lock directory that guards a store's index.json. */
export function indexLockPath(dir: string): string {
  return join(dir, 'index.json.lock');
}

/**
 * Runs `fn` while holding the store's inter-process index lock: an atomic
 * `mkdir` of `index.json.lock` (proper-lockfile), whose mtime the holder
 * refreshes; a lock left by a process that died (SIGKILL, a crash) goes
 * stale after STALE_MS and is taken over. Within one process, callers queue.
 * `fn` should be short and not block the event loop for seconds.
 */
export async function withIndexLock<T>(dir: string, fn: () => T | Promise<T>): Promise<T> {
  const lockfilePath = indexLockPath(dir);
  let compromised: Error | undefined;
  let release: () => Promise<void>;
  // Loaded on first use: commands that only read the store never need it.
  const { lock } = await import('proper-lockfile');
  try {
    release = await lock(dir, {
      lockfilePath,
      realpath: false,
      stale: STALE_MS,
      update: STALE_MS / 4,
      // Short randomized back-off: holders keep the lock for milliseconds.
      retries: { retries: Math.ceil(WAIT_MS / 100), minTimeout: 5, maxTimeout: 100, factor: 1.3, randomize: true },
      onCompromised: (error) => {
        compromised = error;
      },
    });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ELOCKED') {
      throw new PetriError(
        `the image store's index is locked (${lockfilePath}) and stayed locked for ${WAIT_MS / 1000}s: another petri process is busy with it; try again, or remove the lock directory if no petri process runs`,
        { code: 'ELOCKED', cause: error },
      );
    }
    throw new PetriError(`cannot lock the image store's index (${lockfilePath}): ${errorLine(error)}`, {
      code: 'ELOCKED',
      cause: error,
    });
  }
  try {
    const result = await fn();
    if (compromised) {
      throw new PetriError(
        `the image store's index lock (${lockfilePath}) was taken over while petri held it (${errorLine(compromised)}): the process was stalled for over ${STALE_MS / 1000}s; run the command again`,
        { code: 'ELOCKED', cause: compromised },
      );
    }
    return result;
  } finally {
    if (!compromised) await release().catch(() => {});
  }
}
