import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { DefaultArtifactClient } from '@actions/artifact';
import { errorLine } from '../errors.js';
import type { JobResult } from '../test-runner/events.js';
import type { UploadOutcome } from './summary.js';

export interface UploadOptions {
  /** Where petri ran: the results' paths are relative to it. */
  cwd: string;
  prefix: string;
  /** The workflow run's attempt (GITHUB_RUN_ATTEMPT): a re-run's artifacts need names of their own. */
  attempt?: number;
  retentionDays?: number;
  log: (line: string) => void;
}

/** Whether the Actions artifact service is reachable from here (the runner sets these for actions). */
export function artifactServiceAvailable(): boolean {
  return Boolean(process.env.ACTIONS_RUNTIME_TOKEN && process.env.ACTIONS_RESULTS_URL);
}

/**
 * Uploads each failed job's archive and reports (`<job>.tar`, `.json`, `.md`)
 * as one artifact named PREFIX<job> (PREFIX<job>-attempt<N> in a re-run's
 * attempt N: a workflow run keeps each name once, and refuses it again with
 * a conflict); `gh run download RUN -n NAME` brings them back. One failed
 * upload does not stop the others.
 */
export function artifactName(prefix: string, job: string, attempt = 1): string {
  return attempt > 1 ? `${prefix}${job}-attempt${attempt}` : `${prefix}${job}`;
}

export async function uploadFailures(
  results: JobResult[],
  options: UploadOptions,
): Promise<Map<string, UploadOutcome>> {
  const outcomes = new Map<string, UploadOutcome>();
  const failed = results.filter((r) => r.status === 'failed' && r.artifact);
  if (failed.length === 0) return outcomes;
  if (!artifactServiceAvailable()) {
    for (const r of failed) outcomes.set(r.name, { error: 'the Actions artifact service is not available here' });
    return outcomes;
  }
  const client = new DefaultArtifactClient();
  for (const r of failed) {
    const artifact = r.artifact as NonNullable<JobResult['artifact']>;
    const files = [artifact.tar, artifact.json, artifact.markdown]
      .map((path) => resolve(options.cwd, path))
      .filter((path) => existsSync(path));
    const name = artifactName(options.prefix, r.name, options.attempt);
    try {
      const root = dirname(resolve(options.cwd, artifact.tar));
      if (!files.includes(join(root, `${r.name}.tar`))) throw new Error(`${artifact.tar} is missing`);
      const uploaded = await client.uploadArtifact(name, files, root, {
        ...(options.retentionDays !== undefined ? { retentionDays: options.retentionDays } : {}),
      });
      options.log(`uploaded ${name} (${files.length} files${uploaded.size ? `, ${uploaded.size} bytes` : ''})`);
      outcomes.set(r.name, { name, ...(uploaded.id !== undefined ? { id: uploaded.id } : {}) });
    } catch (error) {
      outcomes.set(r.name, { error: errorLine(error) });
    }
  }
  return outcomes;
}
