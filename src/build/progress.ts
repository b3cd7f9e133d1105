import type { BuildEvent } from './events.js';

export type ProgressMode = 'auto' | 'plain' | 'tty' | 'json' | 'quiet';

/**
 * Renders build events on a stream, BuildKit-style:
 * - `plain` (CI, pipes): `#3 [build 2/5] RUN make`, the step's output lines as
 *   `#3 0.412 line`, then `#3 CACHED` or `#3 DONE 0.4s`;
 * - `tty` (auto on a terminal): the same, with colour, output shown live as it comes;
 * - `json`: one JSON event per line, for tools;
 * - `quiet`: nothing but warnings and errors.
 * A failing step prints its command, the reason and its last output lines.
 */
/** Where progress goes: a stream, or anything with `write` (and whether it is a terminal). */
export interface ProgressOut {
  isTTY?: boolean;
  write(text: string): unknown;
}

export function progressRenderer(mode: ProgressMode, out: ProgressOut) {
  const resolved = mode === 'auto' ? (out.isTTY ? 'tty' : 'plain') : mode;
  if (resolved === 'json') return (event: BuildEvent) => out.write(`${JSON.stringify(event)}\n`);
  const color = resolved === 'tty';
  const paint = (code: string, text: string) => (color ? `\x1b[${code}m${text}\x1b[0m` : text);
  const started = new Map<number, number>();
  const partial = new Map<number, string>();
  const tails = new Map<number, string[]>();
  const quiet = resolved === 'quiet';

  const flush = (id: number) => {
    const rest = partial.get(id);
    if (rest) {
      if (!quiet) out.write(`${paint('2', `#${id} ${elapsed(id)}`)} ${rest}\n`);
      partial.delete(id);
    }
  };
  const elapsed = (id: number) => ((Date.now() - (started.get(id) ?? Date.now())) / 1000).toFixed(3);

  return (event: BuildEvent) => {
    switch (event.type) {
      case 'step': {
        const label = `#${event.id} [${event.stage} ${event.index}/${event.total}] ${event.text}`;
        if (event.status === 'start') {
          started.set(event.id, Date.now());
          if (!quiet) out.write(`${paint('1;34', label)}\n`);
        } else if (event.status === 'cached') {
          if (!quiet) out.write(`${paint('34', `#${event.id} CACHED`)}\n`);
        } else if (event.status === 'done') {
          flush(event.id);
          if (!quiet) out.write(`${paint('32', `#${event.id} DONE ${seconds(event.durationMs)}`)}\n`);
        } else {
          flush(event.id);
          const tail = tails.get(event.id) ?? [];
          // Quiet: only a failing step's output, when it has some (the error line itself follows from the CLI).
          if (quiet && tail.length > 0) out.write(`${label}\n`);
          for (const line of tail) out.write(`${paint('2', `#${event.id}`)} ${line}\n`);
          if (!quiet) out.write(`${paint('31', `#${event.id} ERROR ${event.error ?? ''}`)}\n`);
        }
        break;
      }
      case 'output': {
        const text = (partial.get(event.id) ?? '') + event.data;
        const lines = text.split('\n');
        partial.set(event.id, lines.pop() ?? '');
        const tail = tails.get(event.id) ?? [];
        for (const line of lines) {
          if (!quiet) out.write(`${paint('2', `#${event.id} ${elapsed(event.id)}`)} ${line}\n`);
          else tail.push(line);
        }
        if (quiet) tails.set(event.id, tail.slice(-10));
        break;
      }
      case 'warning':
        out.write(`${paint('33', `WARNING: ${event.message}`)}\n`);
        break;
      case 'cache':
        if (!quiet) {
          out.write(
            `${paint('34', `cache exported to ${event.ref} (${event.digest}): ${event.steps} steps, ${event.layers} layers`)}\n`,
          );
        }
        break;
      case 'image':
        if (!quiet) {
          const names = event.tags.length ? ` (${event.tags.join(', ')})` : '';
          out.write(`${paint('1;32', `image ${event.id}${names} built in ${seconds(event.durationMs)}`)}\n`);
        }
        break;
    }
  };
}

function seconds(ms: number | undefined): string {
  return `${((ms ?? 0) / 1000).toFixed(1)}s`;
}
