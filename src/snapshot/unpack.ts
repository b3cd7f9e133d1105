import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { PetriError } from '../errors.js';
import { HashingStream } from '../image/digest.js';
import { EntryWriter } from './entry-writer.js';
import { type TarHeader, tarStream } from './tar-pax.js';

export interface UnpackResult {
  /** `sha256:` digest of the uncompressed archive: the layer's diffID. */
  diffId: string;
  /** Size of the uncompressed archive in bytes. */
  size: number;
  /** The opaque directories it made (relative paths, the root left out). */
  opaque: string[];
}

const GZIP_MAGIC = Buffer.from([0x1f, 0x8b]);
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

/**
 * Unpacks one layer archive (plain, gzip or zstd tar: told by its first bytes,
 * whatever `mediaType` says) into `target` (created when missing), so that
 * `target` can serve as an overlay lowerdir: see entry-writer.ts. Nothing is
 * ever written outside `target`. Returns the uncompressed archive's digest and
 * size, for the caller to check against the image's diffID.
 */
export async function unpackLayer(blob: Readable, mediaType: string, target: string): Promise<UnpackResult> {
  const writer = new EntryWriter(target);
  const { stream, compression } = await sniff(blob);
  const counter = new HashingStream();
  const extract = tarStream().extract();
  const stages: NodeJS.ReadWriteStream[] = [];
  // Large output chunks: fewer round trips to zlib's thread and fewer, larger file writes.
  if (compression === 'gzip') stages.push(zlib.createGunzip({ chunkSize: 256 << 10 }));
  if (compression === 'zstd') {
    try {
      stages.push(zstdDecompressor(mediaType));
    } catch (error) {
      stream.destroy();
      throw error;
    }
  }
  const feeding = pipeline([stream, ...stages, counter, extract as unknown as NodeJS.WritableStream]);
  feeding.catch(() => {}); // awaited below; a failure also ends the entries loop
  try {
    for await (const entry of extract) await writer.write(entry.header as TarHeader, entry as unknown as Readable);
    await feeding;
    writer.finish();
  } catch (caught) {
    blob.destroy();
    // A broken archive or stream also breaks the entry being written: report the cause.
    const fed = await feeding.then(
      () => undefined,
      (error: NodeJS.ErrnoException) => error,
    );
    const error = fed && fed.code !== 'ERR_STREAM_PREMATURE_CLOSE' ? fed : caught;
    if (error instanceof PetriError) throw error;
    throw new PetriError(`cannot unpack a layer (${mediaType}) into ${target}: ${(error as Error).message}`, {
      cause: error,
    });
  } finally {
    await writer.close();
  }
  return { diffId: counter.digest, size: counter.size, opaque: writer.opaqueDirs() };
}

/** Reads the first bytes to tell the compression, and gives back a stream of all of them. */
async function sniff(blob: Readable): Promise<{ stream: Readable; compression: 'gzip' | 'zstd' | 'none' }> {
  const iterator = blob[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let head = Buffer.alloc(0);
  while (head.length < ZSTD_MAGIC.length) {
    const next = await iterator.next();
    if (next.done) break;
    head = Buffer.concat([head, Buffer.from(next.value)]);
  }
  async function* all(): AsyncGenerator<Buffer> {
    try {
      if (head.length > 0) yield head;
      for (let next = await iterator.next(); !next.done; next = await iterator.next()) yield next.value;
    } finally {
      await iterator.return?.();
    }
  }
  const compression = head.subarray(0, 2).equals(GZIP_MAGIC)
    ? 'gzip'
    : head.subarray(0, 4).equals(ZSTD_MAGIC)
      ? 'zstd'
      : 'none';
  return { stream: Readable.from(all(), { objectMode: false }), compression };
}

function zstdDecompressor(mediaType: string): NodeJS.ReadWriteStream {
  const create = (zlib as unknown as { createZstdDecompress?: () => NodeJS.ReadWriteStream }).createZstdDecompress;
  if (!create) {
    throw new PetriError(
      `a layer (${mediaType}) is zstd-compressed, which needs Node.js 22.15 or newer (zlib.createZstdDecompress); this is Node.js ${process.version}: run petri on a newer Node.js or use an image with gzip layers`,
    );
  }
  return create();
}
