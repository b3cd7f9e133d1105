import { spawnSync } from 'node:child_process';
import * as core from '@actions/core';
import { errorLine } from '../errors.js';
import { cleanupRun, type RunState } from './cleanup.js';
import { STATE } from './state.js';

/**
 * The action's post step (it runs even when the job was cancelled or the main
 * step was killed): removes every container the run left, as root — through
 * `sudo -n -E` running this same script when the job is not root. Never fails
 * the job: a cleanup problem is a warning.
 */
export async function runPost(script: string): Promise<void> {
  try {
    const petriScript = core.getState(STATE.script);
    if (!petriScript) return; // the main step never got to petri
    if (process.getuid?.() !== 0) {
      const sudo = spawnSync('sudo', ['-n', '-E', process.execPath, script], { stdio: 'inherit' });
      if (sudo.status !== 0) {
        core.warning(
          `petri cleanup: could not run as root through sudo (${sudo.error?.message ?? `exit code ${sudo.status}`}): containers of this run may be left (sudo petri ps -a)`,
        );
      }
      return;
    }
    const root = core.getState(STATE.root);
    if (root) process.env.PETRI_ROOT = root;
    const pid = Number(core.getState(STATE.pid));
    const startTime = Number(core.getState(STATE.startTime));
    const runId = core.getState(STATE.runId);
    const state: RunState = {
      script: petriScript,
      finished: core.getState(STATE.finished) === '1',
      ...(pid > 0 ? { petri: { pid, startTime } } : {}),
      ...(runId ? { runId } : {}),
    };
    await cleanupRun(state, (line) => core.info(`petri cleanup: ${line}`));
  } catch (error) {
    core.warning(`petri cleanup: ${errorLine(error)}`);
  }
}
