import { PassThrough, Readable } from 'node:stream';
import { PetriError } from '../../errors.js';
import type { BlobStore } from '../blobs.js';
import type { Descriptor } from '../types.js';
import { errorDetail, headerOf, type RegistryClient } from './client.js';
import { asConnectionError, discard, isTransient } from './http.js';
import { pullScope } from './manifest.js';

/** The server answered a resumed download with the whole blob: start again from its first byte. */
class Restart extends Error {}

/**
 * Takes a copy of a blob's bytes as they download, for one attempt: `stream`
 * carries them (it ends when the download does, or is destroyed when it
 * breaks); `verified` resolves once the whole blob matched its digest and
 * size and is in the store, and rejects otherwise. What it returns is awaited
 * before the download counts as done.
 */
export type BlobTee = (stream: Readable, verified: Promise<void>) => Promise<unknown>;

/**
 * Downloads a blob into the store, hashed as it streams and refused (nothing
 * kept) when it does not match its digest and size. A connection that breaks
 * mid-blob is resumed with a Range request where the registry supports it, or
 * the download starts again, with backoff, up to the client's retries. With
 * `tee`, the bytes also flow to it as they arrive (a layer unpacked while it
 * downloads), at the pace of the slower of the two.
 */
export async function downloadBlob(
  client: RegistryClient,
  store: BlobStore,
  repository: string,
  blob: Descriptor,
  onRetry?: (reason: string) => void,
  tee?: BlobTee,
): Promise<void> {
  for (let restart = 0; ; restart++) {
    try {
      await attempt(client, store, repository, blob, onRetry, tee);
      return;
    } catch (error) {
      if (!(error instanceof Restart)) throw error;
      if (restart >= client.retries) {
        throw new PetriError(
          `${client.registry}/${repository}: downloading blob ${blob.digest} failed: ${error.message}`,
          {
            code: 'ENETWORK',
          },
        );
      }
      onRetry?.(error.message);
      await client.backoff(restart);
    }
  }
}

async function attempt(
  client: RegistryClient,
  store: BlobStore,
  repository: string,
  blob: Descriptor,
  onRetry: ((reason: string) => void) | undefined,
  tee: BlobTee | undefined,
): Promise<void> {
  const source = chunks(client, repository, blob, onRetry);
  const expected = { digest: blob.digest, size: blob.size };
  if (!tee) {
    await store.writeBlobStream(Readable.from(source), expected);
    return;
  }
  const copy = new PassThrough({ highWaterMark: 1 << 20 });
  let settle: { resolve: () => void; reject: (error: unknown) => void } | undefined;
  const verified = new Promise<void>((resolve, reject) => {
    settle = { resolve, reject };
  });
  verified.catch(() => {}); // the tee's to handle; a tee that failed first may never look
  const teeing = tee(copy, verified);
  teeing.catch(() => {}); // awaited below, after the download
  try {
    await store.writeBlobStream(Readable.from(copied(source, copy)), expected);
  } catch (error) {
    settle?.reject(error);
    await teeing.catch(() => {});
    throw error;
  }
  settle?.resolve();
  await teeing;
}

/** Passes `source` on, writing each chunk to `copy` too (while it accepts them: a consumer that failed is left out). */
async function* copied(source: AsyncIterable<Buffer>, copy: PassThrough): AsyncGenerator<Buffer> {
  let ended = false;
  try {
    for await (const chunk of source) {
      if (!copy.destroyed && !copy.write(chunk)) await drained(copy);
      yield chunk;
    }
    ended = true;
    if (!copy.destroyed) copy.end();
  } finally {
    if (!ended) copy.destroy();
  }
}

function drained(stream: PassThrough): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}

async function* chunks(
  client: RegistryClient,
  repository: string,
  blob: Descriptor,
  onRetry?: (reason: string) => void,
): AsyncGenerator<Buffer> {
  const path = `/v2/${repository}/blobs/${blob.digest}`;
  const where = `${client.registry}/${repository}`;
  let offset = 0;
  let failures = 0;
  const failed = async (reason: string) => {
    if (failures >= client.retries) {
      throw new PetriError(`${where}: downloading blob ${blob.digest} failed ${failures + 1} times: ${reason}`, {
        code: 'ENETWORK',
      });
    }
    onRetry?.(`${reason}; resuming at byte ${offset}`);
    await client.backoff(failures++);
  };
  for (;;) {
    const headers: Record<string, string> = offset > 0 ? { Range: `bytes=${offset}-` } : {};
    const response = await client.request({ method: 'GET', path, scopes: [pullScope(repository)], headers });
    if (response.status === 404) {
      throw new PetriError(`${where}: blob ${blob.digest} is not in the registry (${await errorDetail(response)})`, {
        code: 'ENOTFOUND',
      });
    }
    if (offset > 0) {
      const start = /^bytes (\d+)-/.exec(headerOf(response, 'content-range') ?? '')?.[1];
      if (response.status !== 206 || Number(start) !== offset) {
        discard(response);
        throw new Restart(`the registry cannot resume blob ${blob.digest.slice(7, 19)} at byte ${offset}`);
      }
    } else if (response.status !== 200) {
      throw await client.unexpected(response, `GET blob ${blob.digest}`);
    }
    try {
      for await (const chunk of response.body) {
        offset += (chunk as Buffer).length;
        if (offset > blob.size) {
          response.body.destroy();
          throw new PetriError(
            `${where}: blob ${blob.digest} is larger than the ${blob.size} bytes its manifest says: it is corrupt or was tampered with; nothing was kept`,
            { code: 'EDIGEST' },
          );
        }
        yield chunk as Buffer;
      }
    } catch (caught) {
      if (caught instanceof PetriError) throw caught;
      const error = asConnectionError(caught as Error, response.url);
      if (!isTransient(error)) {
        throw new PetriError(`${where}: downloading blob ${blob.digest} failed: ${error.message}`, {
          code: 'ENETWORK',
          cause: error,
        });
      }
      await failed(error.message);
      continue;
    }
    if (offset >= blob.size) return;
    await failed(`the connection ended after ${offset} of ${blob.size} bytes`);
  }
}
