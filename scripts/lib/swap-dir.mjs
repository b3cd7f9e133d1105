// Builds a directory beside its place, then swaps it in: a process that reads it meanwhile (a petri
// command starting, a test file importing petri) sees the old or the new one, never none or half.
import { renameSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** Runs `fill(dir)` on a fresh directory beside `out`, then puts that directory in `out`'s place. */
export async function buildInPlace(out, fill) {
  const next = join(dirname(out), `.${basename(out)}-${process.pid}`);
  const old = join(dirname(out), `.${basename(out)}-old-${process.pid}`);
  rmSync(next, { recursive: true, force: true });
  await fill(next);
  try {
    renameSync(out, old);
  } catch (error) {
    if (error.code !== 'ENOENT') throw error;
  }
  renameSync(next, out);
  rmSync(old, { recursive: true, force: true });
}
