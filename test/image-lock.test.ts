import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ImageStore, withIndexLock } from '../src/image/index.js';
import { blobLockPath, withBlobLock } from '../src/image/lock.js';

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

  it('holds the lock as proper-lockfile sees it, and reports it taken over', async () => {
    const { check } = await import('proper-lockfile');
    const options = { lockfilePath: lockDir(), realpath: false, stale: 20_000 };
    await withIndexLock(store.dir, async () => {
      expect(await check(store.dir, options)).toBe(true);
    });
    expect(existsSync(lockDir())).toBe(false);
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    try {
      const held = withIndexLock(store.dir, async () => {
        // Another process took the lock over (a stall past the stale time): a new mtime.
        const later = new Date(Date.now() + 60_000);
        utimesSync(lockDir(), later, later);
        vi.advanceTimersByTime(5_000);
      });
      await expect(held).rejects.toThrow(/was taken over while petri held it/);
      expect(existsSync(lockDir())).toBe(true); // the new holder's
    } finally {
      vi.useRealTimers();
    }
  });

  it('takes over a lock that a dead process left (its mtime stopped moving)', async () => {
    mkdirSync(lockDir());
    const minuteAgo = new Date(Date.now() - 60_000);
    utimesSync(lockDir(), minuteAgo, minuteAgo);
    await tagSomething('demo:1');
    expect(existsSync(lockDir())).toBe(false);
    expect((await store.list()).length).toBe(1);
  });

  it.each([
    'SIGTERM',
    'SIGINT',
  ] as const)('a process ended by %s while it holds the lock removes it: the next one need not wait for it to go stale', async (signal) => {
    const lockLib = join(import.meta.dirname, '..', 'dist', 'image', 'lock.js');
    const script = `import { withIndexLock } from ${JSON.stringify(lockLib)};
        await withIndexLock(process.argv[1], () => { process.stdout.write('held\\n'); return new Promise(() => setInterval(() => {}, 1000)); });`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, store.dir], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve, reject) => {
      child.stdout?.once('data', () => resolve());
      child.once('exit', (code) => reject(new Error(`exited ${code} before holding the lock`)));
    });
    expect(existsSync(lockDir())).toBe(true);
    const exited = new Promise((resolve) => child.once('exit', (code, sig) => resolve(sig ?? code)));
    child.kill(signal);
    // ended by the signal as before, the lock gone with it
    expect(await exited).toBe(signal);
    expect(existsSync(lockDir())).toBe(false);
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

describe('the blob download lock', () => {
  const a = `sha256:${'a'.repeat(64)}`;
  const b = `sha256:${'b'.repeat(64)}`;
  const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  it('makes a second download of the same blob wait for the first; other blobs go on', async () => {
    const order: string[] = [];
    const first = withBlobLock(store.dir, a, async () => {
      order.push('a1 in');
      await pause(300);
      order.push('a1 out');
    });
    await pause(50);
    expect(existsSync(blobLockPath(store.dir, a))).toBe(true);
    const other = withBlobLock(store.dir, b, () => {
      order.push('b');
    });
    const second = withBlobLock(store.dir, a, () => {
      order.push('a2');
    });
    await Promise.all([first, other, second]);
    expect(order).toEqual(['a1 in', 'b', 'a1 out', 'a2']);
    expect(existsSync(blobLockPath(store.dir, a))).toBe(false);
    expect(existsSync(blobLockPath(store.dir, b))).toBe(false);
  });

  it('takes over a lock that a dead process left, and releases it when the work fails', async () => {
    mkdirSync(blobLockPath(store.dir, a), { recursive: true });
    const minuteAgo = new Date(Date.now() - 60_000);
    utimesSync(blobLockPath(store.dir, a), minuteAgo, minuteAgo);
    await expect(
      withBlobLock(store.dir, a, () => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(existsSync(blobLockPath(store.dir, a))).toBe(false);
  });
});
