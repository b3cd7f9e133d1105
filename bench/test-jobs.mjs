#!/usr/bin/env node
// Benchmark: `petri test` (the CLI, as CI runs it) at its default parallelism on the
// petri-fixture/busybox image:
//  1. 200 jobs of `true`: jobs per second (target ≥ 100 on a 2-core machine), measured over the
//     whole CLI run (Node's start, config, image lookup, jobs, summary) and over the jobs alone
//     (first job-start event to the summary event);
//  2. 20 jobs that do a little real work (busybox sha256sum of 4 MB, a shell loop): the harness's
//     own overhead per job, wall time minus the commands' time (the same commands timed on the
//     host, outside any container, in parallel at the same parallelism), divided by the jobs.
// Needs root and /bin/busybox (Debian's busybox-static). Everything lives under a private
// PETRI_ROOT in /tmp/ptest-bench-*, removed at the end, also when a step fails.
// BENCH_TRUE (default 200), BENCH_WORK (default 20), BENCH_ROUNDS (default 3; the best
// round is reported, medians beside it) and BENCH_PARALLEL (default: petri test's) change what runs.
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';

const TRUE_JOBS = Number(process.env.BENCH_TRUE ?? 200);
const WORK_JOBS = Number(process.env.BENCH_WORK ?? 20);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
/** `--parallel` for every run; unset: petri test's default. */
const PARALLEL = process.env.BENCH_PARALLEL;
const TARGET = 100;
const WORK = 'head -c 4000000 /dev/zero | sha256sum >/dev/null && i=0 && while [ $i -lt 20000 ]; do i=$((i+1)); done';
const top = join(import.meta.dirname, '..');
const petriBin = join(top, 'dist', 'bin', 'petri.cjs');

if (process.getuid() !== 0) {
  console.error('bench: needs root');
  process.exit(1);
}
if (!existsSync('/bin/busybox')) {
  console.error('bench: needs /bin/busybox (apt-get install busybox-static)');
  process.exit(1);
}

const work = mkdtempSync(join(tmpdir(), 'ptest-bench-'));
const root = join(work, 'root');
// Without NODE_EXTRA_CA_CERTS, like the other benchmarks: where it is set, every Node start parses that bundle.
const env = { ...process.env, PETRI_ROOT: root, NO_COLOR: '1' };
delete env.NODE_EXTRA_CA_CERTS;

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};

/** Runs `petri test --reporter json` in `dir`; times the whole run and its jobs (by the events' arrival). */
function petriTest(dir) {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const args = [petriBin, 'test', '--reporter', 'json', '--no-keep-failed'];
    if (PARALLEL) args.push('--parallel', PARALLEL);
    const child = spawn(process.execPath, args, {
      cwd: dir,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let firstStart;
    let summaryAt;
    let summary;
    let parallel;
    let buffered = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk) => {
      buffered += chunk;
      let newline = buffered.indexOf('\n');
      while (newline >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        newline = buffered.indexOf('\n');
        if (!line.startsWith('{')) continue;
        const event = JSON.parse(line);
        if (event.type === 'plan') parallel = event.parallel;
        if (event.type === 'job-start') firstStart ??= performance.now();
        if (event.type === 'summary') {
          summaryAt = performance.now();
          summary = event;
        }
      }
    });
    child.stderr.setEncoding('utf8').on('data', (chunk) => {
      stderr += chunk;
    });
    child.on('error', reject);
    child.on('close', (code) => {
      const wallMs = performance.now() - started;
      if (code !== 0 || !summary) {
        reject(new Error(`petri test exited ${code}: ${stderr.slice(-2000)}`));
        return;
      }
      const failed = summary.results.filter((r) => r.status !== 'passed');
      if (failed.length > 0) {
        reject(new Error(`jobs did not pass: ${failed.map((r) => `${r.name}: ${r.message}`).join('; ')}`));
        return;
      }
      resolve({ wallMs, jobsMs: summaryAt - firstStart, parallel, jobs: summary.results.length });
    });
  });
}

/** Runs the work commands on the host (no container) at `parallel` at once: the commands' own time. */
async function hostTime(count, parallel) {
  const started = performance.now();
  let next = 0;
  const lane = async () => {
    while (next < count) {
      next++;
      await new Promise((resolve, reject) => {
        const child = spawn('/bin/busybox', ['sh', '-c', WORK], { stdio: 'ignore' });
        child.on('error', reject);
        child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`host command exited ${code}`))));
      });
    }
  };
  await Promise.all(Array.from({ length: parallel }, lane));
  return performance.now() - started;
}

