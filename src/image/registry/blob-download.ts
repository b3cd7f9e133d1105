import { Readable } from 'node:stream';
import { PetriError } from '../../errors.js';
import type { BlobStore } from '../blobs.js';
import type { Descriptor } from '../types.js';
import { errorDetail, headerOf, type RegistryClient } from './client.js';
import { asConnectionError, discard, isTransient } from './http.js';
import { pullScope } from './manifest.js';

/** The server answered a resumed download with the whole blob: start again from its first byte. */
class Restart extends Error {}

/**
 * Downloads a blob into the store, hashed as it streams and refused (nothing
 * kept) when it does not match its digest and size. A connection that breaks
 * mid-blob is resumed with a Range request where the registry supports it, or
 * the download starts again, with backoff, up to the client's retries.
 */
export async function downloadBlob(
  client: RegistryClient,
  store: BlobStore,
  repository: string,
  blob: Descriptor,
  onRetry?: (reason: string) => void,
): Promise<void> {
  for (let restart = 0; ; restart++) {
    try {
      await store.writeBlobStream(Readable.from(chunks(client, repository, blob, onRetry)), {
        digest: blob.digest,
        size: blob.size,
      });
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
