import { appendFileSync } from 'node:fs';
import { join } from 'node:path';

/** Tells the outer test what a test saw: its worker, its container, the image. */
export function record(entry: Record<string, unknown>): void {
  const out = process.env.PTEST_VITEST_OUT;
  if (out) appendFileSync(join(out, 'records.jsonl'), `${JSON.stringify({ pid: process.pid, ...entry })}\n`);
}
