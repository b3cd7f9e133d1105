import type { BuildEvent } from '../build/events.js';
import type { JobResult, TestEvent } from '../test-runner/events.js';
import { formatDuration } from '../util/units.js';

type Out = NodeJS.WritableStream & { isTTY?: boolean; columns?: number; rows?: number };

/** How often the view redraws at most (and the clock ticks). */
const FRAME_MS = 100;
/** Lines of a failed job's output shown under it. */
const FAILURE_TAIL_LINES = 10;
const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

interface Running {
  name: string;
  startedAt: number;
  attempt: number;
  attempts: number;
  lastLine: string;
}

export interface LiveOptions {
  color?: boolean;
  /** The clock (tests). */
  now?: () => number;
  /** Redraw on a timer (the elapsed times tick); tests turn it off and redraw on events only. */
  ticker?: boolean;
  /** Writes the final summary (the same table as the plain reporter's). */
  summary: (event: Extract<TestEvent, { type: 'summary' }>, paint: (code: string, text: string) => string) => string;
}

/**
 * `petri test`'s view on a terminal: finished jobs and failures scroll above
 * a status block redrawn in place at the bottom (counts of running, passed,
 * failed and queued jobs, the elapsed time, and each running job with its time
 * and last output line).
 */
export function liveReporter(out: Out, options: LiveOptions): (event: TestEvent) => void {
  const color = options.color ?? false;
  const now = options.now ?? Date.now;
  const paint = (code: string, text: string) => (color ? `\x1b[${code}m${text}\x1b[0m` : text);
  const running = new Map<string, Running>();
  const images = new Map<string, string>();
  const counts = { passed: 0, failed: 0, error: 0, interrupted: 0 };
  let total = 0;
  let parallel = 0;
  let started = now();
  let drawnLines = 0;
  let frame = 0;
  let pending: string[] = [];
  let timer: NodeJS.Timeout | undefined;
  let done = false;

  const width = () => Math.max(20, (out.columns ?? 80) - 1);
  const clip = (text: string) => {
    const max = width();
    const chars = [...text];
    return chars.length > max ? `${chars.slice(0, max - 1).join('')}…` : text;
  };

  function block(): string[] {
    const finished = counts.passed + counts.failed + counts.error + counts.interrupted;
    const queued = Math.max(0, total - finished - running.size);
    const parts = [
      `${paint('1', String(running.size))} running`,
      paint(counts.passed ? '32' : '0', `${counts.passed} passed`),
      paint(counts.failed ? '1;31' : '0', `${counts.failed} failed`),
      ...(counts.error ? [paint('1;31', `${counts.error} error${counts.error === 1 ? '' : 's'}`)] : []),
      ...(counts.interrupted ? [paint('33', `${counts.interrupted} interrupted`)] : []),
      `${queued} queued`,
    ];
    const lines = [`${parts.join(', ')} · ${finished}/${total} · ${formatDuration(now() - started)}`];
    for (const [image, status] of images) lines.push(clip(`  image ${image}: ${status}`));
    const rows = Math.max(3, (out.rows ?? 24) - 4 - lines.length);
    const jobs = [...running.values()];
    const spin = SPINNER[frame % SPINNER.length] as string;
    for (const job of jobs.slice(0, rows)) {
      const attempt = job.attempts > 1 ? ` (attempt ${job.attempt}/${job.attempts})` : '';
      const head = `  ${spin} ${job.name}${attempt} ${formatDuration(now() - job.startedAt)}`;
      const tail = job.lastLine ? `  ${job.lastLine}` : '';
      const plain = clip(`${head}${tail}`);
      lines.push(plain.startsWith(head) ? `${head}${paint('2', plain.slice(head.length))}` : plain);
    }
    if (jobs.length > rows) lines.push(`  … and ${jobs.length - rows} more`);
    return lines.map((line) => (line.length > 4 * width() ? clip(line) : line));
  }

  function draw(final = false): void {
    frame++;
    let text = drawnLines > 0 ? `\x1b[${drawnLines}A\r\x1b[J` : '';
    for (const line of pending) text += `${line}\n`;
    pending = [];
    if (final) {
      drawnLines = 0;
    } else {
      const lines = block();
      text += `${lines.join('\n')}\n`;
      drawnLines = lines.length;
    }
    out.write(text);
  }

  function schedule(): void {
    if (options.ticker === false) {
      draw();
      return;
    }
    timer ??= setInterval(() => {
      if (!done) draw();
    }, FRAME_MS);
    timer.unref?.();
  }

  function stop(): void {
    done = true;
    if (timer) clearInterval(timer);
    timer = undefined;
  }

  const print = (line: string) => {
    for (const part of line.split('\n')) pending.push(part);
  };

  function ended(result: JobResult): void {
    running.delete(result.name);
    counts[result.status]++;
    const time = formatDuration(result.durationMs);
    if (result.status === 'passed') {
      const tries = result.attempts > 1 ? ` on attempt ${result.attempts}` : '';
      print(`${paint('32', '✓')} ${result.name}${paint('2', ` ${time}${tries}`)}`);
      return;
    }
    if (result.status === 'failed') {
      print(`${paint('1;31', '✗')} ${result.name} ${paint('1;31', `FAILED: ${result.message}`)} after ${time}`);
      const output = `${result.stdout}${result.stdout && !result.stdout.endsWith('\n') ? '\n' : ''}${result.stderr}`;
      const lines = output.replace(/\n$/, '').split('\n').filter(Boolean).slice(-FAILURE_TAIL_LINES);
      for (const line of lines) print(paint('2', `    │ ${line}`));
      if (result.artifact) {
        print(`    committed ${result.artifact.image}, saved to ${result.artifact.tar}`);
        print(`    reproduce: ${result.artifact.repro}`);
      } else if (result.artifactError) {
        print(paint('31', `    could not save the failed container: ${result.artifactError}`));
      }
      if (result.pushed) print(`    pushed to ${result.pushed}`);
      else if (result.pushError) print(paint('31', `    could not push it: ${result.pushError}`));
      return;
    }
    if (result.status === 'error')
      print(`${paint('1;31', '✗')} ${result.name} ${paint('1;31', `ERROR: ${result.message}`)}`);
    else print(`${paint('33', '-')} ${result.name} ${paint('33', result.message)}`);
  }

  function buildStatus(image: string, event: BuildEvent): void {
    if (event.type !== 'step' || event.status !== 'start') return;
    images.set(image, `building ${event.stage} ${event.index}/${event.total}: ${event.text}`);
  }

  return (event: TestEvent) => {
    if (done) return;
    switch (event.type) {
      case 'plan':
        total = event.jobs.length;
        parallel = event.parallel;
        started = now();
        print(
          `petri test: ${total} job${total === 1 ? '' : 's'}, ${parallel} at a time (run ${event.runId})${event.total === total ? '' : `, ${event.total - total} not selected`}`,
        );
        break;
      case 'image':
        if (event.status === 'start') images.set(event.image, 'preparing');
        else {
          images.delete(event.image);
          if (event.status === 'ready') {
            print(
              paint(
                '2',
                `image ${event.image} ready ${event.id?.slice(7, 19)} (${formatDuration(event.durationMs ?? 0)})`,
              ),
            );
          } else print(`image ${event.image}: ${paint('1;31', `ERROR ${event.error}`)}`);
        }
        break;
      case 'build':
        buildStatus(event.image, event.event);
        break;
      case 'job-start':
        running.set(event.job, {
          name: event.job,
          startedAt: now(),
          attempt: event.attempt,
          attempts: event.attempts,
          lastLine: '',
        });
        break;
      case 'output': {
        const job = running.get(event.job);
        // Control characters would move the cursor under the view.
        // biome-ignore lint/suspicious/noControlCharactersInRegex: they are what is replaced
        if (job && event.line.trim()) job.lastLine = event.line.replace(/[\x00-\x1f\x7f]/g, ' ').trim();
        break;
      }
      case 'job-retry':
        print(
          `${paint('33', '↻')} ${event.job} ${paint('33', `attempt ${event.attempt} failed (${event.message}): retrying`)}`,
        );
        break;
      case 'job-end':
        ended(event.result);
        break;
      case 'interrupt':
        print(
          paint(
            '33',
            `petri test: ${event.signal}: stopping the jobs and removing their containers (send it again to quit at once)`,
          ),
        );
        break;
      case 'summary':
        stop();
        running.clear();
        draw(true);
        out.write(`\n${options.summary(event, paint)}`);
        if (event.junit) out.write(`JUnit report: ${event.junit}\n`);
        return;
    }
    schedule();
  };
}
