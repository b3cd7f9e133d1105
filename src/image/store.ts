import { statSync } from 'node:fs';
import { join } from 'node:path';
import { errorLine, PetriError } from '../errors.js';
import { petriRoot } from '../runtime/paths.js';
import { BlobStore } from './blobs.js';
import { isDigest, validateDigest } from './digest.js';
import { createLayout, namedEntry, readIndex, refName, writeIndex } from './layout.js';
import { withIndexLock } from './lock.js';
import { type PruneOptions, type PruneResult, pruneBlobs } from './prune.js';
import { isIndexType, referencedBlobs } from './reachable.js';
import { parseReference, tagRef } from './reference.js';
import { familiarRef } from './registry/name.js';
import {
  type Descriptor,
  type ImageConfig,
  type ImageManifest,
  INDEX_DIGEST_ANNOTATION,
  MEDIA_TYPES,
  type StoredImage,
} from './types.js';

export interface NewImage {
  config: ImageConfig;
  /** Layer descriptors; their blobs must be in the store already. */
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

/** An index entry's manifest and every `name:tag` that names it. */
interface Entry {
  descriptor: Descriptor;
  tags: string[];
}

/**
 * petri's image store: an OCI image layout (`$PETRI_ROOT/images` by default)
 * of content-addressed blobs, with tags as `org.opencontainers.image.ref.name`
 * annotations on index.json's entries (one name per entry), so skopeo and
 * umoci read it as `oci:DIR:name:tag`. index.json changes under an
 * inter-process lock; blobs are written without one and kept until a prune
 * finds them unreferenced and older than its grace period.
 */
export class ImageStore extends BlobStore {
  static open(dir: string = join(petriRoot(), 'images')): ImageStore {
    createLayout(dir);
    return new ImageStore(dir);
  }

  /** Writes an image's config and manifest blobs; tag the returned manifest to name it. */
  async writeImage(image: NewImage): Promise<{ manifest: Descriptor; configDigest: string }> {
    for (const layer of image.layers) {
      if (!this.hasBlob(validateDigest(layer.digest, 'layer digest'))) {
        throw new PetriError(`layer ${layer.digest} is not in the image store: write its blob before the image`, {
          code: 'ENOBLOB',
        });
      }
    }
    const config = await this.writeBlob(JSON.stringify(image.config));
    const manifest: ImageManifest = {
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociManifest,
      config: { mediaType: MEDIA_TYPES.ociConfig, digest: config.digest, size: config.size },
      layers: image.layers,
    };
    if (image.annotations) manifest.annotations = image.annotations;
    const written = await this.writeBlob(JSON.stringify(manifest));
    const { architecture, os, variant } = image.config;
    const descriptor: Descriptor = { mediaType: MEDIA_TYPES.ociManifest, digest: written.digest, size: written.size };
    descriptor.platform = variant ? { architecture, os, variant } : { architecture, os };
    return { manifest: descriptor, configDigest: config.digest };
  }

