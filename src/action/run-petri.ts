import { spawn } from 'node:child_process';
import { StringDecoder } from 'node:string_decoder';
import type { TestEvent } from '../test-runner/events.js';
import { asRoot, type RootAccess } from './root.js';

export interface PetriRun {
  /** petri's exit code (null when a signal ended it), and that signal. */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** The `summary` event, when petri got that far. */
  summary?: Extract<TestEvent, { type: 'summary' }>;
  runId?: string;
  /** The last lines petri wrote to stderr (its one-line errors). */
  stderrTail: string[];
}

export interface RunOptions {
  access: RootAccess;
  /** `node PETRI.cjs`. */
  petri: string[];
  args: string[];
  cwd: string;
  /** Every event, as it comes. */
  onEvent: (event: TestEvent) => void;
  /** Lines of stdout that are not events, and petri's stderr, as they come. */
  onText: (line: string, stream: 'stdout' | 'stderr') => void;
  /** Called once petri runs, with its pid (sudo's, through sudo). */
  onSpawn?: (pid: number) => void;
}

const STDERR_LINES = 20;

/**
 * Runs `petri test --reporter json …` as root and reads its events. SIGINT and
 * SIGTERM sent to the action are passed on once (petri stops its jobs and
 * still writes its reports); petri runs in its own process group, so a signal
 * to the action's group is not delivered twice.
 */
export function runPetri(options: RunOptions): Promise<PetriRun> {
  const [command, ...args] = asRoot(options.access, [...options.petri, ...options.args]) as [string, ...string[]];
  const child = spawn(command, args, {
    cwd: options.cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
    env: { ...process.env, NO_COLOR: '1' },
  });
  const run: PetriRun = { exitCode: null, signal: null, stderrTail: [] };
  const forward = (signal: NodeJS.Signals) => {
    if (child.pid === undefined || child.exitCode !== null) return;
    try {
      process.kill(child.pid, signal);
    } catch {
      // sudo runs as root: ask sudo to pass the signal on
      spawn('sudo', ['-n', 'kill', `-${signal}`, String(child.pid)], { stdio: 'ignore' }).on('error', () => {});
    }
  };
  process.on('SIGINT', forward).on('SIGTERM', forward);
  if (child.pid !== undefined) options.onSpawn?.(child.pid);
  lines(child.stdout, (line) => {
    let event: TestEvent | undefined;
    if (line.startsWith('{')) {
      try {
        event = JSON.parse(line) as TestEvent;
      } catch {
        event = undefined;
      }
    }
    if (!event || typeof event.type !== 'string') {
      options.onText(line, 'stdout');
      return;
    }
    if (event.type === 'plan') run.runId = event.runId;
    if (event.type === 'summary') run.summary = event;
    options.onEvent(event);
  });
  lines(child.stderr, (line) => {
    run.stderrTail.push(line);
    if (run.stderrTail.length > STDERR_LINES) run.stderrTail.shift();
    options.onText(line, 'stderr');
  });
  return new Promise((resolve, reject) => {
    child.on('error', (error) => {
      process.off('SIGINT', forward).off('SIGTERM', forward);
      reject(error);
    });
    child.on('close', (code, signal) => {
      process.off('SIGINT', forward).off('SIGTERM', forward);
      run.exitCode = code;
      run.signal = signal;
      resolve(run);
    });
  });
}

function lines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  const decoder = new StringDecoder('utf8');
  let pending = '';
  stream.on('data', (chunk: Buffer) => {
    pending += decoder.write(chunk);
    let newline = pending.indexOf('\n');
    while (newline >= 0) {
      onLine(pending.slice(0, newline));
      pending = pending.slice(newline + 1);
      newline = pending.indexOf('\n');
    }
  });
  stream.on('end', () => {
    pending += decoder.end();
    if (pending !== '') onLine(pending);
  });
}
