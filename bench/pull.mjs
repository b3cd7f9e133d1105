#!/usr/bin/env node
// Benchmark: pulling an image of 5 gzip layers (~200 MB unpacked, mixed file sizes, half of the
// content compressible) from a local registry (Debian's docker-registry on 127.0.0.1), side by
// side in one run, interleaved, each into an empty destination every time:
//  - `petri pull` (the `petri` bin, a fresh PETRI_ROOT): downloads, verifies and stores the layers
//    and unpacks each into the layer cache while it downloads, as `docker pull` does (checked: all 5
//    are unpacked when it returns); and `petri pull` followed by the first `petri run --rm IMAGE true`
//    (which finds the layers unpacked and only starts a container);
//  - `skopeo copy docker://… oci:DIR:tag` followed by `umoci unpack` (an independent client);
//  - `docker pull` on a private dockerd started with `--insecure-registry 127.0.0.1:PORT` (the
//    image removed with `docker rmi` before each pull, so its layers are fetched again).
// Target: petri pull at or below docker pull's time. The image is seeded with `skopeo copy` from an
// OCI layout this script writes. Needs root, docker-registry, skopeo and umoci (docker optional:
// skipped without it). Everything lives under /tmp/ptest-bench-pull-*, removed at the end with the
// registry and the dockerd it started and that dockerd's cgroups, also when a step fails.
// BENCH_RUNS (default 5) changes the count.
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { dockerCli, haveDocker, PrivateDockerd } from './lib/private-dockerd.mjs';
import { mean, median } from './lib/stats.mjs';

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const top = join(import.meta.dirname, '..');
const skip = (why) => {
  console.log(`bench/pull.mjs: skipped: ${why}`);
  process.exit(0);
};
if (process.getuid() !== 0) skip('needs root (petri run, umoci unpack, dockerd)');
const has = (tool) => spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;
for (const tool of ['docker-registry', 'skopeo', 'umoci']) if (!has(tool)) skip(`needs ${tool}`);
if (!existsSync('/bin/busybox')) skip('needs /bin/busybox (busybox-static)');
const withDocker = haveDocker();

const work = mkdtempSync(join(tmpdir(), 'ptest-bench-pull-'));
const bin = join(top, JSON.parse(readFileSync(join(top, 'package.json'), 'utf8')).bin.petri);
const petriEnv = { ...process.env };
delete petriEnv.NODE_EXTRA_CA_CERTS;
let dockerd; // a PrivateDockerd told the local registry is insecure, once its port is known
const dockerEnv = () => dockerd.env();
let registry;
let cleaned;

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    console.error(`bench/pull.mjs: ${signal}, cleaning up`);
    cleanup().finally(() => process.exit(130));
  });
}

const results = { petri: [], 'petri + first run': [], 'skopeo + umoci': [], docker: [] };
let size;
try {
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const image = `${host}/bench/big:1`;
  await startRegistry(port);
  size = seed(image);
  if (withDocker) {
    dockerd = new PrivateDockerd(work, { extraArgs: ['--insecure-registry', host] });
    await dockerd.start();
  }

  const run = (cmd, args, env, what) => {
    const t = performance.now();
    const r = spawnSync(cmd, args, { encoding: 'utf8', env, timeout: 600_000 });
    if (r.status !== 0) throw new Error(`${what} exited ${r.status}: ${r.stderr}`);
    return performance.now() - t;
  };
  const contenders = {
    petri: () => {
      const root = join(work, 'petri-root');
      rmSync(root, { recursive: true, force: true });
      const env = { ...petriEnv, PETRI_ROOT: root };
      const pull = run(bin, ['pull', '-q', image], env, 'petri pull');
      const unpacked = readdirSync(join(root, 'layers')).filter((name) => !name.startsWith('.')).length;
      if (unpacked !== size.layers) throw new Error(`petri pull left ${unpacked} of ${size.layers} layers unpacked`);
      const first = run(bin, ['run', '--rm', image, '/bin/busybox', 'true'], env, 'petri run');
      results['petri + first run'].push(pull + first);
      return pull;
    },
    'skopeo + umoci': () => {
      const layout = join(work, 'oci-dest');
      const bundle = join(work, 'bundle');
      rmSync(layout, { recursive: true, force: true });
      rmSync(bundle, { recursive: true, force: true });
      return (
        run(
          'skopeo',
          ['copy', '-q', '--src-tls-verify=false', `docker://${image}`, `oci:${layout}:big`],
          process.env,
          'skopeo copy',
        ) + run('umoci', ['unpack', '--image', `${layout}:big`, bundle], process.env, 'umoci unpack')
      );
    },
    ...(withDocker
      ? {
          docker: () => {
            spawnSync(dockerCli, ['rmi', '-f', image], { stdio: 'ignore', env: dockerEnv() });
            return run(dockerCli, ['pull', '-q', image], dockerEnv(), 'docker pull');
          },
        }
      : {}),
  };
  const names = Object.keys(contenders);
  // One warm-up round (the registry's files in the page cache), then RUNS rounds, the order rotating.
  for (let i = -1; i < RUNS; i++) {
    const order = names.map((_, k) => names[(k + Math.max(i, 0)) % names.length]);
    for (const name of order) {
      const ms = contenders[name]();
      if (i >= 0) results[name].push(ms);
      else if (name === 'petri') results['petri + first run'].pop();
    }
  }
  report();
} finally {
  await cleanup();
}

