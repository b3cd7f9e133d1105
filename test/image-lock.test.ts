import { existsSync, mkdirSync, mkdtempSync, rmSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ImageStore, withIndexLock } from '../src/image/index.js';

let dir: string;
let store: ImageStore;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'petri-image-lock-'));
  store = ImageStore.open(join(dir, 'images'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const lockDir = () => join(store.dir, 'index.json.lock');

async function tagSomething(tag: string): Promise<void> {
  const layer = await store.writeBlob(`layer of ${tag}`);
  const { manifest } = await store.writeImage({
    config: { architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [layer.digest] } },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...layer }],
  });
  await store.tag(tag, manifest);
}

describe('the index lock', () => {
  it('serializes index changes: a tag waits for the holder, then lands', async () => {
    const order: string[] = [];
    const held = withIndexLock(store.dir, async () => {
      order.push('holder in');
      await new Promise((resolve) => setTimeout(resolve, 300));
      order.push('holder out');
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(existsSync(lockDir())).toBe(true);
    await tagSomething('demo:1');
    order.push('tagged');
    await held;
    expect(order).toEqual(['holder in', 'holder out', 'tagged']);
    expect(existsSync(lockDir())).toBe(false);
    expect((await store.resolve('demo:1')).tags).toEqual(['demo:1']);
  });

  it('takes over a lock that a dead process left (its mtime stopped moving)', async () => {
    mkdirSync(lockDir());
    const minuteAgo = new Date(Date.now() - 60_000);
    utimesSync(lockDir(), minuteAgo, minuteAgo);
    await tagSomething('demo:1');
    expect(existsSync(lockDir())).toBe(false);
    expect((await store.list()).length).toBe(1);
  });

  it('releases the lock when the work under it fails', async () => {
    await expect(
      withIndexLock(store.dir, () => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(existsSync(lockDir())).toBe(false);
  });
});
