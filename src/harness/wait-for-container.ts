import type { ExitResult } from '../runtime/container.js';
import { formatDuration } from '../util/units.js';
import {
  describeExit,
  StartupError,
  WaitFailure,
  type WaitProgress,
  type WaitStrategy,
  type WaitTarget,
} from './wait-strategies.js';

const LOG_LINES = 20;

/**
 * Waits until `strategy` says the container is ready. Fails (StartupError) when
 * it times out, when the strategy gives up, or when the container's command
 * ends first (unless the strategy waits for exactly that): the message names
 * the strategy, how long it waited, the container's exit status if it exited,
 * and its last log lines.
 */
export async function waitForContainer(
  strategy: WaitStrategy,
  target: WaitTarget,
  image: string,
  timeout = strategy.timeout,
): Promise<void> {
  const started = performance.now();
  const controller = new AbortController();
  let exit: ExitResult | undefined;
  void target.exited.then((result) => {
    exit = result;
  });
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<{ kind: 'timeout' }>((resolve) => {
    timer = setTimeout(() => resolve({ kind: 'timeout' }), timeout);
  });
  const exited = strategy.acceptsExit
    ? new Promise<never>(() => {})
    : target.exited.then(() => ({ kind: 'exited' as const }));
  const report: WaitProgress = {};
  const ready = strategy.waitUntilReady(target, controller.signal, report).then(
    () => ({ kind: 'ready' as const }),
    (error: unknown) => {
      if (error instanceof WaitFailure) return { kind: 'failed' as const, reason: error.message };
      throw error;
    },
  );
  let outcome: Awaited<typeof ready | typeof timedOut | typeof exited>;
  let progress: string | undefined;
  try {
    outcome = await Promise.race([ready, timedOut, exited]);
    progress = report.text; // before the abort ends what is still waiting
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
  if (outcome.kind === 'ready') return;
  const waited = performance.now() - started;
  if (outcome.kind === 'exited' || exit === undefined) {
    // Let an exit that is happening now show in the message.
    await Promise.race([target.exited, new Promise((resolve) => setTimeout(resolve, 50))]);
  }
  const what =
    outcome.kind === 'timeout'
      ? `timed out after ${formatDuration(waited)}${progress ? ` (${progress})` : ''}`
      : outcome.kind === 'exited'
        ? `stopped after ${formatDuration(waited)}, as the container's command ended${progress ? ` (${progress})` : ''}`
        : `failed after ${formatDuration(waited)}: ${outcome.reason}`;
  const status = exit ? `the container exited with ${describeExit(exit)}` : 'the container is still running';
  const tail = target.logs.tail(LOG_LINES);
  const logs = tail.length
    ? `; its last log lines:\n${tail.map((line) => `  ${line}`).join('\n')}`
    : '; it wrote nothing to stdout or stderr';
  throw new StartupError(
    `container ${target.name} (image ${image}) did not start: waiting for ${strategy.describe()} ${what}; ${status}${logs}`,
    strategy.describe(),
    Math.round(waited),
    exit,
    tail,
  );
}
