import { setTimeout as sleep } from 'node:timers/promises';
import { errorLine } from '../errors.js';
import { removeContainer } from '../runtime/containers.js';
import { listRecords } from '../runtime/record.js';
import { sweepContainers } from '../runtime/sweep.js';
import { alive, commandLine, type ProcessRef, processTree, signal } from './process-tree.js';

/** What the main step left in the action's state for the post step. */
export interface RunState {
  /** The process the main step started (petri, or sudo running petri). */
  petri?: ProcessRef;
  /** petri's script, to tell its process from sudo's. */
  script: string;
  /** `petri test`'s run id: its job containers are named `<job>-<run id>`. */
  runId?: string;
  /** Whether the main step saw petri end. */
  finished: boolean;
}

/** How long petri gets to stop its jobs and remove their containers after SIGTERM before it is killed. */
const STOP_GRACE_MS = 20_000;

/**
 * Removes what a run left, as root, with petri's own cleanup: stops a petri
 * that still runs (the main step was cancelled or killed) with SIGTERM — it
 * then kills and removes its containers itself — and SIGKILL after a grace
 * period; then removes (`petri rm -f`) every container of the run still
 * recorded (a job's container kept for a commit that never came, a build's
 * step) and sweeps the records of dead petri processes. Mounts live in the
 * runners' mount namespaces and go with them.
 */
export async function cleanupRun(state: RunState, log: (line: string) => void): Promise<void> {
  const owners = new Set<number>();
  if (state.petri && !state.finished) {
    const tree = processTree(state.petri);
    for (const ref of tree) owners.add(ref.pid);
    // node running petri's script (not sudo, whose command line has it too: it would pass a second SIGTERM on).
    const petris = tree.filter((ref) => commandLine(ref.pid)[1] === state.script);
    if (tree.length > 0) {
      log(`petri (pid ${petris.map((p) => p.pid).join(', ') || state.petri.pid}) still runs: stopping it`);
      for (const ref of petris.length > 0 ? petris : [state.petri]) signal(ref, 'SIGTERM');
      const deadline = Date.now() + STOP_GRACE_MS;
      while (Date.now() < deadline && tree.some(alive)) await sleep(100);
      const left = tree.filter(alive);
      if (left.length > 0) {
        log(`killing ${left.length} processes petri left after ${STOP_GRACE_MS / 1000}s`);
        for (const ref of left) signal(ref, 'SIGKILL');
        for (let i = 0; i < 50 && left.some(alive); i++) await sleep(100);
      }
    }
  }
  const ours = listRecords().filter(
    (record) => (state.runId !== undefined && record.name.endsWith(`-${state.runId}`)) || owners.has(record.owner.pid),
  );
  for (const record of ours) {
    try {
      await removeContainer(record.id, { force: true });
      log(`removed container ${record.name} (${record.id})`);
    } catch (error) {
      log(`could not remove container ${record.name}: ${errorLine(error)}`);
    }
  }
  const swept = await sweepContainers();
  if (swept.length > 0) log(`swept ${swept.length} containers of petri processes that died`);
}
