import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { PetriError } from '../errors.js';
import { petriRoot } from '../runtime/paths.js';
import { randomHex, removeTree } from '../util/fs.js';
import { type LayerMeta, writeLayerMeta } from './layer-meta.js';

/** One layer of an image, as the image store hands it over (base layer first). */
export interface LayerSource {
  /** Digest of the (compressed) blob. */
  digest: string;
  mediaType: string;
  /** Digest of the uncompressed archive, from the image config's `rootfs.diff_ids`. */
  diffId: string;
  /** Opens the blob. */
  open: () => Readable;
}

/** An unpacked layer in the cache (`meta.json`, plus where it is). */
export interface LayerRecord {
  chainId: string;
  diffId: string;
  /** Chain ID of the layer below, null for a base layer. */
  parent: string | null;
  /** Size of the uncompressed archive in bytes. */
  size: number;
  /** The unpacked tree: an overlay lowerdir. */
  dir: string;
}

const DIGEST = /^sha256:[0-9a-f]{64}$/;
const TEMP_PREFIX = '.tmp-';

/** OCI chain IDs: chainID(L0) = diffID(L0); chainID(Ln) = sha256(chainID(Ln-1) + " " + diffID(Ln)). */
export function chainIds(diffIds: readonly string[]): string[] {
  const ids: string[] = [];
  for (const diffId of diffIds) {
    const parent = ids.at(-1);
    ids.push(
      parent === undefined ? diffId : `sha256:${createHash('sha256').update(`${parent} ${diffId}`).digest('hex')}`,
    );
  }
  return ids;
}

/**
 * Unpacked layers, shared by every container and build step:
 * `<dir>/<chain ID hex>/fs` (the tree) and `meta.json`. A layer is unpacked once,
 * into a temporary directory renamed into place when complete, so a directory
 * that exists is whole; when two processes unpack the same layer at once, both
 * succeed and the slower one discards its copy. The directory is root's only
 * (0700): unpacked layers hold other images' setuid programs.
 */
export class LayerCache {
  readonly dir: string;
  readonly #pending = new Map<string, Promise<string>>();

  constructor(dir = join(petriRoot(), 'layers')) {
    this.dir = dir;
  }

  /** Unpacks what is missing of `layers` (base first); returns their trees top first, as overlay lowerdirs. */
  async prepare(layers: readonly LayerSource[]): Promise<string[]> {
    for (const layer of layers) {
      if (!DIGEST.test(layer.diffId)) {
        throw new PetriError(`layer ${layer.digest} has a bad diffID "${layer.diffId}": the image config is broken`);
      }
    }
    const ids = chainIds(layers.map((layer) => layer.diffId));
    const dirs: string[] = [];
    for (const [i, layer] of layers.entries())
      dirs.push(await this.#ensure(layer, ids[i] as string, ids[i - 1] ?? null));
    return dirs.reverse();
  }

  /** The tree of the top layer of a stack with these diffIDs (base first), or undefined when it is not in the cache. */
  stackPath(diffIds: readonly string[]): string | undefined {
    const top = chainIds(diffIds).at(-1);
    return top !== undefined && DIGEST.test(top) ? this.path(top) : undefined;
  }

  /** The tree of an unpacked layer, or undefined when it is not in the cache. */
  path(chainId: string): string | undefined {
    const top = join(this.dir, hexOf(chainId));
    return existsSync(join(top, 'meta.json')) ? join(top, 'fs') : undefined;
  }

  /** Every unpacked layer. */
  list(): LayerRecord[] {
    const records: LayerRecord[] = [];
    for (const name of this.#names()) {
      if (name.startsWith(TEMP_PREFIX)) continue;
      try {
        const meta = JSON.parse(readFileSync(join(this.dir, name, 'meta.json'), 'utf8')) as LayerMeta;
        const { chainId, diffId, parent, size } = meta;
        records.push({ chainId, diffId, parent, size, dir: join(this.dir, name, 'fs') });
      } catch {
        // not a layer (or one being removed)
      }
    }
    return records;
  }

  /** Removes these layers (the caller knows none is in use), and what crashed unpacks left. */
  remove(chainIds: readonly string[]): void {
    for (const chainId of chainIds) {
      const top = join(this.dir, hexOf(chainId));
      const doomed = join(this.dir, `${TEMP_PREFIX}${process.pid}-${randomHex(6)}`);
      try {
        renameSync(top, doomed); // gone at once for everyone; then removed at leisure
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw error;
      }
      removeTree(doomed);
    }
    this.#sweep();
  }

  /**
   * A fresh working directory on the cache's filesystem (so that `adopt` can
   * rename it into place), removed by the next sweep if this process dies.
   */
  workDir(): string {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const temp = join(this.dir, `${TEMP_PREFIX}${process.pid}-${randomHex(6)}`);
    mkdirSync(temp, { mode: 0o700 });
    return temp;
  }

  /**
   * Moves `tree` (an overlay upper dir whose layer was just written, with this
   * diffID) into the cache as the layer above `parent`, so that the steps that
   * use it next need not unpack it. `layer.opaque` lists its opaque
   * directories, as written (see LayerMeta). Returns the layer's tree, which
   * is the existing one when the cache has it already. With `inPlace`, `tree`
   * is `fs` in a `workDir()` holding nothing else: that directory is taken
   * (or removed) with it.
   */
  adopt(
    tree: string,
    layer: { diffId: string; size: number; opaque: string[] },
    parent: string | null,
    options: { inPlace?: boolean } = {},
  ): string {
    const chainId = parent === null ? layer.diffId : (chainIds([parent, layer.diffId])[1] as string);
    const done = this.path(chainId);
    if (done) {
      removeTree(options.inPlace ? dirname(tree) : tree);
      return done;
    }
    // In place: `tree` is `fs` in a working directory of this cache that holds nothing else, which becomes the
    // layer's directory as it is (a directory made, a rename and a removal fewer per layer).
    const temp = options.inPlace && basename(tree) === 'fs' ? dirname(tree) : this.workDir();
    try {
      if (temp !== dirname(tree)) renameSync(tree, join(temp, 'fs'));
      writeLayerMeta(temp, { diffId: layer.diffId, chainId, parent, size: layer.size, opaque: layer.opaque });
      try {
        renameSync(temp, join(this.dir, hexOf(chainId)));
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if ((code !== 'EEXIST' && code !== 'ENOTEMPTY') || !this.path(chainId)) throw error;
        removeTree(temp);
      }
    } catch (error) {
      removeTree(temp);
      if (temp !== dirname(tree)) removeTree(tree);
      throw error;
    }
    return join(this.dir, hexOf(chainId), 'fs');
  }

  /**
   * Unpacks the top layer of a stack with these `diffIds` (base first) from
   * `stream`, a blob as it downloads, unless the cache has it or is unpacking
   * it (then `stream` is destroyed and left to its writer). The tree goes
   * into place only once `verified` resolves (the whole blob matched its
   * digest); when it rejects, what was unpacked is removed and this rejects
   * with its error. Returns the layer's tree.
   */
  unpackStream(
    layer: { digest: string; mediaType: string },
    diffIds: readonly string[],
    stream: Readable,
    verified: Promise<unknown>,
  ): Promise<string> {
    const bad = diffIds.find((diffId) => !DIGEST.test(diffId));
    if (bad !== undefined || diffIds.length === 0) {
      stream.destroy();
      return Promise.reject(
        new PetriError(`layer ${layer.digest} has a bad diffID "${bad}": the image config is broken`),
      );
    }
    const ids = chainIds(diffIds);
    const source = { ...layer, diffId: diffIds.at(-1) as string, open: () => stream };
    return this.#ensure(source, ids.at(-1) as string, ids.at(-2) ?? null, verified, () => stream.destroy());
  }

  #ensure(
    layer: LayerSource,
    chainId: string,
    parent: string | null,
    verified?: Promise<unknown>,
    skipped?: () => void,
  ): Promise<string> {
    const done = this.path(chainId);
    if (done) {
      skipped?.();
      return Promise.resolve(done);
    }
    let pending = this.#pending.get(chainId);
    if (pending) {
      skipped?.();
      return pending;
    }
    pending = this.#unpack(layer, chainId, parent, verified).finally(() => this.#pending.delete(chainId));
    this.#pending.set(chainId, pending);
    return pending;
  }

