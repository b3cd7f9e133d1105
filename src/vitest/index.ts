/**
 * `petri/vitest`: petri in a vitest suite.
 *
 * - `petriGlobalSetup({ images })`, as the default export of a `globalSetup`
 *   file: builds (or looks up) the images the suite needs once, before any
 *   worker starts, and hands their ids to the workers (`provide`/`inject`).
 * - `petriTest`: vitest's `test` with a `petri` fixture (`petri.start(name)`
 *   starts a container from one of those images; whatever a test started is
 *   removed when it ends), and `containerTest(name, configure)`: a `test`
 *   whose `container` fixture is a container of its own per test.
 *
 * Workers need no coordination: images are built once in the main process,
 * containers get unnamed ids and kernel-picked host ports, and each worker
 * removes its own containers (also when it is killed: see the API's cleanup).
 */
import { resolve } from 'node:path';
import { inject, test } from 'vitest';
import { PetriError } from '../errors.js';
import { GenericContainer } from '../harness/generic-container.js';
import type { StartedContainer } from '../harness/started-container.js';
import { ImageStore } from '../image/store.js';
import { LayerCache } from '../snapshot/layers.js';

/** An image the suite needs: built from a Dockerfile, or one already in the store. */
export type PetriImage =
  | {
      /** The build context (relative to the project's root). */
      context: string;
      /** Relative to the context (default `Dockerfile`). */
      dockerfile?: string;
      buildArgs?: Record<string, string>;
      target?: string;
      /** Tag it so (default: `petri-vitest/<name>:latest`). */
      tag?: string;
      /** Use the build cache (default true). */
      cache?: boolean;
    }
  | {
      /** A name or id in the store (`petri images`): built, loaded or tagged before. */
      image: string;
    };

export interface PetriGlobalSetupOptions {
  /** Name → image; tests ask for images by these names. */
  images: Record<string, PetriImage>;
  /** The image store directory (default `$PETRI_ROOT/images`), and where layers are unpacked (default `$PETRI_ROOT/layers`). */
  store?: string;
  layers?: string;
  /** What relative build contexts are relative to (default: vitest's project root, else the working directory). */
  root?: string;
}

/** What the global setup hands to the workers. */
export interface PetriProvided {
  /** Name → image id (what was built or found, even if a tag moves meanwhile). */
  images: Record<string, string>;
  store?: string;
  layers?: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    petri: PetriProvided;
  }
}

