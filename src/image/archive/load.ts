import { createReadStream } from 'node:fs';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { PetriError } from '../../errors.js';
import { tarStream } from '../../snapshot/tar-pax.js';
import { isGzipFile } from '../../util/fs.js';
import { zlib } from '../../util/lazy-builtins.js';
import { imageArchitecture } from '../platform.js';
import type { ImageStore } from '../store.js';
import {
  type Descriptor,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  MEDIA_TYPES,
  REF_NAME_ANNOTATION,
} from '../types.js';

interface Entry {
  digest: string;
  size: number;
  gzip: boolean;
}

export interface LoadedImage {
  id: string;
  manifestDigest: string;
  tags: string[];
}

/**
 * Loads an image archive into the store: Docker's (`manifest.json`, as `docker
 * save` and `podman save` write it, old and new layouts) or OCI's (`index.json`
 * + `blobs/`, as `podman save --format oci-archive` writes it). Every file goes
 * into the store by its content digest; images are tagged with their names.
 */
export async function loadArchive(store: ImageStore, file: string): Promise<LoadedImage[]> {
  const files = new Map<string, Entry>();
  const extract = tarStream().extract();
  extract.on('entry', (header, stream, next) => {
    const name = header.name.replace(/^\.\//, '');
    if (header.type !== 'file') {
      stream.resume();
      stream.on('end', next);
      return;
    }
    const fromName = /^blobs\/sha256\/([a-f0-9]{64})$/.exec(name);
    const sniff = sniffGzip(stream as unknown as Readable);
    store.writeBlobStream(sniff.stream, fromName ? { digest: `sha256:${fromName[1]}` } : {}).then((info) => {
      files.set(name, { ...info, gzip: sniff.gzip() });
      next();
    }, next);
  });
  try {
    await pipeline(maybeGunzip(file), extract);
  } catch (error) {
    if (error instanceof PetriError) throw error;
    throw new PetriError(`cannot load ${file}: ${(error as Error).message} (is it an image archive?)`, {
      cause: error,
    });
  }
  if (files.has('manifest.json')) return loadDocker(store, files, file);
  if (files.has('index.json')) return loadOci(store, files, file);
  throw new PetriError(`cannot load ${file}: it has neither manifest.json (Docker) nor index.json (OCI)`);
}

async function loadDocker(store: ImageStore, files: Map<string, Entry>, file: string): Promise<LoadedImage[]> {
  const manifests = await store.readJson<{ Config: string; RepoTags?: string[] | null; Layers: string[] }[]>(
    (files.get('manifest.json') as Entry).digest,
  );
  const loaded: LoadedImage[] = [];
  for (const item of manifests) {
    const config = need(files, item.Config, file);
    const imageConfig = await store.readJson<ImageConfig>(config.digest);
    const layers: Descriptor[] = item.Layers.map((path) => {
      const layer = need(files, path, file);
      return {
        mediaType: layer.gzip ? MEDIA_TYPES.ociLayerGzip : MEDIA_TYPES.ociLayer,
        digest: layer.digest,
        size: layer.size,
      };
    });
    if (layers.length !== imageConfig.rootfs?.diff_ids?.length) {
      throw new PetriError(
        `cannot load ${file}: image ${item.Config} lists ${layers.length} layers but its config ${imageConfig.rootfs?.diff_ids?.length ?? 0}`,
      );
    }
    const manifest: ImageManifest = {
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociManifest,
      config: { mediaType: MEDIA_TYPES.ociConfig, digest: config.digest, size: config.size },
      layers,
    };
    const written = await store.writeBlob(JSON.stringify(manifest));
    const descriptor = { mediaType: MEDIA_TYPES.ociManifest, digest: written.digest, size: written.size };
    const tags = item.RepoTags ?? [];
    for (const tag of tags) await store.tag(tag, descriptor);
    loaded.push({ id: config.digest, manifestDigest: written.digest, tags });
  }
  return loaded;
}

async function loadOci(store: ImageStore, files: Map<string, Entry>, file: string): Promise<LoadedImage[]> {
  const index = await store.readJson<ImageIndex>((files.get('index.json') as Entry).digest);
  const loaded: LoadedImage[] = [];
  for (const descriptor of index.manifests) {
    let manifestDescriptor = descriptor;
    if (descriptor.mediaType === MEDIA_TYPES.ociIndex || descriptor.mediaType === MEDIA_TYPES.dockerManifestList) {
      const nested = await store.readJson<ImageIndex>(descriptor.digest);
      const pick = nested.manifests.find((m) => !m.platform || m.platform.architecture === imageArchitecture());
      if (!pick) throw new PetriError(`cannot load ${file}: no image for ${imageArchitecture()} in its index`);
      manifestDescriptor = { ...pick, annotations: descriptor.annotations };
    }
    const manifest = await store.readJson<ImageManifest>(manifestDescriptor.digest);
    for (const blob of [manifest.config, ...manifest.layers]) {
      if (!store.hasBlob(blob.digest))
        throw new PetriError(`cannot load ${file}: blob ${blob.digest} is missing from it`);
    }
    const name = descriptor.annotations?.['io.containerd.image.name'] ?? descriptor.annotations?.[REF_NAME_ANNOTATION];
    const tags = name ? [name.includes(':') || name.includes('@') ? name : `localhost/image:${name}`] : [];
    const target = {
      mediaType: manifestDescriptor.mediaType,
      digest: manifestDescriptor.digest,
      size: manifestDescriptor.size,
    };
    for (const tag of tags) await store.tag(tag, target);
    loaded.push({ id: manifest.config.digest, manifestDigest: manifestDescriptor.digest, tags });
  }
  return loaded;
}

function need(files: Map<string, Entry>, path: string, file: string): Entry {
  const entry = files.get(path.replace(/^\.\//, ''));
  if (!entry) throw new PetriError(`cannot load ${file}: its manifest names ${path}, which the archive does not hold`);
  return entry;
}

/** Passes a stream through, remembering whether it starts with gzip's magic bytes. */
function sniffGzip(source: Readable): { stream: Readable; gzip: () => boolean } {
  let gzip = false;
  let first = true;
  const out = new PassThrough();
  source.on('data', (chunk: Buffer) => {
    if (first) gzip = chunk.length >= 2 && chunk[0] === 0x1f && chunk[1] === 0x8b;
    first = false;
  });
  source.pipe(out);
  source.on('error', (e) => out.destroy(e));
  return { stream: out, gzip: () => gzip };
}

/** `docker save | gzip` archives are accepted too. */
function maybeGunzip(file: string): Readable {
  const input = createReadStream(file);
  return isGzipFile(file) ? input.pipe(zlib().createGunzip()) : input;
}
