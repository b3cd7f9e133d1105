import { randomBytes } from 'node:crypto';
import { availableParallelism, freemem } from 'node:os';
import pLimit from 'p-limit';
import { ImageStore } from '../image/store.js';
import { killCgroups } from '../runtime/cgroups/index.js';
import { listRecords } from '../runtime/record.js';
import { LayerCache } from '../snapshot/layers.js';
import type { TestConfig, TestJob } from './config-validate.js';
import type { Emit, JobResult, ReadyImage } from './events.js';
import { ImageError, prepareImage } from './images.js';
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
 * How many jobs run at once by default: one per CPU, fewer when the memory
 * they may use (their limits, or 256 MiB each without one) does not fit in
 * the memory free now.
 */
export function defaultParallelism(jobs: TestJob[], cpus = availableParallelism(), free = freemem()): number {
  const perJob = Math.max(ASSUMED_JOB_MEMORY, ...jobs.map((job) => job.memory ?? 0));
  const byMemory = Math.floor(free / perJob);
  return Math.max(1, Math.min(cpus, byMemory, jobs.length || 1));
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
  try {
    const images = new Map<string, ReadyImage>();
    const preparing = new Map<string, Promise<ReadyImage>>();
    for (const name of new Set(jobs.map((job) => job.image))) {
      const image = config.images.get(name);
      if (!image) continue;
      const started = Date.now();
      emit({ type: 'image', image: name, status: 'start' });
      const promise = prepareImage(image, store, layers, (event) => emit({ type: 'build', image: name, event })).then(
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
      artifacts: { store, dir: options.artifactsDir, shown: options.artifactsShown },
      emit,
      signal,
      ...(options.defaultTimeoutMs !== undefined ? { defaultTimeoutMs: options.defaultTimeoutMs } : {}),
    };
    const limit = pLimit(parallel);
    const results = await Promise.all(
      jobs.map(async (job) => {
        const result = await runWhenReady(job, preparing.get(job.image), limit, context);
        emit({ type: 'job-end', result });
        return result;
      }),
    );
    return { runId, startedAt, results, images, durationMs: Date.now() - startedAt.getTime() };
  } finally {
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

/** Kills every running container this process owns (a build's RUN steps included): they then fail and are removed. */
function killOwnContainers(): void {
  for (const record of listRecords()) {
    if (record.owner.pid === process.pid && record.state === 'running') killCgroups(record.cgroupDirs);
  }
}
