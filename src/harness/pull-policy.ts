import { statSync } from 'node:fs';
import { join } from 'node:path';
import { errorLine, PetriError } from '../errors.js';
import type { PullPolicy as StorePullPolicy } from '../image/pull-policy.js';
import type { ImageStore } from '../image/store.js';
import type { StoredImage } from '../image/types.js';
import type { LayerCache } from '../snapshot/layers.js';

/**
 * When `GenericContainer` pulls its image from its registry: `missing` (the
 * default: only when the store lacks it), `always` (every start: a tag that
 * moved is followed; only the manifest is asked for when nothing changed),
 * `never` (the store only). testcontainers' `PullPolicy.defaultPolicy()` and
 * `PullPolicy.alwaysPull()` (objects with `shouldPull()`) work too.
 */
export type PullPolicyName = StorePullPolicy;

/** testcontainers-node's ImagePullPolicy: true means pull at every start. */
export interface ImagePullPolicy {
  shouldPull(): boolean;
}

/** testcontainers-node's `PullPolicy`: `defaultPolicy()` pulls a missing image, `alwaysPull()` every time. */
export const PullPolicy = {
  defaultPolicy: (): ImagePullPolicy => ({ shouldPull: () => false }),
  alwaysPull: (): ImagePullPolicy => ({ shouldPull: () => true }),
};

export function pullPolicyName(policy: PullPolicyName | ImagePullPolicy): PullPolicyName {
  return typeof policy === 'string' ? policy : policy.shouldPull() ? 'always' : 'missing';
}

/** Pulls in progress in this process, by store and name: containers started at once share one. */
const pulls = new Map<string, Promise<StoredImage>>();

/**
 * The image `name` from the store, pulled from its registry first as the
 * policy says (its layers unpacked into `layers` as they download). An image
 * id is never pulled.
 */
/** Images this process resolved, by store and name, with the state of index.json they were resolved in. */
const resolved = new Map<string, { stamp: string; image: StoredImage }>();

/** index.json's identity and last change: any tag, pull or removal rewrites (renames) it. */
function indexStamp(store: ImageStore): string | undefined {
  try {
    const st = statSync(join(store.dir, 'index.json'), { bigint: true });
    return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
  } catch {
    return undefined;
  }
}

export async function imageFor(
  store: ImageStore,
  name: string,
  policy: PullPolicyName,
  options: { insecureRegistries?: string[]; layers?: LayerCache } = {},
): Promise<StoredImage> {
  const isId = /^(sha256:)?[a-f0-9]{64}$/.test(name);
  let missing: unknown;
  if (policy !== 'always' || isId) {
    // The same name in an unchanged store (index.json as it was): the image found before.
    const stamp = indexStamp(store);
    const memoKey = `${store.dir}\0${name}`;
    const known = resolved.get(memoKey);
    if (known && stamp !== undefined && known.stamp === stamp) return known.image;
    try {
      const image = await store.resolve(name);
      if (stamp !== undefined) resolved.set(memoKey, { stamp, image });
      return image;
    } catch (error) {
      if (!(error instanceof PetriError && error.code === 'ENOIMAGE') || isId) throw error;
      if (policy === 'never') {
        throw new PetriError(
          `image ${name} is not in petri's image store and the pull policy is never: pull it first (petri pull ${name}), build it or load it`,
          { code: 'ENOIMAGE', cause: error },
        );
      }
      missing = error;
    }
  }
  const key = `${store.dir}\0${name}`;
  let pull = pulls.get(key);
  if (!pull) {
    pull = (async () => {
      const { pullImage } = await import('../image/registry/pull.js');
      const pulled = await pullImage(store, name, {
        insecureRegistries: options.insecureRegistries ?? [],
        ...(options.layers ? { layers: options.layers } : {}),
      });
      return pulled.image;
    })();
    pulls.set(key, pull);
    pull.then(
      () => pulls.delete(key),
      () => pulls.delete(key),
    );
  }
  try {
    return await pull;
  } catch (error) {
    const why = missing
      ? `is not in petri's image store and pulling it failed`
      : 'could not be pulled (pull policy always)';
    throw new PetriError(`image ${name} ${why}: ${errorLine(error)}`, {
      code: error instanceof PetriError && error.code ? error.code : 'ENOIMAGE',
      cause: error,
    });
  }
}