function report() {
  const fmt = (ms) => `${ms.toFixed(0)}`.padStart(7);
  console.log(
    `\npulling ${size.layers} gzip layers (${(size.packed / 1e6).toFixed(0)} MB packed, ${(size.unpacked / 1e6).toFixed(0)} MB unpacked) from docker-registry on loopback, ${RUNS} runs each, interleaved; ms`,
  );
  console.log('contender              median     mean   ×docker pull (median)');
  const docker = results.docker.length ? median(results.docker) : undefined;
  for (const [name, times] of Object.entries(results)) {
    if (times.length === 0) continue;
    const ratio = docker ? (median(times) / docker).toFixed(2) : '-';
    console.log(`${name.padEnd(20)} ${fmt(median(times))}  ${fmt(mean(times))}   ${ratio.padStart(6)}`);
  }
  if (docker) {
    const ratio = median(results.petri) / docker;
    console.log(
      `\npetri pull (layers unpacked) / docker pull: ${ratio.toFixed(2)} (target ≤ 1: ${ratio <= 1 ? 'ok' : 'MISSED'})`,
    );
  } else console.log('\ndocker pull: skipped (no docker.io)');
}

/**
 * Writes an OCI layout of 5 gzip layers (layer 1: busybox; each ~40 MB of files of mixed sizes, half
 * random bytes, half hex text) and copies it into the registry with skopeo. Returns its sizes.
 */
function seed(image) {
  const layout = join(work, 'seed');
  const blobs = join(layout, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  const writeBlob = (data) => {
    const hex = createHash('sha256').update(data).digest('hex');
    writeFileSync(join(blobs, hex), data);
    return { digest: `sha256:${hex}`, size: data.length };
  };
  const layers = [];
  const diffIds = [];
  let unpacked = 0;
  for (let n = 0; n < 5; n++) {
    const dir = join(work, `layer-${n}`);
    mkdirSync(join(dir, `data${n}`), { recursive: true });
    if (n === 0) {
      mkdirSync(join(dir, 'bin'));
      writeFileSync(join(dir, 'bin', 'busybox'), readFileSync('/bin/busybox'), { mode: 0o755 });
    }
    let bytes = 0;
    for (let f = 0; bytes < 40e6; f++) {
      const length = f % 10 === 0 ? 4e6 : f % 3 === 0 ? 200e3 : 8e3;
      const data = f % 4 < 2 ? randomBytes(length) : Buffer.from(randomBytes(length / 2).toString('hex'));
      writeFileSync(join(dir, `data${n}`, `f${f}`), data);
      bytes += data.length;
    }
    unpacked += bytes;
    const tar = spawnSync('tar', ['-C', dir, '--sort=name', '--numeric-owner', '-cf', '-', '.'], {
      maxBuffer: 1 << 30,
    });
    if (tar.status !== 0) throw new Error(`tar exited ${tar.status}: ${tar.stderr}`);
    diffIds.push(`sha256:${createHash('sha256').update(tar.stdout).digest('hex')}`);
    layers.push({
      mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
      ...writeBlob(gzipSync(tar.stdout, { level: 6 })),
    });
    rmSync(dir, { recursive: true, force: true });
  }
  const config = writeBlob(
    JSON.stringify({
      architecture: process.arch === 'arm64' ? 'arm64' : 'amd64',
      os: 'linux',
      config: { Cmd: ['/bin/busybox', 'true'] },
      rootfs: { type: 'layers', diff_ids: diffIds },
    }),
  );
  const manifest = writeBlob(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers,
    }),
  );
  writeFileSync(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...manifest,
          annotations: { 'org.opencontainers.image.ref.name': 'big' },
        },
      ],
    }),
  );
  const copied = spawnSync(
    'skopeo',
    ['copy', '-q', '--dest-tls-verify=false', `oci:${layout}:big`, `docker://${image}`],
    {
      encoding: 'utf8',
    },
  );
  if (copied.status !== 0) throw new Error(`skopeo copy (seed) exited ${copied.status}: ${copied.stderr}`);
  rmSync(layout, { recursive: true, force: true });
  return { layers: layers.length, packed: layers.reduce((a, l) => a + l.size, 0), unpacked };
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function startRegistry(port) {
  const dir = join(work, 'registry');
  mkdirSync(dir);
  const config = join(dir, 'config.yml');
  writeFileSync(
    config,
    `version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, 'data')}\nhttp:\n  addr: 127.0.0.1:${port}\n  secret: bench\n`,
  );
  registry = spawn('docker-registry', ['serve', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  registry.stderr.on('data', (d) => {
    log = (log + d).slice(-4000);
  });
  for (let i = 0; i < 100; i++) {
    if (registry.exitCode !== null) break;
    const status = await new Promise((resolve) => {
      http
        .get(`http://127.0.0.1:${port}/v2/`, (res) => {
          res.resume();
          resolve(res.statusCode);
        })
        .on('error', () => resolve(0));
    });
    if (status === 200) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`docker-registry did not start:\n${log}`);
}

async function stop(child, timeoutMs) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return true;
  const exited = new Promise((resolve) => child.once('exit', () => resolve(true)));
  child.kill('SIGTERM');
  return Promise.race([exited, new Promise((resolve) => setTimeout(() => resolve(false), timeoutMs))]);
}

/** Stops the registry and dockerd, removes what dockerd left (mounts under work, its cgroups), then work. */
async function cleanup() {
  cleaned ??= (async () => {
    await stop(registry, 5000).then((done) => done || registry.kill('SIGKILL'));
    await dockerd?.stop();
    rmSync(work, { recursive: true, force: true });
  })();
  return cleaned;
}
