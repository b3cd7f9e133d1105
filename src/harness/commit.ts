import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { PetriError } from '../errors.js';
import { applyChanges } from '../image/changes.js';
import { imageArchitecture } from '../image/platform.js';
import { parseReference } from '../image/reference.js';
import type { ImageStore } from '../image/store.js';
import { type ContainerConfig, type ImageConfig, MEDIA_TYPES, type StoredImage } from '../image/types.js';
import { findContainer } from '../runtime/containers.js';
import type { OciSpec } from '../runtime/spec.js';
import { writeLayer } from '../snapshot/layer-from-dir.js';

export interface CommitOptions {
  /** `name[:tag]` to tag the new image with. */
  ref?: string;
  message?: string;
  author?: string;
  /** Dockerfile instructions applied to the config, like `docker commit --change`. */
  changes?: string[];
  /** Labels added to the config. */
  labels?: Record<string, string>;
}

export interface CommitResult {
  id: string;
  manifestDigest: string;
  tags: string[];
}

/**
 * Turns a container's writable layer into a new image on top of the one it
 * ran (overlay whiteouts become OCI whiteouts), with a config merged from the
 * image and the container and a history entry, like `docker commit`. Works on
 * running and exited containers. Set SOURCE_DATE_EPOCH for reproducible layers.
 */
export async function commitContainer(
  store: ImageStore,
  ref: string,
  options: CommitOptions = {},
): Promise<CommitResult> {
  const container = findContainer(ref);
  const spec = JSON.parse(readFileSync(join(container.dir, 'config.json'), 'utf8')) as OciSpec;
  const upper = spec.annotations['org.petri.rootfs.upper'];
  if (!upper) {
    throw new PetriError(
      `cannot commit container ${container.name}: it runs on its root directory in place, without a layer of its own`,
    );
  }
  const base = container.imageId ? await store.resolve(container.imageId) : undefined;
  const tag = options.ref ? parseReference(options.ref).ref : undefined;

  const epoch = process.env.SOURCE_DATE_EPOCH ? Number(process.env.SOURCE_DATE_EPOCH) : undefined;
  const stream = new PassThrough();
  const stored = store.writeBlobStream(stream);
  const { diffId } = await writeLayer(upper, stream, epoch === undefined ? {} : { sourceDateEpoch: epoch });
  const blob = await stored;

  const created = new Date(epoch === undefined ? Date.now() : epoch * 1000).toISOString();
  const config: ImageConfig = {
    created,
    ...(options.author ? { author: options.author } : {}),
    architecture: base?.config.architecture ?? imageArchitecture(),
    os: 'linux',
    config: applyChanges(mergedConfig(base, spec, container.command, options.labels), options.changes ?? []),
    rootfs: { type: 'layers', diff_ids: [...(base?.config.rootfs.diff_ids ?? []), diffId] },
    history: [
      ...(base?.config.history ?? []),
      {
        created,
        created_by: container.command.join(' '),
        ...(options.author ? { author: options.author } : {}),
        ...(options.message ? { comment: options.message } : {}),
      },
    ],
  };
  const layers = [
    ...(base?.manifest.layers ?? []),
    { mediaType: MEDIA_TYPES.ociLayer, digest: blob.digest, size: blob.size },
  ];
  const { manifest, configDigest } = await store.writeImage({ config, layers });
  if (tag) await store.tag(tag, manifest);
  return { id: configDigest, manifestDigest: manifest.digest, tags: tag ? [tag] : [] };
}

/** The container's own settings over the image's: Env, Cmd, WorkingDir, User, Labels. */
function mergedConfig(
  base: StoredImage | undefined,
  spec: OciSpec,
  command: string[],
  labels: Record<string, string> = {},
): ContainerConfig {
  const from = base?.config.config ?? {};
  const entrypoint = from.Entrypoint ?? [];
  const keepsEntrypoint = entrypoint.length > 0 && entrypoint.every((arg, i) => command[i] === arg);
  const { uid, gid } = spec.process.user;
  const env = spec.process.env.filter((entry) => !entry.startsWith('HOSTNAME='));
  return {
    ...from,
    Env: env,
    Entrypoint: keepsEntrypoint ? entrypoint : null,
    Cmd: keepsEntrypoint ? command.slice(entrypoint.length) : command,
    WorkingDir: spec.process.cwd,
    ...(from.User || uid !== 0 ? { User: from.User && !/^\d/.test(from.User) ? from.User : `${uid}:${gid}` } : {}),
    Labels: { ...from.Labels, ...labels },
  };
}
