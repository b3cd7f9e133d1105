import { PetriError } from '../errors.js';
import type { BlobStore } from './blobs.js';
import { validateDigest } from './digest.js';
import { type Descriptor, type ImageIndex, type ImageManifest, MEDIA_TYPES } from './types.js';

/** A blob an image needs, and what it is to it. */
export interface BlobRef {
  digest: string;
  size: number;
  role: 'manifest' | 'index' | 'config' | 'layer';
}

const MANIFEST_TYPES = new Set<string>([MEDIA_TYPES.ociManifest, MEDIA_TYPES.dockerManifest]);
const INDEX_TYPES = new Set<string>([MEDIA_TYPES.ociIndex, MEDIA_TYPES.dockerManifestList]);

export function isManifestType(mediaType: string | undefined): boolean {
  return mediaType !== undefined && MANIFEST_TYPES.has(mediaType);
}

export function isIndexType(mediaType: string | undefined): boolean {
  return mediaType !== undefined && INDEX_TYPES.has(mediaType);
}

/**
 * Every blob an index entry needs: the manifest itself, its config and layers;
 * for a multi-platform index, the blobs of each manifest in it. Manifests and
 * indexes are read (and so verified); configs and layers are only listed.
 */
export async function referencedBlobs(blobs: BlobStore, entry: Descriptor, depth = 0): Promise<BlobRef[]> {
  validateDigest(entry.digest, 'manifest digest');
  if (depth > 4) throw new PetriError(`manifest ${entry.digest} nests indexes deeper than petri follows (4)`);
  const refs: BlobRef[] = [];
  const document = await blobs.readJson<Partial<ImageManifest & ImageIndex>>(entry.digest);
  const mediaType = document.mediaType ?? entry.mediaType;
  if (Array.isArray(document.manifests) || isIndexType(mediaType)) {
    refs.push({ digest: entry.digest, size: entry.size, role: 'index' });
    for (const child of document.manifests ?? []) refs.push(...(await referencedBlobs(blobs, child, depth + 1)));
    return refs;
  }
  if (!document.config || !Array.isArray(document.layers)) {
    throw new PetriError(
      `blob ${entry.digest} is not an image manifest or index (no config and layers, no manifests)`,
      {
        code: 'EBLOB',
      },
    );
  }
  refs.push({ digest: entry.digest, size: entry.size, role: 'manifest' });
  refs.push({
    digest: validateDigest(document.config.digest, 'config digest'),
    size: document.config.size,
    role: 'config',
  });
  for (const layer of document.layers) {
    refs.push({ digest: validateDigest(layer.digest, 'layer digest'), size: layer.size, role: 'layer' });
  }
  return refs;
}
