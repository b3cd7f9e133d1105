import type { BuildEvent } from '../build/events.js';
import { progressRenderer } from '../build/progress.js';
import { table } from '../cli/format.js';
import type { Emit, JobResult, TestEvent } from '../test-runner/events.js';
import { formatDuration } from '../util/units.js';
import { liveReporter } from './live.js';

export type ReporterMode = 'auto' | 'plain' | 'json';
export const REPORTER_MODES: readonly ReporterMode[] = ['auto', 'plain', 'json'];

type Out = NodeJS.WritableStream & { isTTY?: boolean };

/**
 * How `petri test` shows a run:
 * - `auto` on a terminal: a live view (liveReporter): finished jobs scroll above
 *   a status block redrawn in place (counts, elapsed time, the running jobs);
 * - `plain` (and `auto` elsewhere): every line prefixed with its job (`[unit] …`),
 *   so that jobs running at once stay readable in a CI log; the job's stdout on
 *   stdout, its stderr on stderr; a summary table at the end;
 * - `json`: one event per line on stdout (the TestEvent types), for tools.
 */
export function consoleReporter(mode: ReporterMode, out: Out = process.stdout, err: Out = process.stderr): Emit {
  if (mode === 'json') return (event) => out.write(`${JSON.stringify(event)}\n`);
  const color = out.isTTY === true && !process.env.NO_COLOR;
  if (mode === 'auto' && out.isTTY === true) {
    return liveReporter(out, {
      color,
      summary: (event, paint) => summary(event.results, event.durationMs, event.runId, paint),
    });
  }
  const paint = (code: string, text: string) => (color ? `\x1b[${code}m${text}\x1b[0m` : text);
  let width = 0;
  const prefix = (name: string) => paint('2', `[${name}]`.padEnd(width + 2));
  const builds = new Map<string, (event: BuildEvent) => void>();
  const buildRenderer = (image: string) => {
    let renderer = builds.get(image);
    if (!renderer) {
      const lines = {
        write: (text: string) => {
          for (const line of text.replace(/\n$/, '').split('\n')) err.write(`${prefix(`image ${image}`)} ${line}\n`);
        },
      };
      renderer = progressRenderer('plain', lines);
      builds.set(image, renderer);
    }
    return renderer;
  };

  return (event: TestEvent) => {
    switch (event.type) {
      case 'plan': {
        width = Math.min(24, Math.max(0, ...event.jobs.map((job) => job.name.length)));
        const of = event.total === event.jobs.length ? '' : ` of ${event.total}`;
        out.write(
          `petri test: ${event.jobs.length}${of} job${event.jobs.length === 1 ? '' : 's'}, ${event.parallel} at a time (run ${event.runId})\n`,
        );
        break;
      }
      case 'image':
        if (event.status === 'start') err.write(`${prefix(`image ${event.image}`)} preparing\n`);
        else if (event.status === 'ready') {
          err.write(
            `${prefix(`image ${event.image}`)} ready ${event.id?.slice(7, 19)} (${formatDuration(event.durationMs ?? 0)})\n`,
          );
        } else err.write(`${prefix(`image ${event.image}`)} ${paint('31', `ERROR ${event.error}`)}\n`);
        break;
      case 'build':
        buildRenderer(event.image)(event.event);
        break;
      case 'job-start':
        out.write(
          `${prefix(event.job)} started${event.attempts > 1 ? ` (attempt ${event.attempt}/${event.attempts})` : ''}\n`,
        );
        break;
      case 'output':
        (event.stream === 'stdout' ? out : err).write(`${prefix(event.job)} ${event.line}\n`);
        break;
      case 'job-retry':
        out.write(
          `${prefix(event.job)} ${paint('33', `attempt ${event.attempt} failed (${event.message}): retrying`)}\n`,
        );
        break;
      case 'job-end':
        writeEnd(event.result);
        break;
      case 'interrupt':
        err.write(
          `petri test: ${event.signal}: stopping the jobs and removing their containers (send it again to quit at once)\n`,
        );
        break;
      case 'summary':
        out.write(`\n${summary(event.results, event.durationMs, event.runId, paint)}`);
        if (event.junit) out.write(`JUnit report: ${event.junit}\n`);
        break;
    }
  };

  function writeEnd(result: JobResult): void {
    const p = prefix(result.name);
    const time = formatDuration(result.durationMs);
    if (result.status === 'passed') {
      const tries = result.attempts > 1 ? ` on attempt ${result.attempts}` : '';
      out.write(`${p} ${paint('32', `passed${tries}`)} in ${time}\n`);
    } else if (result.status === 'failed') {
      out.write(`${p} ${paint('1;31', `FAILED: ${result.message}`)} after ${time}\n`);
      if (result.artifact) {
        out.write(
          `${p} committed ${result.artifact.image}, saved to ${result.artifact.tar} (report ${result.artifact.markdown})\n`,
        );
        out.write(`${p} reproduce: ${result.artifact.repro}\n`);
        if (result.pushed) out.write(`${p} pushed to ${result.pushed}\n`);
        else if (result.pushError) out.write(`${p} ${paint('31', `could not push it: ${result.pushError}`)}\n`);
      } else if (result.artifactError) {
        out.write(`${p} ${paint('31', `could not save the failed container: ${result.artifactError}`)}\n`);
      }
    } else if (result.status === 'error') {
      out.write(`${p} ${paint('1;31', `ERROR: ${result.message}`)}\n`);
    } else {
      out.write(`${p} ${paint('33', result.message)}\n`);
    }
  }
}

const STATUS_WORD: Record<JobResult['status'], string> = {
  passed: 'passed',
  failed: 'FAILED',
  error: 'ERROR',
  interrupted: 'interrupted',
};

/** The table at the end of a run, the totals, and how to reproduce each failure. */
export function summary(
  results: JobResult[],
  durationMs: number,
  runId: string,
  paint: (code: string, text: string) => string = (_, text) => text,
): string {
  const rows = results.map((r) => [
    r.name,
    r.image,
    STATUS_WORD[r.status],
    formatDuration(r.durationMs),
    String(r.attempts),
    r.status === 'passed' ? '' : r.message,
  ]);
  const count = (status: JobResult['status']) => results.filter((r) => r.status === status).length;
  const totals = [
    `${count('passed')} passed`,
    `${count('failed')} failed`,
    ...(count('error') ? [`${count('error')} error${count('error') === 1 ? '' : 's'}`] : []),
    ...(count('interrupted') ? [`${count('interrupted')} interrupted`] : []),
  ].join(', ');
  const ok = count('passed') === results.length;
  let text = table(['JOB', 'IMAGE', 'STATUS', 'TIME', 'ATTEMPTS', 'DETAIL'], rows);
  text += `${paint(ok ? '1;32' : '1;31', totals)} in ${formatDuration(durationMs)} (run ${runId})\n`;
  for (const r of results) if (r.repro) text += `reproduce ${r.name}: ${r.repro}\n`;
  return text;
}
