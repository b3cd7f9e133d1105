#!/usr/bin/env node
// Benchmark: the full container lifecycle (create → run `true` → removed) of petri,
// `runc run` and `bwrap --unshare-all`, side by side in one run on the same busybox
// root filesystem: sequentially and 100 containers at concurrency 4. Prints
// medians and ratios. Needs root, /bin/busybox, runc and bwrap (anchors that are
// missing are reported as such and left out).
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Container, runContainer } from '../dist/lib/index.js';

const SEQUENTIAL = Number(process.env.BENCH_RUNS ?? 60);
const PARALLEL = Number(process.env.BENCH_PARALLEL ?? 100);
const CONCURRENCY = 4;
const top = join(import.meta.dirname, '..');

if (process.getuid() !== 0) {
  console.error('bench: needs root');
  process.exit(1);
}

const work = mkdtempSync(join(tmpdir(), 'pbench-'));
const rootfs = makeRootfs(join(work, 'rootfs'));
const have = (cmd) => spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0;

// runc gets the bundle petri itself writes (same spec), with the plain directory as its root.
const bundle = join(work, 'bundle');
mkdirSync(bundle);
{
  const c = Container.create({ rootfs, rootfsInPlace: true, command: ['/bin/true'], init: false });
  const spec = JSON.parse(readFileSync(join(c.dir, 'config.json'), 'utf8'));
  await c.remove();
  delete spec.linux.cgroupsPath;
  writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec));
}

let runcSeq = 0;
const contenders = {
  petri: () => runContainer({ rootfs, command: ['/bin/true'] }).then(check),
  'petri --no-init': () => runContainer({ rootfs, command: ['/bin/true'], init: false }).then(check),
  runc: have('runc')
    ? () => exec('runc', ['run', '--bundle', bundle, `pbench-${process.pid}-${runcSeq++}`])
    : undefined,
  bwrap: have('bwrap')
    ? () =>
        exec('bwrap', [
          '--unshare-all',
          '--die-with-parent',
          '--ro-bind',
          rootfs,
          '/',
          '--proc',
          '/proc',
          '--dev',
          '/dev',
          '/bin/true',
        ])
    : undefined,
};

const results = {};
for (const [name, fn] of Object.entries(contenders)) {
  if (!fn) {
    console.log(`${name}: not installed, left out`);
    continue;
  }
  for (let i = 0; i < 5; i++) await fn(); // warm up
  const times = [];
  for (let i = 0; i < SEQUENTIAL; i++) {
    const t = performance.now();
    await fn();
    times.push(performance.now() - t);
  }
  const t = performance.now();
  await pool(PARALLEL, CONCURRENCY, fn);
  results[name] = { median: median(times), p90: percentile(times, 0.9), parallelMs: performance.now() - t };
}

// The CLI's own cost: `petri run` (the package's bin) wall time minus that of `node -e 0`, and
// runc run measured the same way, all three interleaved so that load drift hits them alike; each
// run follows a node process, so all pay the same cold kernel costs (on cgroup v1 the first cgroup
// migration after a quiet spell waits for an RCU grace period). Both node commands run without
// NODE_EXTRA_CA_CERTS: with it every Node start reads and parses that CA bundle (80 ms or more on
// a CI VM, with a wide spread) before any JavaScript runs, and `petri run` never uses it.
const cliEnv = { ...process.env };
delete cliEnv.NODE_EXTRA_CA_CERTS;
const bin = join(top, JSON.parse(readFileSync(join(top, 'package.json'), 'utf8')).bin.petri);
const cliRuns = Math.min(SEQUENTIAL, 30);
const cliTimes = { nodeZero: [], petri: [], runc: [] };
const timed = (times, cmd, args) => {
  const t = performance.now();
  const result = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env: cliEnv, encoding: 'utf8' });
  times.push(performance.now() - t);
  if (result.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${result.status}: ${result.stderr}`);
};
for (let i = 0; i < cliRuns + 2; i++) {
  if (i === 2) for (const times of Object.values(cliTimes)) times.length = 0; // warm-up
  timed(cliTimes.nodeZero, process.execPath, ['-e', '0']);
  timed(cliTimes.petri, bin, ['run', '--rm', '--rootfs', rootfs, '/bin/true']);
  if (results.runc) timed(cliTimes.runc, 'runc', ['run', '--bundle', bundle, `pbench-${process.pid}-${runcSeq++}`]);
}
const nodeZero = median(cliTimes.nodeZero);
const petriCli = median(cliTimes.petri);
const runcCold = results.runc ? median(cliTimes.runc) : undefined;

console.log(
  `\nlifecycle create → run /bin/true → removed, ${SEQUENTIAL} sequential, ${PARALLEL} at concurrency ${CONCURRENCY}`,
);
console.log('contender          median    p90   100@4 total');
for (const [name, r] of Object.entries(results)) {
  console.log(`${name.padEnd(16)} ${fmt(r.median)} ${fmt(r.p90)} ${fmt(r.parallelMs).padStart(12)}`);
}
const p = results.petri;
console.log('\nratios (lower is better for petri):');
if (results.bwrap) console.log(`  petri / bwrap median: ${(p.median / results.bwrap.median).toFixed(2)}  (target ≤ 2)`);
if (results.runc) console.log(`  petri / runc  median: ${(p.median / results.runc.median).toFixed(2)}  (target ≤ 0.5)`);
console.log(`  petri 100 containers at concurrency 4: ${fmt(p.parallelMs)}  (target < 2000 ms)`);
const cliCost = petriCli - nodeZero;
console.log(`  petri run CLI: ${fmt(petriCli)} wall, node -e 0 ${fmt(nodeZero)}, own cost ${fmt(cliCost)}`);
if (results.runc)
  console.log(`  petri run own cost / runc median: ${(cliCost / results.runc.median).toFixed(2)}  (target ≤ 1)`);
if (runcCold) {
  console.log(
    `  runc run measured like the CLI (interleaved with it): ${fmt(runcCold)}; petri run own cost / that: ${(cliCost / runcCold).toFixed(2)}  (target ≤ 1)`,
  );
}

rmSync(work, { recursive: true, force: true });

function check(result) {
  if (result.exitCode !== 0) throw new Error(`petri run failed: ${result.exitCode} ${result.stderr}`);
}

function exec(cmd, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => {
      err += d;
    });
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited ${code}: ${err}`))));
  });
}

async function pool(total, concurrency, fn) {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next++ < total) await fn();
    }),
  );
}

function makeRootfs(dir) {
  for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp', 'etc']) mkdirSync(join(dir, d), { recursive: true });
  cpSync('/bin/busybox', join(dir, 'bin/busybox'));
  for (const applet of ['true', 'sh']) symlinkSync('busybox', join(dir, 'bin', applet));
  return dir;
}

function median(values) {
  return percentile(values, 0.5);
}

function percentile(values, q) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function fmt(ms) {
  return `${ms.toFixed(1)}ms`.padStart(8);
}
