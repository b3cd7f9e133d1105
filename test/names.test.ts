import { existsSync, mkdirSync, readdirSync, readlinkSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeAll, expect, it } from 'vitest';
import { Container } from '../src/runtime/container.js';
import { namesDir } from '../src/runtime/names.js';
import { describeKernel } from './helpers/kernel.js';
import { busyboxRootfs } from './helpers/rootfs.js';

describeKernel('container names', () => {
  let rootfs: string;
  const made: Container[] = [];
  const create = async (name: string) => {
    const container = await Container.createAsync({ rootfs, command: ['true'], name });
    made.push(container);
    return container;
  };

  beforeAll(async () => {
    rootfs = await busyboxRootfs();
  });

  afterEach(async () => {
    for (const container of made.splice(0)) await container.remove();
  });

  it('are reserved by a link to the holder, refused to a second container, and freed on removal', async () => {
    const first = await create('pnames-one');
    expect(readlinkSync(join(namesDir(), 'pnames-one'))).toBe(first.id);
    await expect(create('pnames-one')).rejects.toThrow(
      `the container name "pnames-one" is already in use by container ${first.id}; remove it first (petri rm pnames-one)`,
    );
    // The refused one left nothing: only the first container's directory and link.
    expect(readdirSync(namesDir())).toEqual(['pnames-one']);
    await first.remove();
    expect(existsSync(join(namesDir(), 'pnames-one'))).toBe(false);
    const again = await create('pnames-one');
    expect(readlinkSync(join(namesDir(), 'pnames-one'))).toBe(again.id);
  });

  it('go to exactly one of many containers created at once with that name', async () => {
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, () => Container.createAsync({ rootfs, command: ['true'], name: 'pnames-race' })),
    );
    const won = results.filter((r): r is PromiseFulfilledResult<Container> => r.status === 'fulfilled');
    made.push(...won.map((r) => r.value));
    expect(won).toHaveLength(1);
    for (const r of results) {
      if (r.status === 'rejected') expect(String(r.reason)).toMatch(/already in use by container [0-9a-f]{12}/);
    }
    expect(readlinkSync(join(namesDir(), 'pnames-race'))).toBe(won[0]?.value.id);
  });

  it('are taken over from a link whose container is gone (left by a crash)', async () => {
    mkdirSync(namesDir(), { recursive: true });
    symlinkSync('0123456789ab', join(namesDir(), 'pnames-stale'));
    const container = await create('pnames-stale');
    expect(readlinkSync(join(namesDir(), 'pnames-stale'))).toBe(container.id);
  });

  it('of containers made before the names directory existed are kept', async () => {
    const old = await create('pnames-old');
    // As a petri from before names/ would have left it: the record, no link.
    rmSync(namesDir(), { recursive: true });
    await expect(create('pnames-old')).rejects.toThrow(`already in use by container ${old.id}`);
    expect(readlinkSync(join(namesDir(), 'pnames-old'))).toBe(old.id);
  });
});
