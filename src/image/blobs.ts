import { createHash } from 'node:crypto';
import {
  constants,
  createReadStream,
  createWriteStream,
  existsSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { copyFile, link, readFile, rename, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { errorLine, PetriError } from '../errors.js';
import {
  digestHex,
  digestMismatch,
  HashingStream,
  sha256Digest,
  sizeMismatch,
  VerifyingStream,
  validateDigest,
} from './digest.js';
import { blobsDir } from './layout.js';
import { tempName } from './temp.js';

export interface BlobInfo {
  digest: string;
  size: number;
}

/** What a written blob must be; a mismatch refuses it. */
export interface ExpectedBlob {
  digest?: string;
  size?: number;
}

const WRITE_MISMATCH = 'the source is corrupt or was tampered with';
/** Blobs up to this size (manifests, configs, small layers) are read and written synchronously: the thread pool's round trips cost more than the I/O. */
const SYNC_IO_MAX = 1 << 20;

/**
 * The content-addressed blobs of an OCI layout: `blobs/sha256/<hex>`. Writes go
 * to a temp file beside the blobs while hashing and are renamed into place once
 * verified; every read checks the content against its digest, so a blob that
 * was corrupted on disk is refused, never used.
 */
export class BlobStore {
  readonly dir: string;
  readonly blobsDir: string;

  constructor(dir: string) {
    this.dir = dir;
    this.blobsDir = blobsDir(dir);
  }

  blobPath(digest: string): string {
    return join(this.blobsDir, digestHex(digest));
  }

  hasBlob(digest: string): boolean {
    return existsSync(this.blobPath(digest));
  }

  async writeBlob(data: Buffer | string, expected?: string): Promise<BlobInfo> {
    const buffer = typeof data === 'string' ? Buffer.from(data) : data;
    const digest = sha256Digest(buffer);
    if (expected !== undefined && validateDigest(expected) !== digest) {
      throw digestMismatch(expected, digest, WRITE_MISMATCH);
    }
    if (buffer.length <= SYNC_IO_MAX) return this.#writeSmall(buffer, { digest, size: buffer.length });
    const temp = join(this.blobsDir, tempName());
    await writeFile(temp, buffer, { flag: 'wx' });
    return this.#commit(temp, { digest, size: buffer.length });
  }

  /** Writes a stream (a Readable, or any async iterable of bytes) as a blob. */
  async writeBlobStream(stream: Readable | AsyncIterable<Uint8Array>, expected: ExpectedBlob = {}): Promise<BlobInfo> {
    if (expected.digest !== undefined) validateDigest(expected.digest);
    const temp = join(this.blobsDir, tempName());
    const hashing = new HashingStream();
    try {
      await pipeline(stream, hashing, createWriteStream(temp, { flags: 'wx' }));
    } catch (error) {
      await removeQuietly(temp);
      throw error;
    }
    return this.#verifyAndCommit(temp, { digest: hashing.digest, size: hashing.size }, expected);
  }

  /**
   * Brings a file into the store. By default it is copied (a reflink where the
   * filesystem can), so later changes to the file cannot reach the blob; with
   * `link` it is hard-linked when on the same filesystem: for files the caller
   * owns and will not change (a layer it just wrote).
   */
  async ingestFile(
    path: string,
    expected: ExpectedBlob | string = {},
    options: { link?: boolean } = {},
  ): Promise<BlobInfo> {
    const want = typeof expected === 'string' ? { digest: expected } : expected;
    if (want.digest !== undefined) validateDigest(want.digest);
    const temp = join(this.blobsDir, tempName());
    try {
      if (options.link) {
        await link(path, temp).catch(() => copyFile(path, temp, constants.COPYFILE_FICLONE));
        // A link keeps the file's old mtime; the blob's grace period before a prune starts now.
        const now = new Date();
        await utimes(temp, now, now);
      } else {
        await copyFile(path, temp, constants.COPYFILE_FICLONE);
      }
    } catch (error) {
      await removeQuietly(temp);
      throw new PetriError(`cannot bring ${path} into the image store: ${errorLine(error)}`, { cause: error });
    }
    // Hash the store's own copy: unless linked, what lands in the store is what was hashed.
    const hash = createHash('sha256');
    let size = 0;
    try {
      for await (const chunk of createReadStream(temp)) {
        hash.update(chunk as Buffer);
        size += (chunk as Buffer).length;
      }
    } catch (error) {
      await removeQuietly(temp);
      throw error;
    }
    return this.#verifyAndCommit(temp, { digest: `sha256:${hash.digest('hex')}`, size }, want);
  }

  /** A blob's content, verified against its digest. */
  async readBlob(digest: string): Promise<Buffer> {
    const path = this.#existingPath(digest);
    let data: Buffer;
    try {
      data = (sizeOf(path) ?? Number.POSITIVE_INFINITY) <= SYNC_IO_MAX ? readFileSync(path) : await readFile(path);
    } catch (error) {
      throw this.#readError(digest, path, error);
    }
    const actual = sha256Digest(data);
    if (actual !== digest) throw digestMismatch(digest, actual, corruptWhere(path));
    return data;
  }

  async readJson<T>(digest: string): Promise<T> {
    const data = await this.readBlob(digest);
    try {
      return JSON.parse(data.toString('utf8')) as T;
    } catch (error) {
      throw new PetriError(`blob ${digest} is not valid JSON (${errorLine(error)}); it is not a manifest or config`, {
        code: 'EBLOB',
        cause: error,
      });
    }
  }

  /**
   * A blob's content as a stream. The content is verified as it flows: the
   * stream ends with an error instead of `end` when it does not match its
   * digest (or `size`, when given), so a consumer must not trust the data
   * before the stream has ended cleanly.
   */
  openBlob(digest: string, size?: number): Readable {
    const path = this.#existingPath(digest);
    const verify = new VerifyingStream(digest, corruptWhere(path), size);
    const source = createReadStream(path);
    source.on('error', (error) => verify.destroy(this.#readError(digest, path, error)));
    verify.on('close', () => source.destroy());
    return source.pipe(verify);
  }

  async #verifyAndCommit(temp: string, actual: BlobInfo, expected: ExpectedBlob): Promise<BlobInfo> {
    if (expected.digest !== undefined && expected.digest !== actual.digest) {
      await removeQuietly(temp);
      throw digestMismatch(expected.digest, actual.digest, WRITE_MISMATCH);
    }
    if (expected.size !== undefined && expected.size !== actual.size) {
      await removeQuietly(temp);
      throw sizeMismatch(actual.digest, expected.size, actual.size, WRITE_MISMATCH);
    }
    return this.#commit(temp, actual);
  }

  /**
   * Moves a verified temp file to its blob's name. A blob already there (of the
   * right size) is kept and its mtime refreshed, so that a prune's grace period
   * protects it again until the new image that uses it is tagged.
   */
  /** writeBlob of a small buffer, as #commit does it but synchronously, the temp file written only when needed. */
  #writeSmall(buffer: Buffer, blob: BlobInfo): BlobInfo {
    const final = this.blobPath(blob.digest);
    try {
      if (sizeOf(final) === blob.size) {
        const now = new Date();
        utimesSync(final, now, now);
        return blob;
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      // Pruned between the check and the touch: put ours in its place.
    }
    const temp = join(this.blobsDir, tempName());
    writeFileSync(temp, buffer, { flag: 'wx' });
    try {
      renameSync(temp, final);
    } catch (error) {
      try {
        unlinkSync(temp);
      } catch {}
      throw error;
    }
    return blob;
  }

  async #commit(temp: string, blob: BlobInfo): Promise<BlobInfo> {
    const final = this.blobPath(blob.digest);
    try {
      if (sizeOf(final) === blob.size) {
        const now = new Date();
        await utimes(final, now, now);
        await removeQuietly(temp);
        return blob;
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
        await removeQuietly(temp);
        throw error;
      }
      // Pruned between the check and the touch: put ours in its place.
    }
    await rename(temp, final);
    return blob;
  }

  #existingPath(digest: string): string {
    const path = this.blobPath(digest);
    if (!existsSync(path)) {
      throw new PetriError(
        `blob ${digest} is not in the image store (${path}): it was pruned or never written; import or build the image again`,
        { code: 'ENOBLOB' },
      );
    }
    return path;
  }

  #readError(digest: string, path: string, error: unknown): PetriError {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      return new PetriError(`blob ${digest} was removed from the image store (${path}) while petri read it`, {
        code: 'ENOBLOB',
        cause: error,
      });
    }
    return new PetriError(`cannot read blob ${digest} (${path}): ${errorLine(error)}`, { code: 'EBLOB', cause: error });
  }
}

function corruptWhere(path: string): string {
  return `the store's copy (${path}) is corrupt: remove the images that use it, prune, and import or build them again`;
}

function sizeOf(path: string): number | undefined {
  try {
    return statSync(path).size;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

async function removeQuietly(path: string): Promise<void> {
  await unlink(path).catch(() => {});
}
