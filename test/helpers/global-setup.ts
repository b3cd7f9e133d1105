import { findLeaks } from './leaks.js';
import { removeBuiltRootfs } from './rootfs.js';

/**
 * Runs once around the whole suite. Before: nothing of petri may be on the
 * machine (or the leak check after would blame the suite). After: the suite
 * must have left nothing behind — mounts, cgroups, runner processes, records.
 */
export function setup(): void {
  if (process.getuid?.() !== 0) return;
  const before = findLeaks();
  if (before.length > 0) {
    throw new Error(`petri leftovers exist before the tests ran (clean them first):\n${before.join('\n')}`);
  }
}

export async function teardown(): Promise<void> {
  await removeBuiltRootfs();
  if (process.getuid?.() !== 0) return;
  // Runner processes exit a moment after their container; give them a short while.
  let leaks = findLeaks();
  for (let i = 0; i < 20 && leaks.length > 0; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    leaks = findLeaks();
  }
  if (leaks.length > 0) throw new Error(`the test suite left these behind:\n${leaks.join('\n')}`);
}
