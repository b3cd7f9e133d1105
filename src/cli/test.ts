import { resolve } from 'node:path';
import { PetriError } from '../errors.js';
import { parseDuration } from '../util/units.js';
import { type OptionSpec, parseArgs } from './args.js';

export const HELP = `usage: petri test [options]

Builds the images of petri.config.{js,mjs,json,yaml,yml} (cached), then runs
its jobs in parallel throwaway containers. A job that fails (non-zero exit,
timeout, out of memory) is committed to an image petri-failed/<job>:<run-id>
and saved to ARTIFACTS/<job>.tar with a report; the command that reproduces it
is printed. Exits 1 when a job failed or could not run, 130 when interrupted.

  --config FILE          the config (default: petri.config.* in the current directory)
  --filter PATTERN       only the jobs whose name or a tag contains PATTERN, or
                         matches it as a glob (*, ?, [..]); repeatable (any matches)
  --parallel N           jobs at once (default: the CPUs + 1, fewer when the
                         jobs' memory limits do not fit in free memory)
  --shard I/N            only the I-th of N stable parts (by a hash of each job's name)
  --timeout DURATION     timeout of the jobs that set none (default: none)
  --junit FILE           write a JUnit XML report
  --artifacts DIR        where failed jobs' archives and reports go (default: petri-artifacts)
  --keep-failed          commit and save failed jobs' containers (the default)
  --no-keep-failed       do not: remove them like the others
  --reporter MODE        auto (default: a live view on a terminal, plain lines
                         elsewhere), plain (prefixed lines), json (one event per line)
  --push-failed REGISTRY/REPO
                         also push each failed job's committed image, as
                         REGISTRY/REPO:<job>-<run-id> (in the reports and JUnit)
  --pull POLICY          images not in the store (a job's image, a build's base):
                         missing (default: pull them), always, never
  --insecure-registry HOST
                         allow plain HTTP or any TLS certificate for HOST (repeatable)
`;

const SPECS: OptionSpec[] = [
  { name: 'config', value: true },
  { name: 'filter', value: true, multiple: true },
  { name: 'parallel', value: true },
  { name: 'shard', value: true },
  { name: 'timeout', value: true },
  { name: 'junit', value: true },
  { name: 'artifacts', value: true },
  { name: 'keep-failed' },
  { name: 'no-keep-failed' },
  { name: 'reporter', value: true },
  { name: 'push-failed', value: true },
  { name: 'pull', value: true },
  { name: 'insecure-registry', value: true, multiple: true },
  { name: 'help' },
];

export async function main(argv: string[]): Promise<number> {
  const { options, rest } = parseArgs('test', argv, SPECS);
  if (options.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (rest.length > 0) throw new PetriError(`petri test: unexpected argument ${rest[0]} (see petri test --help)`);
  const str = (key: string) => (typeof options[key] === 'string' ? (options[key] as string) : undefined);
  const [{ loadConfig, findConfig }, { selectJobs, parseShard }, { consoleReporter, REPORTER_MODES }] =
    await Promise.all([
      import('../test-runner/config-load.js'),
      import('../test-runner/select.js'),
      import('../report/console.js'),
    ]);
  const mode = str('reporter') ?? 'auto';
  if (!(REPORTER_MODES as readonly string[]).includes(mode)) {
    throw new PetriError(`petri test: invalid --reporter ${mode}: expected one of ${REPORTER_MODES.join(', ')}`);
  }
  const parallelText = str('parallel');
  if (parallelText !== undefined && (!/^\d+$/.test(parallelText) || Number(parallelText) < 1)) {
    throw new PetriError(`petri test: invalid --parallel ${parallelText}: expected a positive integer`);
  }
  const timeout = str('timeout');
  const defaultTimeoutMs = timeout === undefined ? undefined : parseDuration(timeout, '--timeout');
  const shardText = str('shard');
  const shard = shardText === undefined ? undefined : parseShard(shardText);
  if (options['keep-failed'] && options['no-keep-failed']) {
    throw new PetriError('petri test: --keep-failed and --no-keep-failed contradict each other');
  }
  const pull = str('pull');
  if (pull !== undefined && !['missing', 'always', 'never'].includes(pull)) {
    throw new PetriError(`petri test: invalid --pull ${pull}: expected one of missing, always, never`);
  }
  const pushFailed = str('push-failed');
  if (pushFailed !== undefined) {
    const last = pushFailed.split('/').at(-1) ?? '';
    if (!pushFailed.includes('/') || last.includes(':') || last.includes('@') || pushFailed.endsWith('/')) {
      throw new PetriError(
        `petri test: invalid --push-failed ${pushFailed}: expected REGISTRY/REPO without a tag (each image is tagged <job>-<run-id>)`,
      );
    }
    if (options['no-keep-failed']) {
      throw new PetriError('petri test: --push-failed pushes the images --no-keep-failed does not commit: drop one');
    }
  }
  if (process.getuid?.() !== 0) {
    throw new PetriError('petri test must run as root to create containers (namespaces, mounts, cgroups); try sudo');
  }

  const config = await loadConfig(str('config') ?? findConfig(process.cwd()));
  const filters = (options.filter as string[] | undefined) ?? [];
  if (filters.length > 0 && selectJobs(config.jobs, filters).length === 0) {
    throw new PetriError(
      `petri test: no job matches --filter ${filters.join(', ')} (jobs: ${config.jobs.map((j) => j.name).join(', ')})`,
    );
  }
  const jobs = selectJobs(config.jobs, filters, shard);
  const emit = consoleReporter(mode as 'auto' | 'plain' | 'json');
  if (jobs.length === 0) {
    process.stdout.write(`petri test: no job in shard ${shardText}: nothing to do\n`);
    return 0;
  }

  const controller = new AbortController();
  let signalled: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) {
      process.stderr.write(
        `petri test: ${signal} again: quitting now; the containers die with petri (see petri ps -a for any left to petri rm)\n`,
      );
      process.exit(signal === 'SIGINT' ? 130 : 143);
    }
    signalled = signal;
    emit({ type: 'interrupt', signal });
    controller.abort();
  };
  process.on('SIGINT', onSignal).on('SIGTERM', onSignal);
  try {
    const artifactsShown = str('artifacts') ?? 'petri-artifacts';
    const { runTests } = await import('../test-runner/run-tests.js');
    const run = await runTests({
      config,
      jobs,
      ...(parallelText !== undefined ? { parallel: Number(parallelText) } : {}),
      ...(defaultTimeoutMs !== undefined ? { defaultTimeoutMs } : {}),
      keepFailed: !options['no-keep-failed'],
      registry: {
        ...(pull !== undefined ? { pull: pull as 'missing' | 'always' | 'never' } : {}),
        insecureRegistries: (options['insecure-registry'] as string[] | undefined) ?? [],
      },
      ...(pushFailed !== undefined ? { pushFailed } : {}),
      artifactsDir: resolve(artifactsShown),
      artifactsShown,
      emit,
      signal: controller.signal,
    });
    const junit = str('junit');
    if (junit !== undefined) {
      const { writeJunit } = await import('../report/junit.js');
      writeJunit(resolve(junit), run);
    }
    emit({
      type: 'summary',
      runId: run.runId,
      results: run.results,
      durationMs: run.durationMs,
      ...(junit !== undefined ? { junit } : {}),
    });
    if (signalled) return signalled === 'SIGINT' ? 130 : 143;
    return run.results.every((result) => result.status === 'passed') ? 0 : 1;
  } finally {
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
  }
}
