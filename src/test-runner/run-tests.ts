import { randomBytes } from 'node:crypto';
import { availableParallelism, freemem } from 'node:os';
import pLimit from 'p-limit';
import { ImageStore } from '../image/store.js';
import { holdCgroupParents, killCgroups } from '../runtime/cgroups/index.js';
import { listRecords } from '../runtime/record.js';
import { useRunnerServer } from '../runtime/runner-server.js';
import { LayerCache } from '../snapshot/layers.js';
import type { TestConfig, TestJob } from './config-validate.js';
import type { Emit, JobResult, ReadyImage } from './events.js';
import { ImageError, prepareImage, type RegistryAccess } from './images.js';
import { type JobContext, runJob } from './job-run.js';

/** What a job without a memory limit is assumed to need when the default parallelism is worked out. */
const ASSUMED_JOB_MEMORY = 256 * 1024 ** 2;

export interface TestRunOptions {
  config: TestConfig;
  /** The jobs to run (already filtered and sharded). */
  jobs: TestJob[];
  parallel?: number;
  defaultTimeoutMs?: number;
  keepFailed: boolean;
  /** Artifacts directory: absolute, and as given. */
  artifactsDir: string;
  artifactsShown: string;
  emit: Emit;
  /** Aborted on Ctrl-C / SIGTERM. */
  signal: AbortSignal;
  store?: ImageStore;
  /** Pull policy and insecure registries for the jobs' images and the builds' base images. */
  registry?: RegistryAccess;
  /** Push each failed job's committed image to this repository (`REGISTRY/REPO`), tagged `<job>-<run-id>`. */
  pushFailed?: string;
}

export interface TestRun {
  runId: string;
  startedAt: Date;
  results: JobResult[];
  images: Map<string, ReadyImage>;
  durationMs: number;
}

/** `20261123-162600-3fa1`: when the run started (UTC), and a random part. */
export function newRunId(now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  return `${stamp}-${randomBytes(2).toString('hex')}`;
}

/**
 * How many jobs run at once by default: one more than the CPUs (a job also
 * waits — for its container's setup and teardown in the kernel, for I/O — and
 * the extra one fills those gaps: 200 jobs of `true` on 2 CPUs run ~15% faster
 * at 3 than at 2), fewer when the memory they may use (their limits, or 256 MiB
 * each without one) does not fit in the memory free now.
 */
export function defaultParallelism(jobs: TestJob[], cpus = availableParallelism(), free = freemem()): number {
  const perJob = Math.max(ASSUMED_JOB_MEMORY, ...jobs.map((job) => job.memory ?? 0));
  const byMemory = Math.floor(free / perJob);
  return Math.max(1, Math.min(cpus + 1, byMemory, jobs.length || 1));
}

/**
 * Builds (or finds) the images the jobs need, then runs the jobs, at most
 * `parallel` at once, each as soon as its image is ready. A job whose image
 * could not be had is an error; when `signal` aborts, running containers are
 * killed (builds' too), and every job that had not finished is interrupted.
 */
