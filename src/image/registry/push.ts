import { createReadStream } from 'node:fs';
import pLimit from 'p-limit';
import { errorLine, PetriError } from '../../errors.js';
import type { ImageStore } from '../store.js';
import { type Descriptor, MEDIA_TYPES, type StoredImage } from '../types.js';
import { headerOf, RegistryClient, type RegistryOptions } from './client.js';
import { discard, isTransient } from './http.js';
import { canonicalString, normalizeReference, type RemoteReference } from './name.js';

export interface PushOptions extends RegistryOptions {
  /** Blobs uploaded at once (default 3). */
  concurrency?: number;
  /** Blobs larger than this go up in chunks of this size (PATCH … PUT); smaller ones in one PUT. Default 64 MiB. */
  chunkSize?: number;
  onProgress?: (event: PushEvent) => void;
  client?: RegistryClient;
}

export type PushEvent =
  | { type: 'blob'; digest: string; size: number; status: 'exists' | 'mounted' | 'uploaded'; from?: string }
  | { type: 'retry'; digest: string; reason: string };

export interface PushResult {
  /** `localhost:5000/app:1` as pushed (canonical form). */
  reference: string;
  /** The manifest's digest: the same as in the store, as the manifest goes up byte for byte. */
  digest: string;
  size: number;
  uploaded: { blobs: number; bytes: number };
  mounted: number;
}

const OCTET = 'application/octet-stream';

/**
 * Pushes an image from the store (`source`, a name or id) to `destination`
 * (default: `source`'s own name): each blob the registry lacks is mounted from
 * another repository of the same registry that an image in the store came
 * from, or uploaded (one PUT, or PATCH chunks for big blobs); the manifest
 * goes last, byte for byte, so its digest is the store's.
 */
export async function pushImage(
  store: ImageStore,
  source: string,
  destination: string = source,
  options: PushOptions = {},
): Promise<PushResult> {
  const image = await store.resolve(source);
  const ref = normalizeReference(destination);
  if (ref.digest && ref.digest !== image.manifestDigest) {
    throw new PetriError(`cannot push ${source} as ${destination}: the image's manifest is ${image.manifestDigest}`, {
      code: 'EUSAGE',
    });
  }
  const client = options.client ?? new RegistryClient(ref.registry, options);
  const mounts = await mountSources(store, ref);
  const { uploaded, mounted } = await pushBlobs(
    store,
    client,
    ref,
    [...image.manifest.layers, image.manifest.config],
    options,
    mounts,
  );
  const raw = await store.readBlob(image.manifestDigest);
  const mediaType = image.manifest.mediaType ?? MEDIA_TYPES.ociManifest;
  await putManifest(client, ref, raw, mediaType, image.manifestDigest);
  return { reference: canonicalString(ref), digest: image.manifestDigest, size: raw.length, uploaded, mounted };
}

export interface PushBlobsOptions extends PushOptions {
  /** Called before a blob the registry lacks is uploaded: makes sure the store has it (a lazily fetched layer). */
  ensure?: (blob: Descriptor) => Promise<void>;
}

/**
 * Pushes blobs of the store to `ref`'s repository: each one the registry lacks
 * is mounted from another repository (`mounts`: digest → repositories) or
 * uploaded (one PUT, or PATCH chunks for big blobs), with retries.
 */
export async function pushBlobs(
  store: ImageStore,
  client: RegistryClient,
  ref: RemoteReference,
  blobs: Descriptor[],
  options: PushBlobsOptions = {},
  mounts: Map<string, string[]> = new Map(),
): Promise<{ uploaded: { blobs: number; bytes: number }; mounted: number }> {
  const emit = options.onProgress ?? (() => {});
  const scope = `repository:${ref.repository}:pull,push`;
  const uploaded = { blobs: 0, bytes: 0 };
  let mounted = 0;

  const pushBlob = async (blob: Descriptor): Promise<void> => {
    const path = `/v2/${ref.repository}/blobs/${blob.digest}`;
    const head = await client.request({ method: 'HEAD', path, scopes: [scope] });
    discard(head);
    if (head.status === 200) {
      emit({ type: 'blob', digest: blob.digest, size: blob.size, status: 'exists' });
      return;
    }
    if (head.status !== 404) throw await client.unexpected(head, `HEAD blob ${blob.digest}`);
    if (options.ensure) await options.ensure(blob);
    for (let attempt = 0; ; attempt++) {
      try {
        const from = mounts.get(blob.digest)?.find((repo) => repo !== ref.repository);
        const session = await startUpload(client, ref, scope, blob, from);
        if (session === 'mounted') {
          mounted++;
          emit({ type: 'blob', digest: blob.digest, size: blob.size, status: 'mounted', ...(from ? { from } : {}) });
          return;
        }
        await upload(client, store, scope, blob, session, options.chunkSize ?? 64 << 20);
        uploaded.blobs++;
        uploaded.bytes += blob.size;
        emit({ type: 'blob', digest: blob.digest, size: blob.size, status: 'uploaded' });
        return;
      } catch (error) {
        const retry = error instanceof RetryUpload || isTransient(error) || isTransient((error as Error).cause);
        if (!retry || attempt >= client.retries) {
          if (error instanceof PetriError) throw error;
          throw new PetriError(`${client.registry}: uploading blob ${blob.digest} failed: ${errorLine(error)}`, {
            code: 'ENETWORK',
            cause: error,
          });
        }
        emit({ type: 'retry', digest: blob.digest, reason: errorLine(error) });
        await client.backoff(attempt);
      }
    }
  };

  const limit = pLimit(options.concurrency ?? 3);
  const unique = [...new Map(blobs.map((blob) => [blob.digest, blob])).values()];
  const results = await Promise.allSettled(unique.map((blob) => limit(() => pushBlob(blob))));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return { uploaded, mounted };
}

