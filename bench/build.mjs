#!/usr/bin/env node
// Benchmark: `petri build` (the CLI, as users run it) against `docker build` (the BuildKit built into
// Debian's docker.io, on a private dockerd), side by side in one run, interleaved, on the build
// fixtures (multi-stage, copy-semantics, args-env; each FROM petri-fixture/busybox, which both build
// first from scratch):
//  1. cold build: `--no-cache` in both: every step runs again, the base image comes from the local
//     image store (nothing is pulled), the result is written to the build cache but the cache is not
//     read; the OS page cache and BuildKit's copy of the context stay warm (target ≤ 1×);
//  2. fully cached rebuild: the same build again; both must report every step cached (target ≤ 0.3×);
//  3. rebuild after changing the content of one file a COPY uses (target ≤ 0.5×). Each iteration
//     writes a new content: going back to an earlier one would be a full cache hit in both.
// Then checks that both images hold the same files (petri run --rm / docker run --rm), and prints
// what starting each client costs (node -e 0, petri version, docker --version, docker version).
// petri runs without NODE_EXTRA_CA_CERTS, like bench/lifecycle.mjs: where it is set, every Node start
// first reads and parses that CA bundle (~70 ms here), which petri build never uses.
// Needs root, /bin/busybox and Debian's docker.io (dockerd, its docker CLI with BuildKit built in);
// skips with a message otherwise. Everything it makes lives under /tmp/ptest-bench-*: removed at the
// end, with the dockerd it started and the cgroups that dockerd made, also when a step fails.
// BENCH_RUNS (default 10) and BENCH_FIXTURES (comma-separated) change what runs.
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dockerCli, haveDocker, PrivateDockerd } from './lib/private-dockerd.mjs';
import { mean, median } from './lib/stats.mjs';

const RUNS = Number(process.env.BENCH_RUNS ?? 10);
const top = join(import.meta.dirname, '..');
const TARGETS = { cold: 1, cached: 0.3, change: 0.5 };
const SCENARIOS = [
  ['cold', 'cold build (--no-cache)'],
  ['cached', 'fully cached rebuild'],
  ['change', 'one copied file changed'],
];

/**
 * The fixtures: the file whose content changes (a COPY source), its content for revision n, and a
 * command whose output shows the image's files (the same in both, and known in advance).
 */
const FIXTURES = {
  'multi-stage': {
    file: 'app.sh',
    content: (n) => `#!/bin/sh\necho "built by $(id -u) in $(pwd)"\necho "revision ${n}"\n`,
    show: ['cat', '/app/out.txt'],
    expected: (n) => `built by 0 in /src\nrevision ${n}\n`,
  },
  'copy-semantics': {
    // The BuildKit of docker.io 20.10 predates COPY --exclude: that line is left out, for both.
    prepare: (dir) => {
      const file = join(dir, 'Dockerfile');
      const kept = readFileSync(file, 'utf8')
        .split('\n')
        .filter((l) => !l.includes('--exclude'));
      writeFileSync(file, kept.join('\n'));
    },
    file: 'src/top.txt',
    content: (n) => `top ${n}\n`,
    show: ['sh', '-c', 'for f in $(find /dst /many /wild /renamed.txt -type f | sort); do echo "$f: $(cat $f)"; done'],
    expected: (n) =>
      `/dst/nested/n.txt: nested\n/dst/top.txt: top ${n}\n/dst/x.skip: skip\n/many/a.txt: a\n/many/b.txt: b\n` +
      '/renamed.txt: a\n/wild/a.txt: a\n/wild/b.txt: b\n',
  },
  'args-env': {
    file: 'world.txt',
    content: (n) => `world file ${n}\n`,
    show: ['sh', '-c', 'pwd && cat args.txt world.txt'],
    expected: (n) => `/opt/world\nhello world|fallback|alt|hello|world\nworld file ${n}\n`,
  },
};
const chosen = (process.env.BENCH_FIXTURES ?? Object.keys(FIXTURES).join(',')).split(',');

const skip = (why) => {
  console.log(`bench/build.mjs: skipped: ${why}`);
  process.exit(0);
};
if (process.getuid() !== 0) skip('needs root (petri build and dockerd)');
if (!existsSync('/bin/busybox')) skip('needs /bin/busybox (busybox-static) for the base image');
if (!haveDocker()) skip("needs Debian's docker.io (dockerd and docker)");
for (const name of chosen) if (!FIXTURES[name]) throw new Error(`unknown fixture ${name}`);

const work = mkdtempSync(join(tmpdir(), 'ptest-bench-build-'));
const dockerd = new PrivateDockerd(work);
const petriEnv = { ...process.env, PETRI_ROOT: join(work, 'petri-root') };
delete petriEnv.NODE_EXTRA_CA_CERTS;
const dockerEnv = dockerd.env({ DOCKER_BUILDKIT: '1' });
const bin = join(top, JSON.parse(readFileSync(join(top, 'package.json'), 'utf8')).bin.petri);
let cleaned;
let interrupted = false;

