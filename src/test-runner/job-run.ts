import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { errorLine } from '../errors.js';
import { imageContainerOptions } from '../harness/image-run.js';
import type { ImageStore } from '../image/store.js';
import { Container, type ExitResult } from '../runtime/container.js';
import type { ContainerOptions } from '../runtime/options.js';
import { serverStarting } from '../runtime/runner-server.js';
import type { LayerCache } from '../snapshot/layers.js';
import { formatDuration } from '../util/units.js';
import type { TestJob } from './config-validate.js';
import { copyJobFiles } from './copy-files.js';
import type { Emit, FailureKind, JobResult, ReadyImage } from './events.js';
import type { ArtifactPlace } from './failure-artifact.js';
import { drain, LineSplitter, TailBuffer } from './output.js';

/** How much of each output stream a job keeps for its reports. */
const TAIL_BYTES = 64 * 1024;
/** PID 1 of a job with steps: holds the container (reading a stdin that stays open) while the steps run in it. */
const HOLD_COMMAND = ['sh', '-c', 'read _ || true'];

export interface JobContext {
  store: ImageStore;
  layers: LayerCache;
  runId: string;
  defaultTimeoutMs?: number;
  /** Commit a failed job's container and save it as an artifact. */
  keepFailed: boolean;
  artifacts: ArtifactPlace;
  emit: Emit;
  /** Aborted on Ctrl-C / SIGTERM: running containers are killed, jobs not started are not. */
  signal: AbortSignal;
  /**
   * Removals of finished jobs' containers: not awaited by the job (its slot
   * goes to the next one at once), but by the run before it ends.
   */
  removals: Promise<void>[];

  /** Each image's container options (layers unpacked, user resolved), made once per image, user and workdir. */
  baseOptions: Map<string, Promise<ContainerOptions>>;
}

interface Attempt {
  status: 'passed' | 'failed' | 'error' | 'interrupted';
  failure?: FailureKind;
  message: string;
  container?: Container;
  lower: string[];
  command?: string[];
  exitCode?: number;
  signal?: number | null;
  durationMs: number;
  stdout: TailBuffer;
  stderr: TailBuffer;
}

/** Runs a job (and its retries) in throwaway containers; a failure on the last attempt is committed and saved. */
export async function runJob(job: TestJob, image: ReadyImage, ctx: JobContext): Promise<JobResult> {
  const attempts = job.retries + 1;
  const timeoutMs = job.timeoutMs ?? ctx.defaultTimeoutMs;
  const started = Date.now();
  for (let attempt = 1; ; attempt++) {
    if (ctx.signal.aborted) return interruptedResult(job, attempt - 1, Date.now() - started);
    ctx.emit({ type: 'job-start', job: job.name, attempt, attempts });
    const last = attempt === attempts;
    const outcome = await runAttempt(job, image, ctx, { timeoutMs, attempt });
    const result: JobResult = {
      name: job.name,
      image: job.image,
      status: outcome.status,
      message: outcome.message,
      durationMs: Date.now() - started,
      attempts: attempt,
      stdout: outcome.stdout.text(),
      stderr: outcome.stderr.text(),
      ...(outcome.failure ? { failure: outcome.failure } : {}),
      ...(outcome.exitCode !== undefined ? { exitCode: outcome.exitCode, signal: outcome.signal ?? null } : {}),
      ...(outcome.command && outcome.status === 'failed' ? { command: outcome.command } : {}),
    };
    let retrying = false;
    try {
      if (outcome.status === 'failed' && !last && !ctx.signal.aborted) {
        ctx.emit({ type: 'job-retry', job: job.name, attempt, message: outcome.message });
        retrying = true;
        continue;
      }
      if (outcome.status === 'failed' && ctx.keepFailed && outcome.container) {
        try {
          // Loaded on the first failure (commit, diff and save are not needed before).
          const { saveFailure } = await import('./failure-artifact.js');
          result.artifact = await saveFailure(
            {
              container: outcome.container,
              lower: outcome.lower,
              job,
              runId: ctx.runId,
              image,
              command: outcome.command ?? [],
              kind: outcome.failure ?? 'exit',
              message: outcome.message,
              exitCode: outcome.exitCode ?? 1,
              signal: outcome.signal ?? null,
              durationMs: outcome.durationMs,
              attempts: attempt,
              stdout: result.stdout,
              stderr: result.stderr,
            },
            ctx.artifacts,
          );
          result.repro = result.artifact.repro;
          if (result.artifact.pushed) result.pushed = result.artifact.pushed;
          if (result.artifact.pushError) result.pushError = result.artifact.pushError;
        } catch (error) {
          result.artifactError = errorLine(error);
        }
      }
      return result;
    } finally {
      if (outcome.container) {
        const removal = outcome.container.remove();
        // Handled now (a rejection is not unhandled while it waits), reported when the run awaits the removals.
        removal.catch(() => {});
        ctx.removals.push(removal);
        // The next attempt's container takes the same name: this one must be gone first.
        if (retrying) await removal.catch(() => {});
      }
    }
  }
}

