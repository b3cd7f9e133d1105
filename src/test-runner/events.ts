import type { BuildEvent } from '../build/events.js';

/**
 * - passed: every command exited 0 (on some attempt);
 * - failed: a command exited non-zero, timed out or was killed for memory, on the last attempt;
 * - error: the job could not run (its image did not build or is missing, its container did not start);
 * - interrupted: Ctrl-C or SIGTERM stopped the run before the job finished.
 */
export type JobStatus = 'passed' | 'failed' | 'error' | 'interrupted';

/** Why a failed job failed. */
export type FailureKind = 'exit' | 'timeout' | 'oom' | 'signal';

/** What a failed job left: the committed image, its archive, the report beside it, and how to open it again. */
export interface FailureArtifact {
  image: string;
  imageId: string;
  /** Paths as given on the command line (relative to the working directory unless absolute). */
  tar: string;
  json: string;
  markdown: string;
  repro: string;
  /** `--push-failed`: where the committed image was pushed (`REGISTRY/REPO:TAG@DIGEST`), or why it could not be. */
  pushed?: string;
  pushError?: string;
}

export interface JobResult {
  name: string;
  /** The config's image name. */
  image: string;
  status: JobStatus;
  failure?: FailureKind;
  /** One line: `exit code 1`, `timed out after 2s`, `image app did not build: …`. */
  message: string;
  exitCode?: number;
  signal?: number | null;
  /** The failing command (argv), for failed jobs. */
  command?: string[];
  durationMs: number;
  attempts: number;
  /** The last output of the last attempt (bounded). */
  stdout: string;
  stderr: string;
  artifact?: FailureArtifact;
  /** Why the artifact could not be written, when it could not. */
  artifactError?: string;
  /** A command that runs it again, for failed jobs. */
  repro?: string;
  /** Where its committed image was pushed (`petri test --push-failed`), or why it could not be. */
  pushed?: string;
  pushError?: string;
}

export interface ReadyImage {
  name: string;
  /** What containers run: the store reference or the image id. */
  ref: string;
  id: string;
  manifestDigest: string;
}

export type TestEvent =
  | { type: 'plan'; runId: string; jobs: { name: string; image: string }[]; total: number; parallel: number }
  | {
      type: 'image';
      image: string;
      status: 'start' | 'ready' | 'error';
      id?: string;
      error?: string;
      durationMs?: number;
    }
  | { type: 'build'; image: string; event: BuildEvent }
  | { type: 'job-start'; job: string; attempt: number; attempts: number }
  | { type: 'output'; job: string; stream: 'stdout' | 'stderr'; line: string }
  | { type: 'job-retry'; job: string; attempt: number; message: string }
  | { type: 'job-end'; result: JobResult }
  | { type: 'interrupt'; signal: string }
  | { type: 'summary'; runId: string; results: JobResult[]; durationMs: number; junit?: string };

export type Emit = (event: TestEvent) => void;