const tools = {
  petri: {
    run: (args) => spawnSync(bin, [...args], { encoding: 'utf8', env: petriEnv, timeout: 300_000 }),
    build: (args) => ['build', '--progress', 'plain', ...args],
    runArgs: (image, cmd) => ['run', '--rm', image, ...cmd],
  },
  docker: {
    run: (args) => spawnSync(dockerCli, args, { encoding: 'utf8', env: dockerEnv, timeout: 300_000 }),
    // The private dockerd has no bridge (no iptables here): RUN steps use the host's network, which is
    // also what petri build's RUN does by default.
    build: (args) => ['build', '--progress', 'plain', '--network', 'host', ...args],
    runArgs: (image, cmd) => ['run', '--rm', '--network', 'none', image, ...cmd],
  },
};

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    console.error(`bench/build.mjs: ${signal}, cleaning up`);
    interrupted = true;
    cleanup().finally(() => process.exit(130));
  });
}

const results = {}; // fixture → scenario → tool → ms[]
const notes = [];
let versions;
let startCosts;
let failed = false;
try {
  await dockerd.start();
  versions = {
    docker: tools.docker.run(['version', '--format', '{{.Server.Version}}']).stdout.trim(),
    driver: tools.docker.run(['info', '--format', '{{.Driver}}']).stdout.trim(),
  };
  const ctx = join(work, 'fixtures');
  cpSync(join(top, 'fixtures', 'build'), ctx, { recursive: true, verbatimSymlinks: true });
  copyFileSync('/bin/busybox', join(ctx, 'busybox', 'busybox'));
  for (const tool of ['petri', 'docker']) build(tool, ['-t', 'petri-fixture/busybox', join(ctx, 'busybox')]);

  let revision = 0;
  for (const name of chosen) {
    const fixture = FIXTURES[name];
    const dir = join(ctx, name);
    fixture.prepare?.(dir);
    const changed = join(dir, fixture.file);
    const image = `pbench/${name}`;
    const args = (...extra) => [...extra, '-t', image, dir];
    writeFileSync(changed, fixture.content(++revision));
    // warm up: a cold and a cached build each, not timed
    for (const tool of ['petri', 'docker']) {
      build(tool, args('--no-cache'));
      build(tool, args());
    }
    const times = {
      cold: { petri: [], docker: [] },
      cached: { petri: [], docker: [] },
      change: { petri: [], docker: [] },
    };
    results[name] = times;
    for (let i = 0; i < RUNS; i++) {
      // alternate which goes first, so that neither always follows the other's page-cache traffic
      const order = i % 2 === 0 ? ['petri', 'docker'] : ['docker', 'petri'];
      for (const tool of order) times.cold[tool].push(build(tool, args('--no-cache'), 'cold', name).ms);
      for (const tool of order) times.cached[tool].push(build(tool, args(), 'cached', name).ms);
      writeFileSync(changed, fixture.content(++revision));
      for (const tool of order) times.change[tool].push(build(tool, args(), 'change', name).ms);
      await new Promise((resolve) => setImmediate(resolve)); // lets a signal handler run
    }
    // both images hold the same files, those of the last revision
    const shown = {};
    for (const tool of ['petri', 'docker']) {
      const r = tools[tool].run(tools[tool].runArgs(image, fixture.show));
      if (r.status !== 0) throw new Error(`${tool} run ${image} exited ${r.status}: ${r.stderr}`);
      shown[tool] = r.stdout;
    }
    const expected = fixture.expected(revision);
    const same = shown.petri === shown.docker && shown.petri === expected;
    notes.push(
      same
        ? `${name}: both images show the same ${JSON.stringify(fixture.show.join(' ').slice(0, 40))} output (${JSON.stringify(expected.split('\n')[0])}…)`
        : `${name}: MISMATCH: petri ${JSON.stringify(shown.petri)}, docker ${JSON.stringify(shown.docker)}, expected ${JSON.stringify(expected)}`,
    );
    if (!same) failed = true;
  }
  startCosts = measureStarts();
} catch (error) {
  failed = true;
  if (!interrupted) console.error(error);
} finally {
  await cleanup();
}

if (Object.keys(results).length > 0) report();
process.exit(failed ? 1 : 0);

/**
 * Runs one build; checks its exit status and, from its plain progress, that a cold build ran every
 * step and a cached one ran none (steps that change the filesystem: RUN, COPY, ADD, WORKDIR).
 */
function build(tool, args, scenario, fixture) {
  const t = performance.now();
  const r = tools[tool].run(tools[tool].build(args));
  const ms = performance.now() - t;
  if (r.status !== 0) throw new Error(`${tool} build ${args.join(' ')} exited ${r.status}:\n${r.stderr}`);
  const steps = parseProgress(r.stderr);
  const cached = steps.filter((s) => s.cached);
  const ran = steps.filter((s) => !s.cached);
  const say = (what) => {
    const note = `${fixture} ${scenario}: ${tool} ${what}`;
    if (!notes.includes(note)) notes.push(note);
  };
  if (scenario === 'cold' && cached.length > 0) say(`reported cached: ${cached.map((s) => s.text).join('; ')}`);
  if (scenario === 'cached' && ran.length > 0) say(`did not report cached: ${ran.map((s) => s.text).join('; ')}`);
  if (scenario === 'change') say(`ran ${ran.length} of ${steps.length} steps, ${cached.length} cached`);
  return { ms, steps };
}