export async function runTests(options: TestRunOptions): Promise<TestRun> {
  const { config, jobs, emit, signal } = options;
  const startedAt = new Date();
  const runId = newRunId(startedAt);
  // Jobs' runners are forked by one fork server, not by this (big) Node process.
  if (process.env.PETRI_RUNNER_SERVER !== '0') useRunnerServer();
  const parallel = options.parallel ?? defaultParallelism(jobs);
  emit({
    type: 'plan',
    runId,
    jobs: jobs.map((job) => ({ name: job.name, image: job.image })),
    total: config.jobs.length,
    parallel,
  });
  const store = options.store ?? ImageStore.open();
  const layers = new LayerCache();
  // Until the run ends, keep killing what this process starts: a build's next RUN step, a job's container.
  let killer: NodeJS.Timeout | undefined;
  const killBuilds = () => {
    killOwnContainers();
    killer ??= setInterval(killOwnContainers, 100).unref();
  };
  signal.addEventListener('abort', killBuilds);
  const releaseCgroupParents = holdCgroupParents();
  try {
    const images = new Map<string, ReadyImage>();
    const preparing = new Map<string, Promise<ReadyImage>>();
    for (const name of new Set(jobs.map((job) => job.image))) {
      const image = config.images.get(name);
      if (!image) continue;
      const started = Date.now();
      emit({ type: 'image', image: name, status: 'start' });
      const promise = prepareImage(
        image,
        store,
        layers,
        (event) => emit({ type: 'build', image: name, event }),
        options.registry,
      ).then(
        (ready) => {
          images.set(name, ready);
          emit({ type: 'image', image: name, status: 'ready', id: ready.id, durationMs: Date.now() - started });
          return ready;
        },
        (error: unknown) => {
          const message = signal.aborted ? 'interrupted' : (error as Error).message;
          emit({ type: 'image', image: name, status: 'error', error: message, durationMs: Date.now() - started });
          throw error;
        },
      );
      promise.catch(() => {});
      preparing.set(name, promise);
    }
    const context: JobContext = {
      store,
      layers,
      runId,
      keepFailed: options.keepFailed,
      artifacts: {
        store,
        dir: options.artifactsDir,
        shown: options.artifactsShown,
        ...(options.pushFailed !== undefined
          ? { push: failedImagePusher(store, options.pushFailed, runId, options.registry?.insecureRegistries ?? []) }
          : {}),
      },
      emit,
      signal,
      removals: [],
      baseOptions: new Map(),
      ...(options.defaultTimeoutMs !== undefined ? { defaultTimeoutMs: options.defaultTimeoutMs } : {}),
    };
    const limit = pLimit(parallel);
    const ran = await Promise.allSettled(
      jobs.map(async (job) => {
        const result = await runWhenReady(job, preparing.get(job.image), limit, context);
        emit({ type: 'job-end', result });
        return result;
      }),
    );
    // The containers' removals, deferred by the jobs: nothing is left behind when the run ends.
    const removed = await Promise.allSettled(context.removals);
    const failure = [...ran, ...removed].find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
    if (failure) throw failure.reason;
    const results = ran.map((r) => (r as PromiseFulfilledResult<JobResult>).value);
    return { runId, startedAt, results, images, durationMs: Date.now() - startedAt.getTime() };
  } finally {
    releaseCgroupParents();
    signal.removeEventListener('abort', killBuilds);
    clearInterval(killer);
  }
}

async function runWhenReady(
  job: TestJob,
  image: Promise<ReadyImage> | undefined,
  limit: ReturnType<typeof pLimit>,
  context: JobContext,
): Promise<JobResult> {
  const base = { name: job.name, image: job.image, durationMs: 0, attempts: 0, stdout: '', stderr: '' };
  let ready: ReadyImage;
  try {
    if (!image) throw new ImageError(`image ${job.image} is not in the config`);
    ready = await image;
  } catch (error) {
    if (context.signal.aborted) return { ...base, status: 'interrupted', message: 'interrupted before it started' };
    return { ...base, status: 'error', message: error instanceof ImageError ? error.message : String(error) };
  }
  return limit(() => runJob(job, ready, context));
}

/** The reference a failed job's image is pushed as (`--push-failed REGISTRY/REPO`): `REGISTRY/REPO:<job>-<run-id>`. */
export function pushedReference(repository: string, job: string, runId: string): string {
  return `${repository}:${job}-${runId}`;
}

/** Pushes a failed job's committed image to `repository`; resolves to `REGISTRY/REPO:TAG@DIGEST`. */
function failedImagePusher(store: ImageStore, repository: string, runId: string, insecureRegistries: string[]) {
  return async (image: string, job: string): Promise<string> => {
    const { pushImage } = await import('../image/registry/push.js');
    const pushed = await pushImage(store, image, pushedReference(repository, job, runId), { insecureRegistries });
    return `${pushed.reference}@${pushed.digest}`;
  };
}

/** Kills every running container this process owns (a build's RUN steps included): they then fail and are removed. */
function killOwnContainers(): void {
  for (const record of listRecords()) {
    if (record.owner.pid === process.pid && record.state === 'running') killCgroups(record.cgroupDirs);
  }
}
