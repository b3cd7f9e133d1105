import { Readable } from 'node:stream';
import type { LogOptions } from './types.js';

interface Chunk {
  stream: 'stdout' | 'stderr';
  data: Buffer;
  /** Milliseconds since the epoch. */
  at: number;
}

/** What a container's logs keep at most; older output is dropped first. */
const MAX_BYTES = 64 * 1024 * 1024;

/**
 * A container's output (stdout and stderr, in the order it came) since it was
 * created, across restarts: for `logs()` streams, wait strategies (lines) and
 * error messages (the last lines).
 */
export class LogBuffer {
  readonly #chunks: Chunk[] = [];
  #bytes = 0;
  /** Complete lines, both streams, with the index of the run (start) they belong to. */
  readonly #lines: { text: string; run: number }[] = [];
  readonly #partial = { stdout: '', stderr: '' };
  readonly #lineListeners = new Set<(line: string) => void>();
  readonly #followers = new Set<Readable>();
  #run = 0;
  #open = 0;

  /** Reads a run's stdout and stderr until they end. Returns when both have ended. */
  attach(stdout: Readable | null, stderr: Readable | null): Promise<void> {
    this.#run++;
    const ends = [this.#follow(stdout, 'stdout'), this.#follow(stderr, 'stderr')];
    return Promise.all(ends).then(() => {});
  }

  /** The run that `attach` started last (1 for the first start). */
  get run(): number {
    return this.#run;
  }

  #follow(source: Readable | null, stream: 'stdout' | 'stderr'): Promise<void> {
    if (!source) return Promise.resolve();
    this.#open++;
    return new Promise((resolve) => {
      source.on('data', (data: Buffer) => this.push(stream, data));
      const done = () => {
        source.removeAllListeners('data');
        this.#flushPartial(stream);
        if (--this.#open === 0) for (const follower of this.#followers) follower.push(null);
        if (this.#open === 0) this.#followers.clear();
        resolve();
      };
      source.once('close', done);
      source.once('error', () => {});
    });
  }

  push(stream: 'stdout' | 'stderr', data: Buffer): void {
    this.#chunks.push({ stream, data, at: Date.now() });
    this.#bytes += data.length;
    while (this.#bytes > MAX_BYTES && this.#chunks.length > 1) this.#bytes -= this.#chunks.shift()?.data.length ?? 0;
    for (const follower of this.#followers) follower.push(data);
    const text = this.#partial[stream] + data.toString('utf8');
    const parts = text.split('\n');
    this.#partial[stream] = parts.pop() ?? '';
    for (const line of parts) this.#addLine(line.replace(/\r$/, ''));
  }

  #flushPartial(stream: 'stdout' | 'stderr'): void {
    if (this.#partial[stream] === '') return;
    const line = this.#partial[stream];
    this.#partial[stream] = '';
    this.#addLine(line);
  }

  #addLine(text: string): void {
    this.#lines.push({ text, run: this.#run });
    if (this.#lines.length > 100_000) this.#lines.splice(0, 50_000);
    for (const listener of this.#lineListeners) listener(text);
  }

  /** Lines of the current run so far, then every new one as it comes; returns the unsubscriber. */
  onLine(listener: (line: string) => void): () => void {
    for (const line of this.#lines) if (line.run === this.#run) listener(line.text);
    this.#lineListeners.add(listener);
    return () => this.#lineListeners.delete(listener);
  }

  /** The last `n` lines (a line not yet ended included). */
  tail(n: number): string[] {
    const lines = this.#lines.slice(-n).map((line) => line.text);
    for (const stream of ['stdout', 'stderr'] as const) if (this.#partial[stream]) lines.push(this.#partial[stream]);
    return lines.slice(-n);
  }

  /** Everything kept so far, both streams interleaved. */
  text(): string {
    return Buffer.concat(this.#chunks.map((chunk) => chunk.data)).toString('utf8');
  }

  /**
   * A stream of the output so far (after `since`, the last `tail` lines), then
   * of what comes until the container's current run ends, like `docker logs -f`.
   */
  stream(options: LogOptions = {}): Readable {
    const stream = new Readable({ read() {}, encoding: 'utf8' });
    const since = options.since === undefined ? 0 : options.since * 1000;
    let past: Buffer = Buffer.concat(this.#chunks.filter((chunk) => chunk.at >= since).map((chunk) => chunk.data));
    if (options.tail !== undefined) past = lastLines(past, options.tail);
    if (past.length > 0) stream.push(past);
    if (this.#open === 0) stream.push(null);
    else {
      this.#followers.add(stream);
      stream.once('close', () => this.#followers.delete(stream));
    }
    return stream;
  }
}

function lastLines(data: Buffer, n: number): Buffer {
  if (n <= 0) return Buffer.alloc(0);
  let end = data.length;
  if (data[end - 1] === 0x0a) end--;
  let start = end;
  for (let count = 0; count < n; count++) {
    const newline = data.lastIndexOf(0x0a, start - 1);
    if (newline < 0) return data;
    start = newline;
  }
  return data.subarray(start + 1);
}
