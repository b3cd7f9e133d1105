/** The names the main step saves in the action's state (GITHUB_STATE) for the post step: `STATE_<name>` there. */
export const STATE = {
  /** petri's script (action/dist/petri.cjs). */
  script: 'petri_script',
  /** `$PETRI_ROOT` as the main step saw it ('' for the default). */
  root: 'petri_root',
  /** The process the main step started (petri, or sudo running it) and its start time. */
  pid: 'petri_pid',
  startTime: 'petri_start_time',
  /** `petri test`'s run id. */
  runId: 'petri_run_id',
  /** Set once petri has ended and the main step saw it. */
  finished: 'petri_finished',
} as const;
