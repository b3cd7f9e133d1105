import { createHash } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { ImageStore } from '../image/store.js';
import { LayerCache } from '../snapshot/layers.js';
import { GenericContainer, type GenericContainerOptions } from './generic-container.js';
import * as check from './validate.js';

/**
 * `GenericContainer.fromDockerfile(context, dockerfile)`: builds an image with
 * petri's builder (cached in the store, where it stays: that is the point)
 * and gives a GenericContainer of it.
 */
export class GenericContainerBuilder {
  readonly #context: string;
  readonly #dockerfile: string;
  #buildArgs: Record<string, string> = {};
  #target: string | undefined;
  #cache = true;
  #options: GenericContainerOptions = {};

  constructor(context: string, dockerfile = 'Dockerfile') {
    if (typeof context !== 'string' || !existsSync(context) || !statSync(context).isDirectory()) {
      throw check.invalid('fromDockerfile', 'build context', context, 'an existing directory');
    }
    if (typeof dockerfile !== 'string' || dockerfile === '') {
      throw check.invalid('fromDockerfile', 'Dockerfile', dockerfile, 'a file name, like "Dockerfile"');
    }
    this.#context = resolve(context);
    this.#dockerfile = isAbsolute(dockerfile) ? dockerfile : join(this.#context, dockerfile);
    if (!existsSync(this.#dockerfile)) {
      throw check.invalid('fromDockerfile', 'Dockerfile', this.#dockerfile, 'an existing file');
    }
  }

  withBuildArgs(buildArgs: Record<string, string>): this {
    Object.assign(this.#buildArgs, check.environment('withBuildArgs', buildArgs));
    return this;
  }

  /** Builds up to this stage. */
  withTarget(target: string): this {
    if (typeof target !== 'string' || !/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(target)) {
      throw check.invalid('withTarget', 'stage', target, 'a stage name, like "build"');
    }
    this.#target = target;
    return this;
  }

  /** Whether the build may use cached steps (default true). */
  withCache(cache: boolean): this {
    if (typeof cache !== 'boolean') throw check.invalid('withCache', 'value', cache, 'true or false');
    this.#cache = cache;
    return this;
  }

  /**
   * The store and layer cache the image is built into (and the container
   * started from); the build cache is then `build-cache` beside the store.
   */
  withImageStore(store: ImageStore, layers?: LayerCache): this {
    this.#options = { store, ...(layers ? { layers } : {}) };
    return this;
  }

  /**
   * Builds the image and returns a GenericContainer of it. The image is tagged
   * `tag`, else `petri-build/<hash of the context, Dockerfile and target>`.
   */
  async build(tag?: string): Promise<GenericContainer> {
    if (tag !== undefined && (typeof tag !== 'string' || tag === '')) {
      throw check.invalid('build', 'tag', tag, 'an image name like "my-app:test"');
    }
    // Not a static import: the builder is large, and loaded only by those who build.
    const builder = await import('../build/index.js');
    const store = this.#options.store ?? ImageStore.open();
    const layers = this.#options.layers ?? new LayerCache();
    // Untagged, an image could not be found again: the same context, Dockerfile and target get the same name.
    const key = createHash('sha256')
      .update(`${this.#context}\0${this.#dockerfile}\0${this.#target ?? ''}`)
      .digest('hex');
    const result = await builder.buildImage({
      context: this.#context,
      dockerfile: this.#dockerfile,
      tags: [tag ?? `petri-build/${key.slice(0, 16)}:latest`],
      buildArgs: this.#buildArgs,
      ...(this.#target ? { target: this.#target } : {}),
      noCache: !this.#cache,
      store,
      layers,
      ...(this.#options.store ? { cache: new builder.BuildCache(join(dirname(store.dir), 'build-cache')) } : {}),
    });
    return new GenericContainer(result.tags[0] ?? result.id, { store, layers });
  }
}
