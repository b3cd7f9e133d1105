import { PetriError } from '../../errors.js';
import type { BlobStore } from '../blobs.js';
import { isDigest, sha256Digest } from '../digest.js';
import { type Descriptor, type ImageIndex, type ImageManifest, MEDIA_TYPES } from '../types.js';
import { errorDetail, headerOf, type RegistryClient } from './client.js';
import { discard, readBytes } from './http.js';

/** What petri asks registries for, best first: indexes and manifests, OCI and Docker schema 2. */
export const MANIFEST_ACCEPT = [
  MEDIA_TYPES.ociIndex,
  MEDIA_TYPES.dockerManifestList,
  MEDIA_TYPES.ociManifest,
  MEDIA_TYPES.dockerManifest,
].join(', ');

const MANIFEST_LIMIT = 4 << 20;

/** A manifest or index as the registry serves it: its exact bytes (whose digest names it) and what it is. */
export interface RawManifest {
  raw: Buffer;
  digest: string;
  mediaType: string;
  kind: 'index' | 'manifest';
  /** Read from the local store instead of the registry. */
  local: boolean;
}

export function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

/**
 * A manifest by tag or digest. One already in the store (a digest, or a tag
 * whose HEAD names a digest the store has) is read locally and not downloaded
 * again; a downloaded one must hash to the digest asked for (or the one the
 * registry says in Docker-Content-Digest).
 */
export async function fetchManifest(
  client: RegistryClient,
  store: BlobStore,
  repository: string,
  reference: string,
): Promise<RawManifest> {
  const path = `/v2/${repository}/manifests/${reference}`;
  const scopes = [pullScope(repository)];
  const headers = { Accept: MANIFEST_ACCEPT };
  const name = `${client.registry}/${repository}${isDigest(reference) ? '@' : ':'}${reference}`;
  if (isDigest(reference) && store.hasBlob(reference)) return local(store, reference);
  if (!isDigest(reference)) {
    const head = await client.request({ method: 'HEAD', path, scopes, headers });
    discard(head);
    if (head.status === 404) throw notFound(name, '');
    const digest = headerOf(head, 'docker-content-digest');
    if (head.status === 200 && digest && isDigest(digest) && store.hasBlob(digest)) return local(store, digest);
  }
  const response = await client.request({ method: 'GET', path, scopes, headers });
  if (response.status === 404) throw notFound(name, await errorDetail(response));
  if (response.status !== 200) throw await client.unexpected(response, `GET manifest ${name}`);
  const raw = await readBytes(response, MANIFEST_LIMIT).catch((error: Error) => {
    throw new PetriError(`${name}: cannot read its manifest: ${error.message}`, { code: 'EREGISTRY', cause: error });
  });
  const digest = sha256Digest(raw);
  const claimed = isDigest(reference) ? reference : headerOf(response, 'docker-content-digest');
  if (claimed && isDigest(claimed) && claimed !== digest) {
    throw new PetriError(
      `${name}: the manifest the registry sent hashes to ${digest}, not ${claimed}: it is corrupt or was tampered with`,
      { code: 'EDIGEST' },
    );
  }
  return classify(raw, digest, headerOf(response, 'content-type'), false, name);
}

async function local(store: BlobStore, digest: string): Promise<RawManifest> {
  const raw = await store.readBlob(digest);
  return classify(raw, digest, undefined, true, digest);
}

function classify(raw: Buffer, digest: string, contentType: string | undefined, local: boolean, name: string) {
  let document: Omit<Partial<ImageManifest & ImageIndex>, 'schemaVersion'> & { schemaVersion?: number };
  try {
    document = JSON.parse(raw.toString('utf8')) as typeof document;
  } catch {
    throw new PetriError(`${name}: the manifest is not JSON`, { code: 'EREGISTRY' });
  }
  const type = document.mediaType ?? contentType?.split(';')[0]?.trim() ?? '';
  if (document.schemaVersion === 1 || type.startsWith('application/vnd.docker.distribution.manifest.v1')) {
    throw new PetriError(
      `${name} is a Docker schema 1 image, a format registries stopped serving in 2019 and petri does not read: push it again with a current Docker or skopeo`,
      { code: 'EUNSUPPORTED' },
    );
  }
  const index = Array.isArray(document.manifests);
  if (!index && (!document.config || !Array.isArray(document.layers))) {
    throw new PetriError(
      `${name}: the registry sent a ${type || 'document'} that is neither an image manifest nor an index`,
      {
        code: 'EUNSUPPORTED',
      },
    );
  }
  const mediaType = type || (index ? MEDIA_TYPES.ociIndex : MEDIA_TYPES.ociManifest);
  return { raw, digest, mediaType, kind: index ? 'index' : 'manifest', local } satisfies RawManifest;
}

function notFound(name: string, detail: string): PetriError {
  return new PetriError(`image ${name} not found in the registry${detail ? ` (${detail})` : ''}`, {
    code: 'ENOTFOUND',
  });
}

/** Layer media types petri will not download: Windows' foreign layers, OCI non-distributable layers. */
export function isForeignLayer(layer: Descriptor): boolean {
  return /foreign|nondistributable/.test(layer.mediaType);
}
