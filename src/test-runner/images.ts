import type { BuildEvent } from '../build/events.js';
import { errorLine } from '../errors.js';
import type { ImageStore } from '../image/store.js';
import type { LayerCache } from '../snapshot/layers.js';
import type { TestImage } from './config-validate.js';
import type { ReadyImage } from './events.js';

/** Thrown (and reported for every job on the image) when an image cannot be had. */
export class ImageError extends Error {
  override name = 'ImageError';
}

import type { PullPolicy } from '../image/pull-policy.js';

export { PULL_POLICIES, type PullPolicy } from '../image/pull-policy.js';

export interface RegistryAccess {
  pull?: PullPolicy;
  /** Registries reached over plain HTTP or with any TLS certificate (`--insecure-registry`). */
  insecureRegistries?: string[];
}

/** The name a config's image is built as (the store only finds tagged images). */
export function builtImageTag(name: string): string {
  return `petri-test/${name}:latest`;
}

/**
 * Makes an image ready to run: builds it from its Dockerfile (cached, like
 * `petri build`), or finds it in the store.
 */
export async function prepareImage(
  image: TestImage,
  store: ImageStore,
  layers: LayerCache,
  onEvent: (event: BuildEvent) => void,
  registry: RegistryAccess = {},
): Promise<ReadyImage> {
  const policy = registry.pull ?? 'missing';
  if (image.kind === 'store') {
    let missing: unknown;
    if (policy !== 'always') {
      try {
        const found = await store.resolve(image.ref);
        return { name: image.name, ref: image.ref, id: found.id, manifestDigest: found.manifestDigest };
      } catch (error) {
        missing = error;
      }
    }
    if (policy === 'never') {
      throw new ImageError(
        `image ${image.name}: ${errorLine(missing)} (build it, load it with petri load, name it with petri tag, or let petri test pull it: --pull missing)`,
      );
    }
    try {
      const { pullImage } = await import('../image/registry/pull.js');
      const pulled = await pullImage(store, image.ref, {
        insecureRegistries: registry.insecureRegistries ?? [],
        layers,
      });
      // The store's name for it (`busybox:latest`), or its id when pulled by digest (then it has no name).
      const ref = pulled.tag ?? pulled.image.id;
      return { name: image.name, ref, id: pulled.image.id, manifestDigest: pulled.image.manifestDigest };
    } catch (error) {
      const why = missing ? `${errorLine(missing)}, and pulling it failed` : `pulling ${image.ref} failed`;
      throw new ImageError(
        `image ${image.name}: ${why}: ${errorLine(error)} (build it, load it with petri load, or name it with petri tag)`,
      );
    }
  }
  try {
    // Loaded when an image is built: a run whose images are all there starts without the builder.
    const { buildImage } = await import('../build/builder.js');
    const built = await buildImage({
      context: image.context,
      ...(image.dockerfile !== undefined ? { dockerfile: image.dockerfile } : {}),
      buildArgs: image.buildArgs,
      ...(image.target !== undefined ? { target: image.target } : {}),
      tags: [builtImageTag(image.name)],
      pull: policy,
      insecureRegistries: registry.insecureRegistries ?? [],
      store,
      layers,
      onEvent,
    });
    // By digest: the tag may move (another run of another project) while this one runs.
    const ref = `${builtImageTag(image.name).replace(/:latest$/, '')}@${built.manifestDigest}`;
    return { name: image.name, ref, id: built.id, manifestDigest: built.manifestDigest };
  } catch (error) {
    throw new ImageError(`image ${image.name} did not build: ${errorLine(error)}`);
  }
}
