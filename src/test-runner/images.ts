import { buildImage } from '../build/builder.js';
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
): Promise<ReadyImage> {
  if (image.kind === 'store') {
    try {
      const found = await store.resolve(image.ref);
      return { name: image.name, ref: image.ref, id: found.id, manifestDigest: found.manifestDigest };
    } catch (error) {
      throw new ImageError(
        `image ${image.name}: ${errorLine(error)} (build it, load it with petri load, or name it with petri tag)`,
      );
    }
  }
  try {
    const built = await buildImage({
      context: image.context,
      ...(image.dockerfile !== undefined ? { dockerfile: image.dockerfile } : {}),
      buildArgs: image.buildArgs,
      ...(image.target !== undefined ? { target: image.target } : {}),
      tags: [builtImageTag(image.name)],
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
