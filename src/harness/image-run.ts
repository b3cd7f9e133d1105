import { lstatSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { imageCommand, imageEnv, type RunOverrides, resolveUser } from '../image/apply-config.js';
import type { ImageStore } from '../image/store.js';
import type { StoredImage } from '../image/types.js';
import type { ContainerOptions } from '../runtime/options.js';
import type { LayerCache } from '../snapshot/layers.js';

/** Unpacks (once) an image's layers and returns them top first, as a container's read-only lower dirs. */
export async function imageLayers(store: ImageStore, cache: LayerCache, image: StoredImage): Promise<string[]> {
  const diffIds = image.config.rootfs.diff_ids;
  return cache.prepare(
    image.manifest.layers.map((layer, i) => ({
      digest: layer.digest,
      mediaType: layer.mediaType,
      diffId: diffIds[i] as string,
      open: () => store.openBlob(layer.digest),
    })),
  );
}

/**
 * The options of a container started from `ref`, like `docker run IMAGE`: the
 * image's layers below, its Entrypoint/Cmd, Env, WorkingDir and User applied
 * (names resolved from the image's /etc/passwd and /etc/group), then the caller's.
 */
export async function imageContainerOptions(
  store: ImageStore,
  cache: LayerCache,
  ref: string,
  overrides: RunOverrides & Omit<Partial<ContainerOptions>, 'env' | 'user' | 'command'>,
  /** `ref` resolved already (by the caller, from the same store): not looked up again. */
  stored?: StoredImage,
): Promise<ContainerOptions> {
  const image = stored ?? (await store.resolve(ref));
  const lower = await imageLayers(store, cache, image);
  const config = image.config.config ?? {};
  const { command, entrypoint, env, user, workdir, ...rest } = overrides;
  const resolved = resolveUser(user ?? (config.User || undefined), (path) => readFromLayersCached(lower, path));
  const fullEnv = imageEnv(config, env);
  if (resolved.home && fullEnv.HOME === undefined) fullEnv.HOME = resolved.home;
  return {
    ...rest,
    rootfs: lower,
    command: imageCommand(config, { command, entrypoint }, ref),
    env: fullEnv,
    workdir: workdir ?? (config.WorkingDir || '/'),
    user: { uid: resolved.uid, gid: resolved.gid, additionalGids: resolved.additionalGids },
    image: { ref, id: image.id },
  };
}

/** What `readFromLayersCached` read, by layer stack and path (unpacked layers never change). */
const layerReads = new Map<string, string | undefined>();

/**
 * `readFromLayers` for the user and group files every start reads, once per
 * image's layers in this process (a few lstat and reads saved on each start).
 */
function readFromLayersCached(lower: string[], path: string): string | undefined {
  const key = `${lower.join('\0')}\0${path}`;
  if (layerReads.has(key)) return layerReads.get(key);
  const text = readFromLayers(lower, path);
  if (layerReads.size >= 256) layerReads.clear();
  layerReads.set(key, text);
  return text;
}

/** Reads a file as the container would see it at start: the topmost layer that has it, unless whited out. */
export function readFromLayers(lower: string[], path: string): string | undefined {
  for (const dir of lower) {
    const full = join(dir, path);
    try {
      const stat = lstatSync(full);
      if (stat.isCharacterDevice() && stat.rdev === 0) return undefined; // an overlay whiteout
      if (stat.isFile()) return readFileSync(full, 'utf8');
      return undefined;
    } catch {
      // not in this layer
    }
  }
  return undefined;
}
