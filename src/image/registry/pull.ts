import { utimes } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import pLimit from 'p-limit';
import { errorLine, PetriError } from '../../errors.js';
import type { LayerCache } from '../../snapshot/layers.js';
import { withBlobLock } from '../lock.js';
import type { ImageStore } from '../store.js';
import {
  type Descriptor,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  INDEX_DIGEST_ANNOTATION,
  type StoredImage,
} from '../types.js';
import { downloadBlob } from './blob-download.js';
import { RegistryClient, type RegistryOptions } from './client.js';
import { fetchManifest, isForeignLayer, type RawManifest } from './manifest.js';
import { canonicalString, normalizeReference, type RemoteReference, storeTag } from './name.js';
import {
  formatPlatform,
  hostPlatform,
  normalizePlatform,
  offeredPlatforms,
  type Platform,
  platformMatches,
  selectManifest,
} from './platform.js';

export interface PullOptions extends RegistryOptions {
  /** The platform to pull from a multi-platform image (default: this machine's). */
  platform?: Platform;
  /** Layers downloaded at once (default 4). */
  concurrency?: number;
  onProgress?: (event: PullEvent) => void;
  /** A client to reuse (its tokens and connection), for the registry of the reference. */
  client?: RegistryClient;
  /**
   * Only the manifest and config: no layer is downloaded and nothing is named
   * in the store; the result's image lives in memory (for a build whose steps
   * may all be cached, which fetches layers only when it needs them).
   */
  metadataOnly?: boolean;
  /**
   * Unpack each layer into this cache while it downloads (a layer the store
   * has already is unpacked from it when the cache lacks it), so that the
   * image is ready to run when the pull returns, as after `docker pull`.
   * Without it, layers are unpacked at first use. Not with `metadataOnly`.
   */
  layers?: LayerCache;
}

export type PullEvent =
  | { type: 'resolved'; reference: string; digest: string; platform?: string; index?: string }
  | { type: 'blob'; role: 'config' | 'layer'; digest: string; size: number; status: 'exists' | 'done' }
  | { type: 'retry'; digest: string; reason: string }
  /** Another process (or pull) is downloading this blob: this one waits for it. */
  | { type: 'wait'; digest: string }
  | { type: 'warning'; message: string };

export interface PullResult {
  image: StoredImage;
  /** `docker.io/library/busybox:latest` */
  reference: string;
  /** The store's name for it (`busybox:latest`); undefined for a pull by digest. */
  tag?: string;
  /** Blobs and bytes downloaded (0 when everything was in the store). */
  downloaded: { blobs: number; bytes: number };
  /** Where the layers come from: the client and repository (for `metadataOnly`). */
  source: { client: RegistryClient; repository: string };
}

/**
 * Pulls an image from its registry into the store: the manifest (for an
 * image index, the one for the wanted platform), its config and its layers,
 * each verified against its digest while it streams (and, with `layers`,
 * unpacked as it streams). Blobs the store has are not downloaded again, and
 * each blob is downloaded under a lock in the store, so that two processes
 * pulling the same image at once download it once. The image is tagged with
 * its familiar name (`busybox:latest`), or, pulled by digest, kept without a
 * name.
 */
export async function pullImage(store: ImageStore, text: string, options: PullOptions = {}): Promise<PullResult> {
  const ref = normalizeReference(text);
  const reference = canonicalString(ref);
  const client = options.client ?? new RegistryClient(ref.registry, options);
  const emit = options.onProgress ?? (() => {});
  try {
    return await pull(store, ref, reference, client, options, emit);
  } catch (error) {
    if (!(error instanceof PetriError)) throw error;
    if (error.code === 'EAUTH') {
      throw new PetriError(
        `pull access denied for ${reference}: the repository does not exist or needs credentials (${error.message})`,
        { code: error.code, cause: error },
      );
    }
    throw error;
  }
}

