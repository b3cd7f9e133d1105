#!/usr/bin/env node
// Benchmark for images, side by side in one run:
//  1. starting a container from an image whose layers are unpacked vs from a plain directory (target ≤ 1.5×);
//  2. unpacking a 200 MB layer vs `tar -x` of the same file (target ≤ 1.5×);
//  3. committing a container with 100 MB of changes vs `podman commit` of the same change (target ≤ 1×).
// Needs root and /bin/busybox; podman is optional (left out when missing).
import { execFileSync, spawnSync } from 'node:child_process';
import {
  cpSync,
  createReadStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { commitContainer } from '../dist/harness/commit.js';
import { imageContainerOptions } from '../dist/harness/image-run.js';
import { importRootfs } from '../dist/harness/import.js';
import { ImageStore } from '../dist/image/store.js';
import { Container, runContainer } from '../dist/index.js';
import { LayerCache, unpackLayer } from '../dist/snapshot/index.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 30);
const work = mkdtempSync(join(tmpdir(), 'pbench-img-'));
const petri = join(import.meta.dirname, '..', 'dist', 'cli', 'main.js');
const store = ImageStore.open();
const cache = new LayerCache();
const tag = `pbench/base:${process.pid}`;
const results = [];

try {
  const rootfs = join(work, 'rootfs');
  for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp', 'etc']) mkdirSync(join(rootfs, d), { recursive: true });
  cpSync('/bin/busybox', join(rootfs, 'bin/busybox'));
  for (const applet of ['true', 'sh', 'dd', 'mkdir']) symlinkSync('busybox', join(rootfs, 'bin', applet));
  await importRootfs(store, rootfs, tag);

  // 1. start from an image (layers already unpacked) vs from the directory
  const fromImage = await imageContainerOptions(store, cache, tag, { command: ['/bin/true'] });
  const imageMs = await median(RUNS, () => runContainer(fromImage));
  const dirMs = await median(RUNS, () => runContainer({ rootfs, command: ['/bin/true'] }));
  results.push(['start from unpacked image vs directory', imageMs, dirMs, 1.5]);

  // 2. unpack a 200 MB layer vs tar -x
  const big = join(work, 'big');
  mkdirSync(join(big, 'data'), { recursive: true });
  for (let i = 0; i < 200; i++) writeFileSync(join(big, 'data', `f${i}`), Buffer.alloc(1024 * 1024, i));
  const layerTar = join(work, 'layer.tar');
  execFileSync('tar', ['-C', big, '-cf', layerTar, '.']);
  const tarMs = await median(3, () => {
    const out = mkdtempSync(join(work, 'tarx-'));
    execFileSync('tar', ['-C', out, '-xf', layerTar]);
    rmSync(out, { recursive: true, force: true });
  });
  const unpackMs = await median(3, async () => {
    const out = mkdtempSync(join(work, 'unpack-'));
    await unpackLayer(createReadStream(layerTar), 'application/vnd.oci.image.layer.v1.tar', out);
    rmSync(out, { recursive: true, force: true });
  });
  results.push(['unpack a 200 MB layer vs tar -x', unpackMs, tarMs, 1.5]);

  // 3. commit 100 MB of changes vs podman commit
  const change = 'mkdir -p /data && dd if=/dev/zero of=/data/blob bs=1M count=100 2>/dev/null';
  const container = Container.create({ ...fromImage, command: ['sh', '-c', change], keep: true });
  await container.start();
  await container.wait();
  const t = performance.now();
  await commitContainer(store, container.id, { ref: `pbench/committed:${process.pid}` });
  const commitMs = performance.now() - t;
  await container.remove();
  let podmanMs;
  const podmanCgroupsBefore = cgroupsNamed('libpod_parent');
  if (spawnSync('podman', ['--version']).status === 0) {
    const podman = (...args) =>
      execFileSync(
        'podman',
        [
          '--root',
          join(work, 'pm'),
          '--runroot',
          join(work, 'pmrun'),
          '--storage-driver',
          'overlay',
          '--cgroup-manager',
          'cgroupfs',
          '--events-backend',
          'none',
          ...args,
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
    const archive = join(work, 'base.tar');
    execFileSync(process.execPath, [petri, 'save', tag, '-o', archive]);
    podman('load', '-i', archive);
    podman(
      'run',
      '--name',
      'pbench',
      '--runtime',
      'runc',
      '--network',
      'none',
      '--ulimit',
      'nofile=1024:1024',
      '--ulimit',
      'nproc=1024:1024',
      tag,
      'sh',
      '-c',
      change,
    );
    const p = performance.now();
    podman('commit', 'pbench', 'pbench/podman-committed');
    podmanMs = performance.now() - p;
    podman('rm', '-f', 'pbench');
    podman('system', 'reset', '--force');
    removeNewCgroups('libpod_parent', podmanCgroupsBefore);
  }
  results.push(['commit 100 MB of changes vs podman commit', commitMs, podmanMs, 1]);
} finally {
  await store.removeImage(tag).catch(() => {});
  await store.removeImage(`pbench/committed:${process.pid}`).catch(() => {});
  rmSync(work, { recursive: true, force: true });
}

console.log('\nimages benchmark (medians)');
for (const [name, ours, anchor, target] of results) {
  const ratio = anchor ? (ours / anchor).toFixed(2) : 'n/a (anchor missing)';
  console.log(
    `  ${name}: petri ${ours.toFixed(1)}ms, anchor ${anchor ? `${anchor.toFixed(1)}ms` : '-'}, ratio ${ratio} (target ≤ ${target})`,
  );
}

function cgroupsNamed(name) {
  const roots = ['/sys/fs/cgroup', ...readdirSync('/sys/fs/cgroup').map((d) => join('/sys/fs/cgroup', d))];
  return roots.map((root) => join(root, name)).filter((dir) => existsSync(dir));
}

/** podman (cgroupfs manager) leaves empty cgroups behind: remove the ones this run made. */
function removeNewCgroups(name, before) {
  for (const dir of cgroupsNamed(name).filter((d) => !before.includes(d))) {
    for (const child of readdirSync(dir, { withFileTypes: true })) {
      if (child.isDirectory()) {
        try {
          rmdirSync(join(dir, child.name));
        } catch {}
      }
    }
    try {
      rmdirSync(dir);
    } catch {}
  }
}

async function median(n, fn) {
  const times = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await fn();
    times.push(performance.now() - t);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}
