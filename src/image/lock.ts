import { mkdirSync, rmdirSync, statSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { errorLine, PetriError } from '../errors.js';
import { cleanupOnSignals } from '../util/exit-signals.js';
import { digestHex } from './digest.js';

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
 * `mkdir` of `index.json.lock` (proper-lockfile's, see quickLock), whose mtime the holder
 * refreshes; a lock left by a process that died (SIGKILL, a crash) goes
 * stale after STALE_MS and is taken over. Within one process, callers queue.
 * `fn` should be short and not block the event loop for seconds.
 */
export function withIndexLock<T>(dir: string, fn: () => T | Promise<T>): Promise<T> {
  const lockfilePath = indexLockPath(dir);
  return withLock(dir, lockfilePath, fn, {
    // Short randomized back-off: holders keep the lock for milliseconds.
    retries: { retries: Math.ceil(WAIT_MS / 100), minTimeout: 5, maxTimeout: 100, factor: 1.3, randomize: true },
    what: `the image store's index lock (${lockfilePath})`,
    cannot: `cannot lock the image store's index (${lockfilePath})`,
    busy: `the image store's index is locked (${lockfilePath}) and stayed locked for ${WAIT_MS / 1000}s: another petri process is busy with it; try again, or remove the lock directory if no petri process runs`,
  });
}

/** The lock directory that guards the download of one blob: `<store>/locks/<hex>.lock`. */
export function blobLockPath(dir: string, digest: string): string {
  return join(dir, 'locks', `${digestHex(digest)}.lock`);
}

/**
 * Runs `fn` while holding the store's inter-process lock for blob `digest`,
 * so that two processes pulling the same image download (and unpack) each
 * blob once: the second waits while the first works, then finds the blob in
 * the store. The lock may be held for as long as a download takes: a waiter
 * waits as long as the holder keeps the lock fresh; one a dead process left
 * goes stale after STALE_MS and is taken over. `onWait` is called when the
 * lock is held by someone else (once, before waiting).
 */
export function withBlobLock<T>(
  dir: string,
  digest: string,
  fn: () => T | Promise<T>,
  onWait?: () => void,
): Promise<T> {
  const lockfilePath = blobLockPath(dir, digest);
  mkdirSync(join(dir, 'locks'), { recursive: true });
  return withLock(lockfilePath.slice(0, -'.lock'.length), lockfilePath, fn, {
    retries: { forever: true, minTimeout: 10, maxTimeout: 250, factor: 1.5, randomize: true },
    what: `the download lock of blob ${digest} (${lockfilePath})`,
    cannot: `cannot lock the download of blob ${digest} (${lockfilePath})`,
    busy: `the download of blob ${digest} stayed locked (${lockfilePath})`,
    ...(onWait ? { onWait } : {}),
  });
}

interface LockOptions {
  retries: Record<string, number | boolean>;
  /** The lock, for a takeover message. */
  what: string;
  /** The start of the message when the lock cannot be taken. */
  cannot: string;
  /** The message when the lock stays held. */
  busy: string;
  /** Called once when the lock is held by someone else, before waiting for it. */
  onWait?: () => void;
}

async function withLock<T>(
  file: string,
  lockfilePath: string,
  fn: () => T | Promise<T>,
  options: LockOptions,
): Promise<T> {
  const quick = quickLock(lockfilePath);
  if (quick) {
    try {
      const result = await fn();
      const lost = quick.compromised();
      if (lost) throw takenOver(options, lost);
      return result;
    } finally {
      quick.release();
    }
  }
  let compromised: Error | undefined;
  let release: () => Promise<void>;
  // Loaded when the lock is held by someone else (or cannot be made): the usual case never needs it.
  const { lock } = await import('proper-lockfile');
  const take = (retries: LockOptions['retries'] | 0) =>
    lock(file, {
      lockfilePath,
      realpath: false,
      stale: STALE_MS,
      update: STALE_MS / 4,
      retries,
      onCompromised: (error) => {
        compromised = error;
      },
    });
  try {
    if (options.onWait) {
      try {
        release = await take(0);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ELOCKED') throw error;
        options.onWait();
        release = await take(options.retries);
      }
    } else {
      release = await take(options.retries);
    }
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ELOCKED') throw new PetriError(options.busy, { code: 'ELOCKED', cause: error });
    throw new PetriError(`${options.cannot}: ${errorLine(error)}`, { code: 'ELOCKED', cause: error });
  }
  try {
    const result = await fn();
    if (compromised) throw takenOver(options, compromised);
    return result;
  } finally {
    if (!compromised) await release().catch(() => {});
  }
}

function takenOver(options: LockOptions, cause: Error): PetriError {
  return new PetriError(
    `${options.what} was taken over while petri held it (${errorLine(cause)}): the process was stalled for over ${STALE_MS / 1000}s; run the command again`,
    { code: 'ELOCKED', cause },
  );
}

/**
 * The lock taken as proper-lockfile takes it (an atomic mkdir, its mtime
 * refreshed every STALE_MS/4, a refresh that finds another mtime meaning
 * that someone took it over), without loading proper-lockfile (~8 ms): when
 * the directory is free, as it mostly is. Undefined when it is not (held, or
 * an error to report): then proper-lockfile waits, takes over a stale lock or
 * says why. Removed at release, or at exit or on SIGINT, SIGTERM or SIGHUP
 * if the process ends holding it (the next petri would otherwise wait for it
 * to go stale); only a SIGKILL leaves it for that.
 */
function quickLock(lockfilePath: string): { release(): void; compromised(): Error | undefined } | undefined {
  try {
    mkdirSync(lockfilePath);
  } catch {
    return undefined;
  }
  let mtime: number | undefined;
  let lost: Error | undefined;
  const remove = () => {
    try {
      rmdirSync(lockfilePath);
    } catch {
      // gone already
    }
  };
  const refresh = () => {
    try {
      const now = statSync(lockfilePath).mtimeMs;
      if (mtime !== undefined && now !== mtime) throw new Error('the lock was updated by another process');
      const time = new Date();
      utimesSync(lockfilePath, time, time);
      mtime = statSync(lockfilePath).mtimeMs;
    } catch (error) {
      lost = error as Error;
      clearInterval(timer);
    }
  };
  refresh();
  const timer = setInterval(refresh, STALE_MS / 4);
  timer.unref();
  process.on('exit', remove);
  const unhook = cleanupOnSignals(remove);
  return {
    release: () => {
      clearInterval(timer);
      process.off('exit', remove);
      unhook();
      if (!lost) remove();
    },
    compromised: () => lost,
  };
}