function interruptedResult(job: TestJob, attempts: number, durationMs: number): JobResult {
  return {
    name: job.name,
    image: job.image,
    status: 'interrupted',
    message: attempts === 0 ? 'interrupted before it started' : 'interrupted',
    durationMs,
    attempts,
    stdout: '',
    stderr: '',
  };
}

async function runAttempt(
  job: TestJob,
  image: ReadyImage,
  ctx: JobContext,
  { timeoutMs, attempt }: { timeoutMs: number | undefined; attempt: number },
): Promise<Attempt> {
  const stdout = new TailBuffer(TAIL_BYTES);
  const stderr = new TailBuffer(TAIL_BYTES);
  const base = { stdout, stderr, lower: [] as string[], durationMs: 0 };
  const started = Date.now();
  let options: ContainerOptions;
  let container: Container;
  try {
    const shared = await baseOptions(job, image, ctx);
    options = {
      ...shared,
      command: job.steps ? HOLD_COMMAND : (job.commands[0] as string[]),
      env: { ...shared.env, PETRI_TEST_JOB: job.name, PETRI_TEST_ATTEMPT: String(attempt), ...job.env },
      ...(job.memory !== undefined ? { memory: job.memory } : {}),
      ...(job.pids !== undefined ? { pids: job.pids } : {}),
      ...(job.cpus !== undefined ? { cpus: job.cpus } : {}),
      ...(timeoutMs !== undefined ? { timeoutMs } : {}),
      // Not kept: a failed job's exited container is committed before the job removes it.
      name: `${job.name}-${ctx.runId}`,
    };
    container = await Container.createAsync(options);
  } catch (error) {
    return { ...base, status: 'error', message: `cannot create its container: ${errorLine(error)}` };
  }
  const lower = Array.isArray(options.rootfs) ? options.rootfs : [options.rootfs];
  if (job.files.length > 0) {
    try {
      await copyJobFiles(job.files, join(container.dir, 'upper'), lower);
    } catch (error) {
      return { ...base, container, status: 'error', message: errorLine(error) };
    }
  }
  const onAbort = () => {
    if (container.state === 'running') container.kill();
  };
  ctx.signal.addEventListener('abort', onAbort);
  try {
    const sink = (stream: Readable | null, name: 'stdout' | 'stderr') =>
      collect(stream, name, job.name, ctx.emit, name === 'stdout' ? stdout : stderr);
    // The first job is forked by the fork server that is starting, rather than spawned from Node.
    await serverStarting();
    // Read the output from the start: Node discards what a child's pipes hold when it exits unread.
    const starting = container.start({ stdin: job.steps ? 'pipe' : 'ignore', stdout: 'pipe', stderr: 'pipe' });
    const drained = [sink(container.stdout, 'stdout'), sink(container.stderr, 'stderr')];
    try {
      await starting;
    } catch (error) {
      const hint = job.steps ? ' (a job with steps needs sh in its image: it holds the container between steps)' : '';
      return { ...base, container, status: 'error', message: `${errorLine(error)}${hint}` };
    }
    if (ctx.signal.aborted) onAbort();
    let command = job.commands[0] as string[];
    let stepExit: { exitCode: number; signal: number | null } | undefined;
    let stepError: string | undefined;
    if (job.steps) {
      container.stdin?.on('error', () => {});
      for (const step of job.commands) {
        command = step;
        if (container.state !== 'running') {
          stepError =
            'the container exited before it (a job with steps needs sh in its image: it holds the container between steps)';
          break;
        }
        try {
          const child = container.exec(step, { stdout: 'pipe', stderr: 'pipe' });
          const streams = [sink(child.stdout, 'stdout'), sink(child.stderr, 'stderr')];
          const exit = await child.result;
          await Promise.all(streams);
          if (exit.exitCode !== 0 || exit.signal !== null) {
            stepExit = exit;
            break;
          }
        } catch (error) {
          stepError = errorLine(error);
          break;
        }
      }
      container.stdin?.end();
    }
    const exit: ExitResult = await container.wait();
    await Promise.all(drained);
    const durationMs = job.steps ? Date.now() - started : exit.durationMs;
    const done = { ...base, container, lower, command, durationMs };
    if (ctx.signal.aborted) return { ...done, status: 'interrupted', message: 'interrupted' };
    const exitCode = stepExit?.exitCode ?? (job.steps ? 0 : exit.exitCode);
    const signal = stepExit ? stepExit.signal : job.steps ? null : exit.signal;
    const code = { exitCode, signal };
    if (exit.timedOut) {
      return {
        ...done,
        ...code,
        status: 'failed',
        failure: 'timeout',
        message: `timed out after ${formatDuration(timeoutMs ?? 0)}`,
      };
    }
    if (exit.oomKilled) {
      const limit = job.memory === undefined ? '' : ` (limit ${formatSize(job.memory)})`;
      return {
        ...done,
        ...code,
        status: 'failed',
        failure: 'oom',
        message: `killed: out of memory${limit}, exit code ${exitCode}`,
      };
    }
    if (stepError !== undefined) {
      return {
        ...done,
        status: 'error',
        message: `cannot run step ${job.commands.indexOf(command) + 1}: ${stepError}`,
      };
    }
    if (signal !== null && signal !== undefined) {
      return {
        ...done,
        ...code,
        status: 'failed',
        failure: 'signal',
        message: `killed by signal ${signal}, exit code ${exitCode}`,
      };
    }
    if (exitCode !== 0) {
      const step = job.steps ? `step ${job.commands.indexOf(command) + 1}: ` : '';
      return { ...done, ...code, status: 'failed', failure: 'exit', message: `${step}exit code ${exitCode}` };
    }
    return { ...done, ...code, status: 'passed', message: 'passed' };
  } finally {
    ctx.signal.removeEventListener('abort', onAbort);
  }
}