  async #unpack(
    layer: LayerSource,
    chainId: string,
    parent: string | null,
    verified?: Promise<unknown>,
  ): Promise<string> {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    this.#sweep();
    const top = join(this.dir, hexOf(chainId));
    const temp = join(this.dir, `${TEMP_PREFIX}${process.pid}-${randomHex(6)}`);
    mkdirSync(temp, { mode: 0o700 });
    try {
      let result: { diffId: string; size: number; opaque: string[] };
      try {
        const { unpackLayer } = await import('./unpack.js');
        result = await unpackLayer(layer.open(), layer.mediaType, join(temp, 'fs'));
      } catch (error) {
        // A download that failed (a digest mismatch, a broken connection) explains the broken archive.
        await verified;
        throw new PetriError(`layer ${layer.digest}: ${(error as Error).message}`, { cause: error });
      }
      await verified;
      if (result.diffId !== layer.diffId) {
        throw new PetriError(
          `layer ${layer.digest} unpacks to content with digest ${result.diffId}, but the image says its diffID is ${layer.diffId}: the blob or the image config is corrupt; pull or build the image again`,
        );
      }
      writeLayerMeta(temp, { diffId: layer.diffId, chainId, parent, size: result.size, opaque: result.opaque });
      try {
        renameSync(temp, top);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if ((code !== 'EEXIST' && code !== 'ENOTEMPTY') || !this.path(chainId)) throw error;
        removeTree(temp); // another process was quicker: its copy is as good as ours
      }
    } catch (error) {
      removeTree(temp);
      throw error;
    }
    return join(top, 'fs');
  }

  /** Removes temporary directories whose process is gone. */
  #sweep(): void {
    for (const name of this.#names()) {
      const pid = name.startsWith(TEMP_PREFIX) ? Number(name.slice(TEMP_PREFIX.length).split('-')[0]) : 0;
      if (pid > 0 && pid !== process.pid && !alive(pid)) removeTree(join(this.dir, name));
    }
  }

  #names(): string[] {
    try {
      return readdirSync(this.dir);
    } catch {
      return [];
    }
  }
}

function hexOf(chainId: string): string {
  if (!DIGEST.test(chainId)) throw new PetriError(`"${chainId}" is not a layer chain ID (sha256:<64 hex digits>)`);
  return chainId.slice('sha256:'.length);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