  /**
   * Names a manifest (a descriptor, or an image already in the store) `ref`;
   * a tag that named another image moves. Under the lock it first checks that
   * the manifest, its config and its layers are all in the store, so that a
   * concurrent prune cannot leave a tag pointing at missing blobs: when one
   * is missing, the error says so (code ENOBLOB) and the caller writes the
   * image again.
   */
  async tag(ref: string, manifest: Descriptor | string): Promise<void> {
    const name = tagRef(ref);
    const descriptor = typeof manifest === 'string' ? (await this.#find(manifest)).descriptor : manifest;
    validateDigest(descriptor.digest, 'manifest digest');
    // Already so (a rebuild that changed nothing): no lock, no write.
    if (readIndex(this.dir).manifests.some((e) => refName(e) === name && e.digest === descriptor.digest)) return;
    await withIndexLock(this.dir, async () => {
      await this.#checkComplete(name, descriptor);
      const index = readIndex(this.dir);
      index.manifests = index.manifests.filter((entry) => refName(entry) !== name);
      index.manifests.push(namedEntry(descriptor, name));
      writeIndex(this.dir, index);
    });
  }

  /**
   * Keeps a manifest in the index without a name (an image pulled by digest),
   * unless an unnamed entry for it is there already. Checked like `tag`.
   */
  async record(manifest: Descriptor): Promise<void> {
    validateDigest(manifest.digest, 'manifest digest');
    const present = (entry: Descriptor) => entry.digest === manifest.digest && refName(entry) === undefined;
    if (readIndex(this.dir).manifests.some(present)) return;
    await withIndexLock(this.dir, async () => {
      await this.#checkComplete(manifest.digest, manifest);
      const index = readIndex(this.dir);
      if (index.manifests.some(present)) return;
      const entry: Descriptor = { mediaType: manifest.mediaType, digest: manifest.digest, size: manifest.size };
      if (manifest.platform) entry.platform = manifest.platform;
      if (manifest.annotations) entry.annotations = manifest.annotations;
      index.manifests.push(entry);
      writeIndex(this.dir, index);
    });
  }

  /** Removes tag `ref` (`name[:tag]`); whether it existed. The blobs stay until a prune. */
  async untag(ref: string): Promise<boolean> {
    const name = tagRef(ref);
    return withIndexLock(this.dir, () => {
      const index = readIndex(this.dir);
      const kept = index.manifests.filter((entry) => refName(entry) !== name);
      if (kept.length === index.manifests.length) return false;
      index.manifests = kept;
      writeIndex(this.dir, index);
      return true;
    });
  }

  /**
   * Removes an image from the index: by tag, only that tag; by id or digest,
   * all its tags (refused when it has several, unless `force`, like Docker).
   * Returns the tags removed. The blobs stay until a prune.
   */
  async removeImage(refOrId: string, options: { force?: boolean } = {}): Promise<string[]> {
    const found = await this.#find(refOrId);
    if (found.byTag) return (await this.untag(found.byTag)) ? [found.byTag] : [];
    if (found.tags.length > 1 && !options.force) {
      throw new PetriError(
        `image ${refOrId} has several tags (${found.tags.join(', ')}): remove them one by one, or force the removal`,
        { code: 'ECONFLICT' },
      );
    }
    return withIndexLock(this.dir, () => {
      const index = readIndex(this.dir);
      const removed = index.manifests.filter((entry) => entry.digest === found.descriptor.digest);
      index.manifests = index.manifests.filter((entry) => entry.digest !== found.descriptor.digest);
      writeIndex(this.dir, index);
      return removed.map((entry) => refName(entry)).filter((tag) => tag !== undefined);
    });
  }

  /**
   * An image by `name[:tag]` (default tag latest), `name@sha256:…`, manifest
   * digest, image id (config digest, with or without `sha256:`), or a unique
   * prefix of at least 4 hex digits of the id. Unknown: ENOIMAGE.
   */
  async resolve(refOrId: string): Promise<StoredImage> {
    const found = await this.#find(refOrId);
    return this.#load(found);
  }

  /** Every image in the index, one per manifest with all its tags, in index order. */
  async list(): Promise<StoredImage[]> {
    const images: StoredImage[] = [];
    for (const entry of this.#entries()) {
      if (!isIndexType(entry.descriptor.mediaType)) images.push(await this.#load(entry));
    }
    return images;
  }

  prune(options: PruneOptions = {}): Promise<PruneResult> {
    return pruneBlobs(this, options);
  }

  /** The index's manifests, each once, with the tags that name it. */
  #entries(): Entry[] {
    const byDigest = new Map<string, Entry>();
    for (const descriptor of readIndex(this.dir).manifests) {
      let entry = byDigest.get(descriptor.digest);
      if (!entry) {
        entry = { descriptor, tags: [] };
        byDigest.set(descriptor.digest, entry);
      }
      const tag = refName(descriptor);
      if (tag !== undefined) entry.tags.push(tag);
    }
    return [...byDigest.values()];
  }

  async #find(text: string): Promise<Entry & { byTag?: string }> {
    const entries = this.#entries();
    const fullDigest = /^[a-f0-9]{64}$/.test(text) ? `sha256:${text}` : text;
    if (isDigest(fullDigest)) {
      const byManifest = entries.find((entry) => entry.descriptor.digest === fullDigest);
      if (byManifest) return byManifest;
      for (const entry of entries) if ((await this.#configDigest(entry)) === fullDigest) return entry;
      throw noSuchImage(text);
    }
    let reference: ReturnType<typeof parseReference> | undefined;
    try {
      reference = parseReference(text);
    } catch {
      // not a reference: maybe an id prefix
    }
    if (reference?.digest) {
      const byDigest = entries.find((entry) => entry.descriptor.digest === reference.digest);
      if (byDigest) return byDigest;
      // A pulled image whose manifest was chosen from a multi-platform index with this digest.
      const fromIndex = readIndex(this.dir).manifests.find(
        (d) => d.annotations?.[INDEX_DIGEST_ANNOTATION] === reference.digest,
      );
      const byIndex = fromIndex && entries.find((entry) => entry.descriptor.digest === fromIndex.digest);
      if (byIndex) return byIndex;
    } else if (reference) {
      // `docker.io/library/busybox:1` names what a pull stored as `busybox:1`.
      for (const name of new Set([reference.ref, familiarRef(text) ?? reference.ref])) {
        const byTag = entries.find((entry) => entry.tags.includes(name));
        if (byTag) return { ...byTag, byTag: name };
      }
    }
    const prefix = /^(?:sha256:)?([a-f0-9]{4,63})$/.exec(text)?.[1];
    if (prefix) {
      const matches = new Map<string, Entry>();
      for (const entry of entries) {
        const id = await this.#configDigest(entry);
        if (id?.startsWith(`sha256:${prefix}`) && !matches.has(id)) matches.set(id, entry);
      }
      if (matches.size > 1) {
        throw new PetriError(
          `image id prefix ${text} is ambiguous: it matches ${[...matches.keys()].join(', ')}; give more digits`,
          { code: 'EAMBIGUOUS' },
        );
      }
      const [match] = matches.values();
      if (match) return match;
    }
    throw noSuchImage(text);
  }

  async #configDigest(entry: Entry): Promise<string | undefined> {
    if (isIndexType(entry.descriptor.mediaType)) return undefined;
    return (await this.readJson<Partial<ImageManifest>>(entry.descriptor.digest)).config?.digest;
  }

  async #load(entry: Entry): Promise<StoredImage> {
    const digest = entry.descriptor.digest;
    const manifest = await this.readJson<ImageManifest>(digest);
    if (!manifest.config || !Array.isArray(manifest.layers)) {
      throw new PetriError(
        `image ${entry.tags[0] ?? digest} is a multi-platform index, not an image manifest: petri cannot use it yet`,
        { code: 'EUNSUPPORTED' },
      );
    }
    const config = await this.readJson<ImageConfig>(validateDigest(manifest.config.digest, 'config digest'));
    const size = manifest.layers.reduce((total, layer) => total + layer.size, manifest.config.size);
    return { id: manifest.config.digest, manifestDigest: digest, manifest, config, tags: entry.tags, size };
  }

  /** Under the lock: every blob `manifest` needs is in the store, whole. */
  async #checkComplete(name: string, manifest: Descriptor): Promise<void> {
    let refs: Awaited<ReturnType<typeof referencedBlobs>>;
    try {
      refs = await referencedBlobs(this, manifest);
    } catch (error) {
      const code = error instanceof PetriError ? error.code : 'EBLOB';
      throw new PetriError(`cannot tag ${name}: ${errorLine(error)}`, { code, cause: error });
    }
    for (const { digest, size, role } of refs) {
      let actual: number;
      try {
        actual = statSync(this.blobPath(digest)).size;
      } catch {
        throw new PetriError(
          `cannot tag ${name}: its ${role} ${digest} is not in the image store (pruned, or never written); write the image again and tag it`,
          { code: 'ENOBLOB' },
        );
      }
      if (actual !== size) {
        throw new PetriError(
          `cannot tag ${name}: its ${role} ${digest} is ${actual} bytes in the store but ${size} in the manifest; the image is corrupt: build or import it again`,
          { code: 'EDIGEST' },
        );
      }
    }
  }
}

function noSuchImage(text: string): PetriError {
  return new PetriError(`no such image: ${text}`, { code: 'ENOIMAGE' });
}