/** What vitest passes a global setup function (its TestProject), as far as petri uses it. */
interface GlobalSetupProject {
  provide(key: 'petri', value: PetriProvided): void;
  config?: { root?: string };
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/**
 * A vitest global setup: builds the images (at once, each with the build
 * cache) and provides their ids. Use it as the default export of the file
 * that `test.globalSetup` names:
 *
 * ```ts
 * export default petriGlobalSetup({ images: { web: { context: 'docker/web' } } });
 * ```
 */
export function petriGlobalSetup(options: PetriGlobalSetupOptions): (project: GlobalSetupProject) => Promise<void> {
  const images = options?.images;
  if (typeof images !== 'object' || images === null || Array.isArray(images)) {
    throw new PetriError('petriGlobalSetup: images must be an object of names to { context } or { image }', {
      code: 'EINVAL',
    });
  }
  for (const [name, image] of Object.entries(images)) {
    if (!NAME.test(name)) {
      throw new PetriError(`petriGlobalSetup: invalid image name "${name}": use letters, digits, _ . and -`, {
        code: 'EINVAL',
      });
    }
    const ok =
      typeof image === 'object' &&
      image !== null &&
      (('context' in image && typeof image.context === 'string') ||
        ('image' in image && typeof image.image === 'string'));
    if (!ok) {
      throw new PetriError(
        `petriGlobalSetup: images.${name}: expected { context, dockerfile?, buildArgs?, target? } or { image }`,
        { code: 'EINVAL' },
      );
    }
  }
  return async (project) => {
    const root = options.root ?? project?.config?.root ?? process.cwd();
    const store = options.store ? ImageStore.open(resolve(root, options.store)) : ImageStore.open();
    const layers = options.layers ? new LayerCache(resolve(root, options.layers)) : new LayerCache();
    const entries = await Promise.all(
      Object.entries(images).map(async ([name, image]) => {
        if ('image' in image) {
          try {
            return [name, (await store.resolve(image.image)).id] as const;
          } catch (error) {
            throw new PetriError(`petriGlobalSetup: images.${name}: ${(error as Error).message}`, { cause: error });
          }
        }
        let builder = GenericContainer.fromDockerfile(resolve(root, image.context), image.dockerfile)
          .withImageStore(store, layers)
          .withCache(image.cache ?? true);
        if (image.buildArgs) builder = builder.withBuildArgs(image.buildArgs);
        if (image.target) builder = builder.withTarget(image.target);
        try {
          await builder.build(image.tag ?? `petri-vitest/${name.toLowerCase()}:latest`);
          return [name, (await store.resolve(image.tag ?? `petri-vitest/${name.toLowerCase()}:latest`)).id] as const;
        } catch (error) {
          throw new PetriError(`petriGlobalSetup: cannot build image "${name}": ${(error as Error).message}`, {
            cause: error,
          });
        }
      }),
    );
    project.provide('petri', {
      images: Object.fromEntries(entries),
      ...(options.store ? { store: store.dir } : {}),
      ...(options.layers ? { layers: layers.dir } : {}),
    });
  };
}

function provided(): PetriProvided | undefined {
  try {
    return inject('petri');
  } catch {
    return undefined;
  }
}

let storeCache: { key: string; store: ImageStore; layers: LayerCache } | undefined;

function storeAndLayers(from: PetriProvided | undefined): { store: ImageStore; layers: LayerCache } {
  const key = `${from?.store ?? ''}\0${from?.layers ?? ''}`;
  if (storeCache?.key !== key) {
    storeCache = {
      key,
      store: from?.store ? ImageStore.open(from.store) : ImageStore.open(),
      layers: from?.layers ? new LayerCache(from.layers) : new LayerCache(),
    };
  }
  return storeCache;
}

/** The id of an image the global setup prepared (by its name there). */
export function petriImage(name: string): string {
  const from = provided();
  const id = from?.images[name];
  if (id !== undefined) return id;
  const known = Object.keys(from?.images ?? {});
  throw new PetriError(
    from
      ? `petri/vitest: no image "${name}": the global setup prepared ${known.length ? known.join(', ') : 'none'}`
      : `petri/vitest: no image "${name}": petriGlobalSetup is not in this project's test.globalSetup`,
    { code: 'ENOIMAGE' },
  );
}

/**
 * A GenericContainer of the image the global setup prepared under `image`, or
 * else of `image` as a reference in the store (the global setup's store, if it named one).
 */
export function petriContainer(image: string): GenericContainer {
  const from = provided();
  const id = from?.images[image];
  return new GenericContainer(id ?? image, storeAndLayers(from));
}

/** The `petri` fixture: starts containers that are removed when the test ends. */
export interface PetriFixture {
  /** The id of an image the global setup prepared. */
  image(name: string): string;
  /** A container to configure (not started, not removed for you). */
  container(image: string): GenericContainer;
  /**
   * Starts a container (of a prepared image, by name or reference, configured
   * by `configure`; or a GenericContainer as is) and removes it after the test.
   */
  start(
    image: string | GenericContainer,
    configure?: (container: GenericContainer) => GenericContainer,
  ): Promise<StartedContainer>;
}

function petriFixtures() {
  return test.extend<{ petri: PetriFixture }>({
    // biome-ignore lint/correctness/noEmptyPattern: vitest reads a fixture's dependencies from this pattern
    petri: async ({}, use) => {
      const started: StartedContainer[] = [];
      const fixture: PetriFixture = {
        image: petriImage,
        container: petriContainer,
        async start(image, configure) {
          let container = typeof image === 'string' ? petriContainer(image) : image;
          if (configure) container = configure(container);
          const running = await container.start();
          started.push(running);
          return running;
        },
      };
      let failure: { reason: unknown } | undefined;
      try {
        await use(fixture);
      } catch (error) {
        failure = { reason: error };
      }
      const results = await Promise.allSettled(started.map((c) => c.stop({ remove: true })));
      failure ??= results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failure) throw failure.reason;
    },
  });
}

type PetriTestAPI = ReturnType<typeof petriFixtures>;

let fixtures: PetriTestAPI | undefined;

function fixturesNow(): PetriTestAPI {
  fixtures ??= petriFixtures();
  return fixtures;
}

/**
 * vitest's `test` with the `petri` fixture. Made on first use: `test.extend`
 * needs a test file's context, and the global setup imports this module too.
 */
export const petriTest: PetriTestAPI = new Proxy((() => {}) as unknown as PetriTestAPI, {
  apply: (_target, thisArg, args) => Reflect.apply(fixturesNow() as never, thisArg, args),
  get: (_target, key) => Reflect.get(fixturesNow() as object, key),
  has: (_target, key) => Reflect.has(fixturesNow() as object, key),
});

/**
 * A `test` whose `container` fixture is a container of its own: started
 * (from the image the global setup prepared as `image`, configured by
 * `configure`) before the test, removed after it.
 *
 * ```ts
 * const test = containerTest('web', (c) => c.withExposedPorts(8080));
 * test('answers', async ({ container }) => { … container.getMappedPort(8080) … });
 * ```
 */
export function containerTest(image: string, configure?: (container: GenericContainer) => GenericContainer) {
  if (typeof image !== 'string' || image === '') {
    throw new PetriError(`containerTest: invalid image ${JSON.stringify(image)}: expected a name or reference`, {
      code: 'EINVAL',
    });
  }
  return petriTest.extend<{ container: StartedContainer }>({
    container: async ({ petri }, use) => {
      await use(await petri.start(image, configure));
    },
  });
}
