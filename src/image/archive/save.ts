import { createWriteStream, renameSync, statSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { PetriError } from '../../errors.js';
import { tarStream } from '../../snapshot/tar-pax.js';
import type { ImageStore } from '../store.js';
import { type Descriptor, type ImageIndex, MEDIA_TYPES, REF_NAME_ANNOTATION, type StoredImage } from '../types.js';

/**
 * Writes images to one archive that both `docker load` / `podman load` (Docker's
 * `manifest.json`) and OCI tools (`oci-layout`, `index.json`, `blobs/`) read:
 * the layout Docker 25+ itself writes with `docker save`.
 */
export async function saveImages(store: ImageStore, refs: string[], file: string): Promise<StoredImage[]> {
  if (refs.length === 0) throw new PetriError('petri save: no image given (petri save IMAGE... -o FILE.tar)');
  const images = await Promise.all(refs.map((ref) => store.resolve(ref)));
  const pack = tarStream().pack();
  const temp = `${file}.${process.pid}.tmp`;
  const done = pipeline(pack, createWriteStream(temp));
  const blobs = new Set<string>();
  const addBlob = async (digest: string) => {
    if (blobs.has(digest)) return;
    blobs.add(digest);
    const path = store.blobPath(digest);
    const entry = pack.entry({
      name: `blobs/sha256/${digest.slice(7)}`,
      size: statSync(path).size,
      mtime: new Date(0),
    });
    await pipeline(store.openBlob(digest), entry);
  };
  const addJson = (name: string, value: unknown) =>
    new Promise<void>((resolve, reject) =>
      pack.entry({ name, mtime: new Date(0) }, `${JSON.stringify(value)}\n`, (e) => (e ? reject(e) : resolve())),
    );

  const dockerManifest: { Config: string; RepoTags: string[]; Layers: string[] }[] = [];
  const index: ImageIndex = { schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests: [] };
  for (const [i, image] of images.entries()) {
    await addBlob(image.manifestDigest);
    await addBlob(image.manifest.config.digest);
    for (const layer of image.manifest.layers) await addBlob(layer.digest);
    const requested = refs[i] as string;
    const tags = image.tags.includes(withTag(requested)) ? [withTag(requested)] : image.tags;
    dockerManifest.push({
      Config: `blobs/sha256/${image.manifest.config.digest.slice(7)}`,
      RepoTags: tags,
      Layers: image.manifest.layers.map((layer) => `blobs/sha256/${layer.digest.slice(7)}`),
    });
    const descriptor: Descriptor = {
      mediaType: image.manifest.mediaType ?? MEDIA_TYPES.ociManifest,
      digest: image.manifestDigest,
      size: statSync(store.blobPath(image.manifestDigest)).size,
    };
    if (tags.length === 0) index.manifests.push(descriptor);
    for (const tag of tags) {
      index.manifests.push({
        ...descriptor,
        annotations: { [REF_NAME_ANNOTATION]: tag, 'io.containerd.image.name': tag },
      });
    }
  }
  await addJson('oci-layout', { imageLayoutVersion: '1.0.0' });
  await addJson('index.json', index);
  await addJson('manifest.json', dockerManifest);
  pack.finalize();
  await done;
  renameSync(temp, file);
  return images;
}

function withTag(ref: string): string {
  return /:[\w][\w.-]*$/.test(ref.split('/').pop() ?? '') ? ref : `${ref}:latest`;
}