/** `#N [stage i/n] TEXT` names a step, `#N CACHED` marks it cached (BuildKit's plain progress, and petri's). */
function parseProgress(text) {
  const steps = new Map();
  const cached = new Set();
  for (const line of text.split('\n')) {
    const named = /^#(\d+) \[([^\]]+)\] (.*)$/.exec(line);
    if (named && named[2] !== 'internal' && /^(RUN|COPY|ADD|WORKDIR)\b/.test(named[3])) steps.set(named[1], named[3]);
    const done = /^#(\d+) CACHED$/.exec(line);
    if (done) cached.add(done[1]);
  }
  return [...steps].map(([id, text]) => ({ text, cached: cached.has(id) }));
}

/** Process start-up of each client, interleaved: what a build costs before it does anything. */
function measureStarts() {
  const withCa = { ...petriEnv, NODE_EXTRA_CA_CERTS: process.env.NODE_EXTRA_CA_CERTS };
  const commands = {
    'node -e 0': [process.execPath, ['-e', '0'], petriEnv],
    ...(process.env.NODE_EXTRA_CA_CERTS
      ? { 'node -e 0 with NODE_EXTRA_CA_CERTS': [process.execPath, ['-e', '0'], withCa] }
      : {}),
    'petri version': [bin, ['version'], petriEnv],
    'docker --version': [dockerCli, ['--version'], dockerEnv],
    'docker version (one API call)': [dockerCli, ['version', '--format', 'x'], dockerEnv],
  };
  const times = Object.fromEntries(Object.keys(commands).map((k) => [k, []]));
  for (let i = 0; i < 3 * RUNS + 2; i++) {
    for (const [name, [cmd, args, env]] of Object.entries(commands)) {
      const t = performance.now();
      const r = spawnSync(cmd, args, { stdio: 'ignore', env });
      if (i >= 2) times[name].push(performance.now() - t);
      if (r.status !== 0) throw new Error(`${name} exited ${r.status}`);
    }
  }
  return times;
}

function report() {
  const fmt = (ms) => `${ms.toFixed(0)}`.padStart(6);
  console.log(
    `\npetri build vs docker build (docker.io ${versions?.docker} BuildKit, ${versions?.driver}), ${RUNS} iterations each, ` +
      'interleaved; ms, median / mean',
  );
  console.log(
    'fixture          scenario                    petri med  mean   docker med  mean   petri/docker med  mean  target',
  );
  for (const [name, times] of Object.entries(results)) {
    for (const [key, label] of SCENARIOS) {
      const p = times[key].petri;
      const d = times[key].docker;
      if (p.length === 0 || d.length === 0) continue;
      const ratio = median(p) / median(d);
      console.log(
        `${name.padEnd(16)} ${label.padEnd(26)} ${fmt(median(p))}  ${fmt(mean(p))}   ${fmt(median(d))}  ${fmt(mean(d))}   ` +
          `${ratio.toFixed(2).padStart(10)} ${(mean(p) / mean(d)).toFixed(2).padStart(6)}  ≤ ${TARGETS[key]} ${ratio <= TARGETS[key] ? 'ok' : 'MISSED'}`,
      );
    }
  }
  console.log('\nchecks:');
  for (const note of notes) console.log(`  ${note}`);
  if (startCosts) {
    console.log('\nclient start-up (medians; petri runs without NODE_EXTRA_CA_CERTS, as in bench/lifecycle.mjs):');
    for (const [name, times] of Object.entries(startCosts))
      console.log(`  ${name.padEnd(34)} ${fmt(median(times))} ms`);
    const node = median(startCosts['node -e 0']);
    const dockerStart = median(startCosts['docker --version']);
    for (const [name, times] of Object.entries(results)) {
      if (times.cached.petri.length === 0) continue;
      const petriCached = median(times.cached.petri);
      // bin/petri replays a remembered build in C (petri-runner replay): then no Node starts at all.
      const petriPart =
        petriCached < node
          ? `petri ${fmt(petriCached)} ms in all (replayed by petri-runner, no Node started)`
          : `petri ${fmt(petriCached - node)} ms (minus node -e 0)`;
      console.log(
        `  ${name} fully cached beyond process start: ${petriPart}, ` +
          `docker ${fmt(median(times.cached.docker) - dockerStart)} ms (minus docker --version)`,
      );
      // A change only the last COPY steps read is redone by petri-runner's delta (runner/replay.c), also without Node.
      const petriChange = median(times.change.petri);
      console.log(
        `  ${name} one file changed: petri ${fmt(petriChange)} ms in all (${petriChange < node ? "redone by petri-runner's replay delta, no Node started" : 'built by Node'})`,
      );
    }
  }
}

/** Stops dockerd, removes what it left (mounts under work, its cgroups), then work itself (petri's root too). */
async function cleanup() {
  cleaned ??= (async () => {
    await dockerd.stop();
    rmSync(work, { recursive: true, force: true });
  })();
  return cleaned;
}
