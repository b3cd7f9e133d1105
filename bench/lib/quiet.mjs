// Waits for the machine to go quiet before a timed run, so that one contender's leftovers (a daemon
// still removing the containers of the run before, page-cache writeback, exiting workers) are not
// charged to the next one.
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

function cpuTimes() {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = fields[3] + (fields[4] ?? 0); // idle + iowait
  return { idle, total: fields.reduce((a, b) => a + b, 0) };
}

/**
 * Resolves once a `windowMs` window shows the CPUs at most `busy` (a fraction) in use, or after
 * `maxMs`. Returns how long it waited (ms).
 */
export async function quiet({ windowMs = 100, busy = 0.05, maxMs = 3000 } = {}) {
  const start = performance.now();
  let before = cpuTimes();
  while (performance.now() - start < maxMs) {
    await sleep(windowMs);
    const now = cpuTimes();
    const total = now.total - before.total;
    const used = total > 0 ? 1 - (now.idle - before.idle) / total : 0;
    before = now;
    if (used <= busy) break;
  }
  return performance.now() - start;
}