async function pull(
  store: ImageStore,
  ref: RemoteReference,
  reference: string,
  client: RegistryClient,
  options: PullOptions,
  emit: (event: PullEvent) => void,
): Promise<PullResult> {
  const repository = ref.repository;
  const wanted = normalizePlatform(options.platform ?? hostPlatform());
  const downloaded = { blobs: 0, bytes: 0 };
  const stored: RawManifest[] = [];

  let top = await fetchManifest(client, store, repository, ref.digest ?? (ref.tag as string));
  stored.push(top);
  let indexDigest: string | undefined;
  if (top.kind === 'index') {
    const index = JSON.parse(top.raw.toString('utf8')) as ImageIndex;
    const pick = selectManifest(index.manifests, wanted);
    if (!pick) {
      const offered = offeredPlatforms(index.manifests);
      throw new PetriError(
        `${reference} has no image for ${formatPlatform(wanted)}${offered.length ? `: it offers ${offered.join(', ')}` : ''}; choose one with --platform`,
        { code: 'EPLATFORM' },
      );
    }
    indexDigest = top.digest;
    top = await fetchManifest(client, store, repository, pick.digest);
    if (top.kind !== 'manifest') {
      throw new PetriError(
        `${reference}: its index for ${formatPlatform(wanted)} names another index, which petri does not follow`,
        {
          code: 'EUNSUPPORTED',
        },
      );
    }
    stored.push(top);
  }
  const manifest = JSON.parse(top.raw.toString('utf8')) as ImageManifest;
  emit({
    type: 'resolved',
    reference,
    digest: top.digest,
    ...(indexDigest ? { index: indexDigest, platform: formatPlatform(wanted) } : {}),
  });
  const foreign = manifest.layers.find(isForeignLayer);
  if (foreign) {
    throw new PetriError(
      `${reference} has a non-distributable (foreign) layer ${foreign.digest} (${foreign.mediaType}), which registries do not serve — a Windows base layer: petri runs Linux images only`,
      { code: 'EUNSUPPORTED' },
    );
  }

  // Each blob under its lock: another process pulling it now finishes first, and then it is here.
  const fetch = (blob: Descriptor, role: 'config' | 'layer', unpack?: Unpack) =>
    withBlobLock(
      store.dir,
      blob.digest,
      async () => {
        if (store.hasBlob(blob.digest)) {
          // Refreshed, so that a prune running now keeps it until the image is tagged.
          const now = new Date();
          await utimes(store.blobPath(blob.digest), now, now).catch(() => {});
          if (unpack && !unpack.cache.stackPath(unpack.diffIds)) {
            await unpack.cache.unpackStream(
              blob,
              unpack.diffIds,
              store.openBlob(blob.digest, blob.size),
              Promise.resolve(),
            );
          }
          emit({ type: 'blob', role, digest: blob.digest, size: blob.size, status: 'exists' });
          return;
        }
        const tee =
          unpack &&
          ((stream: Readable, verified: Promise<void>) =>
            unpack.cache.unpackStream(blob, unpack.diffIds, stream, verified));
        await downloadBlob(
          client,
          store,
          repository,
          blob,
          (reason) => emit({ type: 'retry', digest: blob.digest, reason }),
          tee,
        );
        downloaded.blobs++;
        downloaded.bytes += blob.size;
        emit({ type: 'blob', role, digest: blob.digest, size: blob.size, status: 'done' });
      },
      () => emit({ type: 'wait', digest: blob.digest }),
    );

  await fetch(manifest.config, 'config');
  const config = await store.readJson<ImageConfig>(manifest.config.digest);
  checkConfig(config, manifest, reference, wanted, options.platform !== undefined || indexDigest !== undefined, emit);
  if (options.metadataOnly) {
    const size = manifest.config.size + manifest.layers.reduce((total, layer) => total + layer.size, 0);
    const image: StoredImage = {
      id: manifest.config.digest,
      manifestDigest: top.digest,
      manifest,
      config,
      tags: [],
      size,
    };
    return { image, reference, downloaded, source: { client, repository } };
  }
  const limit = pLimit(options.concurrency ?? 4);
  const cache = options.layers;
  const diffIds = config.rootfs.diff_ids;
  const jobs = manifest.layers.map((layer, i) =>
    limit(() => fetch(layer, 'layer', cache ? { cache, diffIds: diffIds.slice(0, i + 1) } : undefined)),
  );
  const results = await Promise.allSettled(jobs);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;

  for (const document of stored) if (!document.local) await store.writeBlob(document.raw, document.digest);
  const descriptor: Descriptor = { mediaType: top.mediaType, digest: top.digest, size: top.raw.length };
  descriptor.platform = {
    architecture: config.architecture,
    os: config.os,
    ...(config.variant ? { variant: config.variant } : {}),
  };
  if (indexDigest) descriptor.annotations = { [INDEX_DIGEST_ANNOTATION]: indexDigest };
  const tag = storeTag(ref);
  try {
    if (tag) await store.tag(tag, descriptor);
    else await store.record(descriptor);
  } catch (error) {
    throw new PetriError(`pulled ${reference} but cannot name it in the store: ${errorLine(error)}`, { cause: error });
  }
  const image = await store.resolve(top.digest);
  return { image, reference, ...(tag ? { tag } : {}), downloaded, source: { client, repository } };
}

/** Where a layer is unpacked as it downloads: the cache, and the diffIDs of the layer and those below it. */
interface Unpack {
  cache: LayerCache;
  diffIds: readonly string[];
}

function checkConfig(
  config: ImageConfig,
  manifest: ImageManifest,
  reference: string,
  wanted: Platform,
  strict: boolean,
  emit: (event: PullEvent) => void,
): void {
  if (!config || typeof config !== 'object' || !config.rootfs || !Array.isArray(config.rootfs.diff_ids)) {
    throw new PetriError(
      `${reference}: its config ${manifest.config.digest} is not an image config (no rootfs.diff_ids)`,
      {
        code: 'EUNSUPPORTED',
      },
    );
  }
  if (config.rootfs.diff_ids.length !== manifest.layers.length) {
    throw new PetriError(
      `${reference}: its manifest has ${manifest.layers.length} layers but its config ${config.rootfs.diff_ids.length}: the image is broken`,
      { code: 'EUNSUPPORTED' },
    );
  }
  if (config.os && config.os !== 'linux') {
    throw new PetriError(`${reference} is a ${config.os} image: petri runs Linux images only`, { code: 'EPLATFORM' });
  }
  const actual: Platform = {
    os: config.os ?? 'linux',
    architecture: config.architecture,
    ...(config.variant ? { variant: config.variant } : {}),
  };
  if (!platformMatches(actual, wanted)) {
    const message = `${reference} is for ${formatPlatform(normalizePlatform(actual))}, not ${formatPlatform(wanted)}`;
    if (strict && normalizePlatform(actual).architecture !== wanted.architecture) {
      throw new PetriError(message, { code: 'EPLATFORM' });
    }
    emit({ type: 'warning', message });
  }
}
