import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { errorLine, PetriError } from '../errors.js';
import type { ImageStore } from '../image/store.js';
import type { StoredImage } from '../image/types.js';
import { Container } from '../runtime/container.js';
import { type ContainerInfo, listContainers, removeContainer } from '../runtime/containers.js';
import type { ContainerOptions } from '../runtime/options.js';
import { petriRoot } from '../runtime/paths.js';
import type { OciSpec } from '../runtime/spec.js';
import type { LayerCache } from '../snapshot/layers.js';
import type { ContainerHandle } from './container-handle.js';
import type { ContainerSpec } from './container-spec.js';
import { DetachedHandle } from './detached-handle.js';
import type { StartedContainer } from './started-container.js';

/** The annotation (a label petri keeps for itself) that holds a reusable container's configuration hash. */
export const REUSE_LABEL = 'org.petri.reuse';

/** A hash of everything the container is started with (the image by id): equal configurations share a container. */
export function reuseHash(spec: ContainerSpec, imageId: string): string {
  const contents = spec.contents.map(({ content, target, mode }) => ({
    target,
    mode,
    content:
      typeof content === 'string' || Buffer.isBuffer(content)
        ? createHash('sha256').update(content).digest('hex')
        : 'stream',
  }));
  return createHash('sha256')
    .update(JSON.stringify({ ...spec, image: imageId, contents }))
    .digest('hex');
}

export interface ReuseContext {
  store: ImageStore;
  layers: LayerCache;
  /** The runtime options of a new container (the image's config applied). */
  options: (extraLabels: Record<string, string>, name: string) => Promise<ContainerOptions>;
  /** Files and /etc/hosts into a container not started yet. */
  prepare: (dir: string, lower: string[]) => Promise<void>;
  /** The API object around a handle. */
  wrap: (handle: ContainerHandle) => StartedContainer;
}

/**
 * `withReuse()`: attaches to the running container started with the same
 * configuration (by any process), or starts one that outlives this process.
 * Processes agree through a lock per configuration hash.
 */
export async function startReused(
  spec: ContainerSpec,
  image: StoredImage,
  context: ReuseContext,
): Promise<StartedContainer> {
  const hash = reuseHash(spec, image.id);
  return withReuseLock(hash, async () => {
    const found = findReusable(hash);
    if (found?.status === 'running') {
      const started = context.wrap(new DetachedHandle(found));
      await started.run(true);
      return started;
    }
    if (found) await removeContainer(found.id, { force: true }).catch(() => {});
    const options = await context.options({ [REUSE_LABEL]: hash }, spec.name ?? `petri-reuse-${hash.slice(0, 12)}`);
    const container = Container.create(options);
    const lower = options.rootfs as string[];
    const handle = new DetachedHandle({
      id: container.id,
      name: container.name,
      dir: container.dir,
      lower,
      cgroupDirs: container.cgroupDirs,
      publish: (options.ports ?? []).map((port) => ({ container: port.container, host: port.host ?? 0 })),
    });
    try {
      await context.prepare(container.dir, lower);
      const started = context.wrap(handle);
      await started.run(true);
      return started;
    } catch (error) {
      await handle.remove().catch(() => {});
      throw error;
    }
  });
}

function findReusable(hash: string): ContainerInfo | undefined {
  const matching = listContainers().filter((info) => {
    try {
      const spec = JSON.parse(readFileSync(join(info.dir, 'config.json'), 'utf8')) as OciSpec;
      return spec.annotations[REUSE_LABEL] === hash;
    } catch {
      return false;
    }
  });
  return matching.find((info) => info.status === 'running') ?? matching[0];
}

async function withReuseLock<T>(hash: string, work: () => Promise<T>): Promise<T> {
  const target = join(petriRoot(), `reuse-${hash.slice(0, 16)}`);
  let release: () => Promise<void>;
  try {
    // proper-lockfile (and the graceful-fs it patches fs with) only for reused containers
    const { lock } = await import('proper-lockfile');
    release = await lock(target, {
      realpath: false,
      stale: 20_000,
      update: 5_000,
      retries: { retries: 1200, minTimeout: 5, maxTimeout: 100, factor: 1.3, randomize: true },
    });
  } catch (error) {
    throw new PetriError(`cannot lock ${target}.lock to start a reused container: ${errorLine(error)}`, {
      code: 'ELOCKED',
      cause: error,
    });
  }
  try {
    return await work();
  } finally {
    await release().catch(() => {});
  }
}
