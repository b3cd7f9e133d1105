import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { importRootfs } from '../../src/harness/import.js';
import { ImageStore } from '../../src/image/store.js';
import { LayerCache } from '../../src/snapshot/layers.js';
import { busyboxRootfs } from './rootfs.js';

/** A temporary image store with the busybox test rootfs (and the probe) as `ptest/api:1`, and one with a HEALTHCHECK. */
export interface ApiImages {
  dir: string;
  store: ImageStore;
  layers: LayerCache;
  /** `ptest/api:1`: Cmd sleep 1000, Env FROM_IMAGE=1. */
  image: string;
  /** `ptest/api-health:1`: the same with HEALTHCHECK CMD test -f /tmp/healthy (interval 100 ms, 2 retries). */
  healthImage: string;
  remove(): void;
}

export async function apiImages(): Promise<ApiImages> {
  const dir = mkdtempSync(join(tmpdir(), 'ptest-api-'));
  const store = ImageStore.open(join(dir, 'images'));
  const layers = new LayerCache(join(dir, 'layers'));
  const image = 'ptest/api:1';
  await importRootfs(store, await busyboxRootfs(), image, {
    changes: ['CMD ["sleep", "1000"]', 'ENV FROM_IMAGE=1'],
  });
  const base = await store.resolve(image);
  const ms = 1e6;
  const config = {
    ...base.config,
    config: {
      ...base.config.config,
      Healthcheck: { Test: ['CMD-SHELL', 'test -f /tmp/healthy'], Interval: 100 * ms, Timeout: 1000 * ms, Retries: 2 },
    },
  };
  const { manifest } = await store.writeImage({ config, layers: base.manifest.layers });
  const healthImage = 'ptest/api-health:1';
  await store.tag(healthImage, manifest);
  return { dir, store, layers, image, healthImage, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