/**
 * What every container of an image (with this user and workdir) shares: its
 * layers, command defaults, env, workdir and user, resolved once rather than per job.
 */
function baseOptions(job: TestJob, image: ReadyImage, ctx: JobContext): Promise<ContainerOptions> {
  const key = JSON.stringify([image.ref, job.user ?? null, job.workdir ?? null]);
  let options = ctx.baseOptions.get(key);
  if (!options) {
    options = imageContainerOptions(ctx.store, ctx.layers, image.ref, {
      command: HOLD_COMMAND,
      entrypoint: [],
      ...(job.user !== undefined ? { user: job.user } : {}),
      ...(job.workdir !== undefined ? { workdir: job.workdir } : {}),
    });
    ctx.baseOptions.set(key, options);
    // A failure is reported by each job that needs it, and tried again by the next.
    options.catch(() => ctx.baseOptions.delete(key));
  }
  return options;
}

/** Keeps a stream's tail and emits its lines as output events. */
function collect(
  stream: Readable | null,
  name: 'stdout' | 'stderr',
  job: string,
  emit: Emit,
  tail: TailBuffer,
): Promise<void> {
  const decoder = new StringDecoder('utf8');
  const lines = new LineSplitter((line) => emit({ type: 'output', job, stream: name, line }));
  return drain(stream, (chunk) => {
    tail.push(chunk);
    lines.push(decoder.write(chunk));
  }).then(() => {
    lines.push(decoder.end());
    lines.end();
  });
}

export function formatSize(bytes: number): string {
  for (const [unit, size] of [
    ['g', 1024 ** 3],
    ['m', 1024 ** 2],
    ['k', 1024],
  ] as const) {
    if (bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return `${bytes}b`;
}
