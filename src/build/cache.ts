import { createHash } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { petriRoot } from '../runtime/paths.js';
import { randomHex } from '../util/fs.js';

/** A layer a build step made: its blob in the image store, and its diffID. */
export interface LayerRef {
  digest: string;
  size: number;
  mediaType: string;
  diffId: string;
}

/** What the cache remembers of a step: the layer it made (none: the step changed nothing), and when. */
export interface CacheRecord {
  layer: LayerRef | null;
  created: string;
  /** The step as the history shows it. */
  createdBy: string;
}

/** The builder's SOURCE_DATE_EPOCH: layer mtimes are clamped to it, new steps dated by it (0: unset, dated now). */
export function buildEpoch(): number {
  const epoch = process.env.SOURCE_DATE_EPOCH;
  return epoch && /^\d+$/.test(epoch) ? Number(epoch) : 0;
}

/** A step's cache key: sha256 of its parent's key and what defines the step, in a fixed order. */
export function cacheKey(parent: string, step: unknown): string {
  return `sha256:${createHash('sha256').update(parent).update('\0').update(stableJson(step)).digest('hex')}`;
}

/** JSON with object keys sorted, so equal values always give equal text. */
export function stableJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
    return Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : 1)));
  });
}

/**
 * The build cache: one small JSON record per step key under
 * `$PETRI_ROOT/build-cache/steps/`, shared by every petri process (a record
 * is written to a temporary file and renamed into place, so a reader sees a
 * whole record or none). Layers themselves are blobs in the image store; a
 * record whose blob was pruned is a miss. Cache mounts (`RUN --mount=type=cache`)
 * live beside it, under `mounts/`.
 */
export class BuildCache {
  readonly dir: string;

  constructor(dir = join(petriRoot(), 'build-cache')) {
    this.dir = dir;
  }

  get(key: string): CacheRecord | undefined {
    try {
      return JSON.parse(readFileSync(this.#path(key), 'utf8')) as CacheRecord;
    } catch {
      return undefined;
    }
  }

  set(key: string, record: CacheRecord): void {
    const steps = join(this.dir, 'steps');
    mkdirSync(steps, { recursive: true, mode: 0o700 });
    const temp = join(steps, `.tmp-${process.pid}-${randomHex(6)}`);
    writeFileSync(temp, JSON.stringify(record));
    renameSync(temp, this.#path(key));
  }

  /**
   * The content hash of files selected from a stage or image (whose filesystem
   * never changes for a given key), so that a cached build need not unpack or
   * read that filesystem again to compute a COPY --from key.
   */
  getSelection(key: string): string | undefined {
    try {
      return readFileSync(join(this.dir, 'selections', key.replace(/^sha256:/, '')), 'utf8');
    } catch {
      return undefined;
    }
  }

  setSelection(key: string, hash: string): void {
    const dir = join(this.dir, 'selections');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const temp = join(dir, `.tmp-${process.pid}-${randomHex(6)}`);
    writeFileSync(temp, hash);
    renameSync(temp, join(dir, key.replace(/^sha256:/, '')));
  }

  /** The directory of a cache mount, created on first use with the mount's owner and mode. */
  mountDir(id: string, owner: { uid: number; gid: number; mode: number }): string {
    const dir = join(this.dir, 'mounts', createHash('sha256').update(id).digest('hex').slice(0, 32));
    if (!existsSync(dir)) {
      mkdirSync(join(this.dir, 'mounts'), { recursive: true, mode: 0o700 });
      const temp = `${dir}.tmp-${process.pid}-${randomHex(6)}`;
      mkdirSync(temp);
      chownSync(temp, owner.uid, owner.gid);
      chmodSync(temp, owner.mode);
      try {
        renameSync(temp, dir);
      } catch {
        rmdirSync(temp); // another build made it first
      }
    }
    return dir;
  }

  #path(key: string): string {
    return join(this.dir, 'steps', key.replace(/^sha256:/, ''));
  }
}
