import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { consoleReporter } from '../src/report/console.js';
import { liveReporter } from '../src/report/live.js';
import type { JobResult, TestEvent } from '../src/test-runner/events.js';

/** A stream that says it is a terminal, and keeps what is written to it. */
function fakeTty(columns = 60, rows = 20) {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      chunks.push(String(chunk));
      callback();
    },
  }) as Writable & { isTTY: boolean; columns: number; rows: number };
  stream.isTTY = true;
  stream.columns = columns;
  stream.rows = rows;
  return { stream, text: () => chunks.join(''), chunks };
}

/** What a terminal shows after the writes: applies \r, cursor-up (ESC[nA) and erase-below (ESC[J). */
function screen(text: string): string[] {
  const lines: string[] = [''];
  let row = 0;
  const ESC = String.fromCharCode(27);
  const tokens = text.split(new RegExp(`(${ESC}\\[\\d*[A-Za-z]|\r|\n)`));
  for (const token of tokens) {
    if (!token) continue;
    const csi = new RegExp(`^${ESC}\\[(\\d*)([A-Za-z])$`).exec(token);
    if (csi) {
      if (csi[2] === 'A') row = Math.max(0, row - Number(csi[1] || 1));
      if (csi[2] === 'J') {
        lines.splice(row + 1);
        lines[row] = '';
      }
      continue;
    }
    if (token === '\r') continue;
    if (token === '\n') {
      row++;
      if (lines.length <= row) lines.push('');
      continue;
    }
    lines[row] = (lines[row] ?? '') + token;
  }
  return lines.filter((line, i) => line !== '' || i < lines.length - 1);
}

const result = (name: string, status: JobResult['status'], extra: Partial<JobResult> = {}): JobResult => ({
  name,
  image: 'bb',
  status,
  message: status === 'passed' ? 'passed' : 'exit code 3',
  durationMs: 1200,
  attempts: 1,
  stdout: '',
  stderr: '',
  ...extra,
});

describe('petri test live view (a terminal)', () => {
  it('redraws the counts, the elapsed time and the running jobs in place; finished jobs scroll above', () => {
    const tty = fakeTty();
    let clock = 1000;
    const emit = liveReporter(tty.stream, {
      now: () => clock,
      ticker: false,
      summary: (event) => `SUMMARY ${event.results.length}\n`,
    });
    emit({
      type: 'plan',
      runId: 'r1',
      jobs: ['a', 'b', 'c'].map((name) => ({ name, image: 'bb' })),
      total: 3,
      parallel: 2,
    });
    emit({ type: 'job-start', job: 'a', attempt: 1, attempts: 1 });
    emit({ type: 'job-start', job: 'b', attempt: 1, attempts: 1 });
    clock += 2500;
    emit({ type: 'output', job: 'b', stream: 'stdout', line: 'compiling \x1b[31mthings' });
    let shown = screen(tty.text());
    expect(shown[0]).toMatch(/^petri test: 3 jobs, 2 at a time/);
    expect(shown).toContainEqual(expect.stringMatching(/^2 running, 0 passed, 0 failed, 1 queued · 0\/3 · 2\.50s$/));
    expect(shown).toContainEqual(expect.stringMatching(/^ {2}\S a 2\.50s$/));
    expect(shown).toContainEqual(expect.stringMatching(/^ {2}\S b 2\.50s {2}compiling {2}\[31mthings$/));
    // Redrawn in place: the status line is on the screen once, however many times it was drawn.
    expect(tty.text().match(/running, /g)?.length).toBeGreaterThan(1);
    expect(shown.filter((line) => line.includes('running, '))).toHaveLength(1);

    emit({ type: 'job-end', result: result('a', 'passed') });
    emit({ type: 'job-start', job: 'c', attempt: 1, attempts: 1 });
    emit({
      type: 'job-end',
      result: result('b', 'failed', { stdout: 'line 1\nline 2\n', stderr: 'boom\n', repro: 'petri repro x.tar' }),
    });
    shown = screen(tty.text());
    expect(shown).toContain('✓ a 1.20s');
    expect(shown).toContain('✗ b FAILED: exit code 3 after 1.20s');
    expect(shown).toContain('    │ boom');
    expect(shown).toContainEqual(expect.stringMatching(/^1 running, 1 passed, 1 failed, 0 queued · 2\/3/));
    expect(shown.at(-1)).toMatch(/ c 0ms$/);
    // Nothing is wider than the terminal (a wrapped line would break the redraw).
    for (const line of shown) expect([...line].length).toBeLessThan(60);

    emit({ type: 'job-end', result: result('c', 'passed') });
    emit({ type: 'summary', runId: 'r1', results: [], durationMs: 5000 });
    shown = screen(tty.text());
    expect(shown.some((line) => line.includes('running, '))).toBe(false);
    expect(shown.at(-1)).toBe('SUMMARY 0');
    expect(shown.filter((line) => /^[✓✗]/.test(line))).toEqual([
      '✓ a 1.20s',
      '✗ b FAILED: exit code 3 after 1.20s',
      '✓ c 1.20s',
    ]);
  });

  it('lists only as many running jobs as the terminal has rows for', () => {
    const tty = fakeTty(80, 10);
    const emit = liveReporter(tty.stream, { ticker: false, summary: () => '' });
    const names = Array.from({ length: 12 }, (_, i) => `job-${i}`);
    emit({ type: 'plan', runId: 'r', jobs: names.map((name) => ({ name, image: 'bb' })), total: 12, parallel: 12 });
    for (const job of names) emit({ type: 'job-start', job, attempt: 1, attempts: 1 });
    const shown = screen(tty.text());
    expect(shown.at(-1)).toBe('  … and 7 more');
    expect(shown.length).toBeLessThanOrEqual(10);
  });

  it('auto: the live view on a terminal, prefixed plain lines elsewhere', () => {
    const events: TestEvent[] = [
      { type: 'plan', runId: 'r', jobs: [{ name: 'a', image: 'bb' }], total: 1, parallel: 1 },
      { type: 'job-start', job: 'a', attempt: 1, attempts: 1 },
      { type: 'output', job: 'a', stream: 'stdout', line: 'hello' },
      { type: 'job-end', result: result('a', 'passed') },
      { type: 'summary', runId: 'r', results: [result('a', 'passed')], durationMs: 1200 },
    ];
    const tty = fakeTty();
    const emitTty = consoleReporter('auto', tty.stream, tty.stream);
    for (const event of events) emitTty(event);
    expect(screen(tty.text())).toContainEqual(expect.stringContaining('a 1.20s'));
    expect(tty.text()).not.toContain('[a] hello');

    const plain = fakeTty();
    plain.stream.isTTY = false;
    const emitPlain = consoleReporter('auto', plain.stream, plain.stream);
    for (const event of events) emitPlain(event);
    expect(plain.text()).toContain('[a] hello');
    expect(plain.text()).not.toContain('\x1b[');
  });
});
