import type { Socket } from 'node:net';

/**
 * Calls `onEvent` with each JSON line a runner writes on `socket` (its
 * control socket, or the fork server's); lines that are not JSON are skipped.
 * Lines are not cut at any length: an exec's output event can be megabytes.
 */
export function onJsonEvents<T>(socket: Socket, onEvent: (event: T) => void): void {
  let buffered = '';
  socket.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk;
    for (let newline = buffered.indexOf('\n'); newline >= 0; newline = buffered.indexOf('\n')) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      let event: T;
      try {
        event = JSON.parse(line);
      } catch {
        continue;
      }
      onEvent(event);
    }
  });
}
