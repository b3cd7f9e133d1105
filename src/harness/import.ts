import { createHash } from 'node:crypto';
import { createReadStream, existsSync, statSync } from 'node:fs';
import { PassThrough, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { PetriError } from '../errors.js';
import { imageArchitecture } from '../image/platform.js';
import { parseReference } from '../image/reference.js';
import type { ImageStore } from '../image/store.js';
import { type ImageConfig, MEDIA_TYPES } from '../image/types.js';
import { writeLayer } from '../snapshot/layer-from-dir.js';
import { isGzipFile } from '../util/fs.js';
import { zlib } from '../util/lazy-builtins.js';
import type { CommitResult } from './commit.js';

/**
 * Makes a one-layer image from a root filesystem directory or a tarball
 * (plain or gzip), like `docker import`.
 */
export async function importRootfs(
  store: ImageStore,
  source: string,
  ref: string,
  options: { message?: string; changes?: string[] } = {},
): Promise<CommitResult> {
  const tag = parseReference(ref).ref;
  if (!existsSync(source)) throw new PetriError(`cannot import ${source}: no such file or directory`);
  let layer: { digest: string; size: number; mediaType: string; diffId: string };
  if (statSync(source).isDirectory()) {
    const stream = new PassThrough();
    const stored = store.writeBlobStream(stream);
    const { diffId } = await writeLayer(source, stream, sourceEpoch());
    const blob = await stored;
    layer = { ...blob, mediaType: MEDIA_TYPES.ociLayer, diffId };
  } else {
    const gzip = isGzipFile(source);
    const blob = await store.writeBlobStream(createReadStream(source));
    const diffId = gzip ? await uncompressedDigest(source) : blob.digest;
    layer = { ...blob, mediaType: gzip ? MEDIA_TYPES.ociLayerGzip : MEDIA_TYPES.ociLayer, diffId };
  }
  const created = new Date().toISOString();
  const config: ImageConfig = {
    created,
    architecture: imageArchitecture(),
    os: 'linux',
    config: {},
    rootfs: { type: 'layers', diff_ids: [layer.diffId] },
    history: [
      { created, created_by: `petri import ${source}`, ...(options.message ? { comment: options.message } : {}) },
    ],
  };
  if (options.changes?.length) {
    const { applyChanges } = await import('../image/changes.js');
    config.config = applyChanges(config.config, options.changes);
  }
  const { manifest, configDigest } = await store.writeImage({
    config,
    layers: [{ mediaType: layer.mediaType, digest: layer.digest, size: layer.size }],
  });
  await store.tag(tag, manifest);
  return { id: configDigest, manifestDigest: manifest.digest, tags: [tag] };
}

function sourceEpoch(): { sourceDateEpoch?: number } {
  return process.env.SOURCE_DATE_EPOCH ? { sourceDateEpoch: Number(process.env.SOURCE_DATE_EPOCH) } : {};
}

async function uncompressedDigest(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(
    createReadStream(file),
    zlib().createGunzip(),
    new Writable({
      write(chunk, _encoding, callback) {
        hash.update(chunk);
        callback();
      },
    }),
  );
  return `sha256:${hash.digest('hex')}`;
}