function project(name, jobs) {
  const dir = join(work, name);
  mkdirSync(dir);
  const config = { images: { bb: { image: 'petri-fixture/busybox' } }, jobs };
  writeFileSync(join(dir, 'petri.config.json'), JSON.stringify(config));
  return dir;
}

try {
  const context = join(work, 'busybox-context');
  cpSync(join(top, 'fixtures', 'build', 'busybox'), context, { recursive: true });
  copyFileSync('/bin/busybox', join(context, 'busybox'));
  const built = spawnSync(process.execPath, [petriBin, 'build', '-q', '-t', 'petri-fixture/busybox', context], {
    env,
    encoding: 'utf8',
  });
  if (built.status !== 0) throw new Error(`petri build failed: ${built.stderr}`);

  const pad = (n) => String(n).padStart(3, '0');
  const trueDir = project(
    'true',
    Array.from({ length: TRUE_JOBS }, (_, i) => ({ name: `true-${pad(i)}`, image: 'bb', run: ['true'] })),
  );
  const workDir = project(
    'work',
    Array.from({ length: WORK_JOBS }, (_, i) => ({ name: `work-${pad(i)}`, image: 'bb', run: WORK })),
  );
  // One warm-up run: the layers are unpacked, the runner binary and page cache warm.
  await petriTest(project('warm', [{ name: 'warm', image: 'bb', run: ['true'] }]));

  console.log(
    `petri test benchmark: ${TRUE_JOBS} jobs of true, ${WORK_JOBS} jobs of real work, ${ROUNDS} rounds, ${availableParallelism()} CPUs, load ${loadAverage()}`,
  );
  const trueRuns = [];
  const workRuns = [];
  const hostRuns = [];
  for (let round = 0; round < ROUNDS; round++) {
    const t = await petriTest(trueDir);
    trueRuns.push(t);
    const w = await petriTest(workDir);
    workRuns.push(w);
    hostRuns.push(await hostTime(WORK_JOBS, w.parallel));
    console.log(
      `  round ${round + 1}: true ${rate(t.jobs, t.wallMs)} jobs/s (jobs alone ${rate(t.jobs, t.jobsMs)}), work ${ms(w.jobsMs)} vs ${ms(hostRuns.at(-1))} on the host`,
    );
  }
  const best = trueRuns.reduce((a, b) => (b.wallMs < a.wallMs ? b : a));
  const parallel = best.parallel;
  console.log(`\n${TRUE_JOBS} jobs of true, ${parallel} at a time${PARALLEL ? '' : ' (the default)'}:`);
  console.log(
    `  whole CLI run: ${rate(best.jobs, best.wallMs)} jobs/s (${ms(best.wallMs)}; median ${rate(best.jobs, median(trueRuns.map((r) => r.wallMs)))} jobs/s)`,
  );
  console.log(
    `  jobs alone:    ${rate(best.jobs, best.jobsMs)} jobs/s (${ms(best.jobsMs)}; median ${rate(best.jobs, median(trueRuns.map((r) => r.jobsMs)))} jobs/s)`,
  );
  console.log(`  overhead per job: ${ms((best.jobsMs * parallel) / best.jobs)} of a job slot`);
  const verdict = best.jobs / (best.wallMs / 1000) >= TARGET ? 'met' : 'NOT met';
  console.log(`  target ≥ ${TARGET} jobs/s (whole run): ${verdict}`);

  const wJobs = median(workRuns.map((r) => r.jobsMs));
  const wWall = median(workRuns.map((r) => r.wallMs));
  const host = median(hostRuns);
  console.log(`\n${WORK_JOBS} jobs of real work (${WORK}), ${workRuns[0].parallel} at a time:`);
  console.log(`  petri test: ${ms(wWall)} whole run, ${ms(wJobs)} for the jobs; the commands on the host: ${ms(host)}`);
  console.log(
    `  harness overhead: ${ms(wJobs - host)} in all, ${ms((wJobs - host) / WORK_JOBS)} per job (jobs alone), ${ms((wWall - host) / WORK_JOBS)} per job (whole run)`,
  );
} finally {
  rmSync(work, { recursive: true, force: true });
}

function rate(jobs, msValue) {
  return (jobs / (msValue / 1000)).toFixed(1);
}

function ms(value) {
  return `${value.toFixed(0)} ms`;
}

function loadAverage() {
  return spawnSync('cat', ['/proc/loadavg'], { encoding: 'utf8' }).stdout.split(' ').slice(0, 3).join(' ');
}