/** PUTs a manifest (its bytes as given) under `ref`'s tag or digest; the registry must keep its digest. */
export async function putManifest(
  client: RegistryClient,
  ref: RemoteReference,
  raw: Buffer,
  mediaType: string,
  digest: string,
): Promise<void> {
  const scope = `repository:${ref.repository}:pull,push`;
  const target = ref.digest ?? (ref.tag as string);
  const response = await client.request({
    method: 'PUT',
    path: `/v2/${ref.repository}/manifests/${target}`,
    scopes: [scope],
    headers: { 'Content-Type': mediaType },
    body: () => raw,
    idempotent: true,
  });
  if (response.status !== 201 && response.status !== 200) {
    throw await client.unexpected(response, `PUT manifest ${canonicalString(ref)}`);
  }
  discard(response);
  const stored = headerOf(response, 'docker-content-digest');
  if (stored && stored !== digest) {
    throw new PetriError(
      `${client.registry} stored the manifest of ${canonicalString(ref)} as ${stored}, not ${digest}: it rewrote it`,
      { code: 'EREGISTRY' },
    );
  }
}

class RetryUpload extends Error {}

/** POST …/blobs/uploads/ (with `mount=&from=` when a source repository is known): 'mounted', or the upload URL. */
async function startUpload(
  client: RegistryClient,
  ref: RemoteReference,
  scope: string,
  blob: Descriptor,
  from: string | undefined,
): Promise<'mounted' | string> {
  const base = `/v2/${ref.repository}/blobs/uploads/`;
  const path = from ? `${base}?mount=${encodeURIComponent(blob.digest)}&from=${encodeURIComponent(from)}` : base;
  const scopes = from ? [scope, `repository:${from}:pull`] : [scope];
  const response = await client.request({ method: 'POST', path, scopes, idempotent: true });
  if (from && response.status === 201) {
    discard(response);
    return 'mounted';
  }
  if (response.status !== 202) throw await client.unexpected(response, `starting an upload of ${blob.digest}`);
  discard(response);
  const location = headerOf(response, 'location');
  if (!location)
    throw new PetriError(`${client.registry}: an upload started without a Location`, { code: 'EREGISTRY' });
  return new URL(location, response.url).toString();
}

/** Sends a blob to an upload URL: one PUT, or PATCH chunks then an empty PUT. */
async function upload(
  client: RegistryClient,
  store: ImageStore,
  scope: string,
  blob: Descriptor,
  location: string,
  chunkSize: number,
): Promise<void> {
  let url = location;
  if (blob.size > chunkSize) {
    for (let start = 0; start < blob.size; start += chunkSize) {
      const end = Math.min(blob.size, start + chunkSize) - 1;
      const response = await client.request({
        method: 'PATCH',
        path: url,
        scopes: [scope],
        headers: {
          'Content-Type': OCTET,
          'Content-Range': `${start}-${end}`,
          'Content-Length': String(end - start + 1),
        },
        body: () => createReadStream(store.blobPath(blob.digest), { start, end }),
      });
      if (response.status !== 202) throw await uploadError(client, response, blob, `a chunk (bytes ${start}-${end})`);
      discard(response);
      url = new URL(headerOf(response, 'location') ?? url, response.url).toString();
    }
  }
  const final = new URL(url);
  final.searchParams.set('digest', blob.digest);
  const monolithic = blob.size <= chunkSize;
  const response = await client.request({
    method: 'PUT',
    path: final.toString(),
    scopes: [scope],
    headers: monolithic ? { 'Content-Type': OCTET, 'Content-Length': String(blob.size) } : {},
    ...(monolithic ? { body: () => store.openBlob(blob.digest, blob.size) } : {}),
  });
  if (response.status !== 201 && response.status !== 204) {
    throw await uploadError(client, response, blob, 'the upload');
  }
  discard(response);
}

async function uploadError(
  client: RegistryClient,
  response: Awaited<ReturnType<RegistryClient['request']>>,
  blob: Descriptor,
  what: string,
): Promise<Error> {
  const error = await client.unexpected(response, `${what} of blob ${blob.digest}`);
  // A registry that failed (5xx) or lost the session (404): start a new upload.
  return response.status >= 500 || response.status === 404 ? new RetryUpload(error.message) : error;
}

/** Blob digest → repositories of the destination's registry that hold it (by the store's names for images). */
async function mountSources(store: ImageStore, destination: RemoteReference): Promise<Map<string, string[]>> {
  const sources = new Map<string, string[]>();
  let images: StoredImage[];
  try {
    images = await store.list();
  } catch {
    return sources;
  }
  for (const image of images) {
    for (const tag of image.tags) {
      let ref: RemoteReference;
      try {
        ref = normalizeReference(tag);
      } catch {
        continue;
      }
      if (ref.registry !== destination.registry || ref.repository === destination.repository) continue;
      for (const blob of [image.manifest.config, ...image.manifest.layers]) {
        const repos = sources.get(blob.digest) ?? [];
        if (!repos.includes(ref.repository)) repos.push(ref.repository);
        sources.set(blob.digest, repos);
      }
    }
  }
  return sources;
}
