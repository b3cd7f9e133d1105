import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { errorLine } from '../errors.js';
import { commitContainer } from '../harness/commit.js';
import { saveImages } from '../image/archive/save.js';
import type { ImageStore } from '../image/store.js';
import type { Container } from '../runtime/container.js';
import { diffUpper } from '../snapshot/diff.js';
import { formatDuration } from '../util/units.js';
import type { TestJob } from './config-validate.js';
import type { FailureArtifact, FailureKind, ReadyImage } from './events.js';
import { dockerRunFlags, type FailureRecord, failureLabels, shellQuote } from './failure-labels.js';

const LABEL_TAIL = 2048;
const DIFF_LINES = 40;

export interface Failure {
  container: Container;
  /** The container's read-only layers (for its diff). */
  lower: string[];
  job: TestJob;
  runId: string;
  image: ReadyImage;
  command: string[];
  kind: FailureKind;
  message: string;
  exitCode: number;
  signal: number | null;
  durationMs: number;
  attempts: number;
  stdout: string;
  stderr: string;
}

export interface ArtifactPlace {
  store: ImageStore;
  /** The directory, absolute, and as the user gave it (for the commands printed). */
  dir: string;
  shown: string;
  /** Pushes the committed image (`--push-failed`); resolves to where it went. */
  push?: (image: string, job: string) => Promise<string>;
}

/** The image name a failed job is committed to. */
export function failedImageName(job: string, runId: string): string {
  return `petri-failed/${job.toLowerCase()}:${runId}`;
}

/**
 * Commits a failed job's (exited, kept) container to `petri-failed/<job>:<run-id>`
 * with what happened in its labels, saves it to `<dir>/<job>.tar` (docker,
 * podman and petri load it) and writes `<job>.json` and `<job>.md` beside it.
 */
export async function saveFailure(failure: Failure, place: ArtifactPlace): Promise<FailureArtifact> {
  const { job, container } = failure;
  const upper = container.spec.annotations['org.petri.rootfs.upper'];
  const changes = upper ? await diffUpper(upper, failure.lower) : [];
  const diffLines = changes.slice(0, DIFF_LINES).map((change) => `${change.kind} ${change.path}`);
  if (changes.length > DIFF_LINES) diffLines.push(`… and ${changes.length - DIFF_LINES} more`);
  const record: FailureRecord = {
    job: job.name,
    runId: failure.runId,
    image: failure.image.name,
    imageId: failure.image.id,
    command: failure.command,
    env: job.env,
    ...(job.workdir !== undefined ? { workdir: job.workdir } : {}),
    ...(job.user !== undefined ? { user: job.user } : {}),
    status: failure.kind,
    exitCode: failure.exitCode,
    signal: failure.signal,
    durationMs: failure.durationMs,
    ...(job.timeoutMs !== undefined ? { timeoutMs: job.timeoutMs } : {}),
    ...(job.memory !== undefined ? { memory: job.memory } : {}),
    ...(job.pids !== undefined ? { pids: job.pids } : {}),
    ...(job.cpus !== undefined ? { cpus: job.cpus } : {}),
    stdoutTail: tail(failure.stdout, LABEL_TAIL),
    stderrTail: tail(failure.stderr, LABEL_TAIL),
    diff: diffLines.join('\n'),
  };
  const ref = failedImageName(job.name, failure.runId);
  const committed = await commitContainer(place.store, container.id, {
    ref,
    message: `petri test: job ${job.name} failed: ${failure.message}`,
    labels: failureLabels(record),
    changes: [`CMD ${JSON.stringify(failure.command)}`],
  });
  mkdirSync(place.dir, { recursive: true });
  const file = (ext: string) => ({
    path: join(place.dir, `${job.name}${ext}`),
    shown: join(place.shown, `${job.name}${ext}`),
  });
  const tar = file('.tar');
  await saveImages(place.store, [ref], tar.path);
  const repro = `petri repro ${shellQuote(tar.shown)} --rerun`;
  const commands = {
    rerun: repro,
    shell: `petri repro ${shellQuote(tar.shown)}`,
    docker: `docker load -i ${shellQuote(tar.shown)} && docker run -it --rm ${[...dockerRunFlags(record), ref, 'sh'].map(shellQuote).join(' ')}`,
  };
  let pushed: string | undefined;
  let pushError: string | undefined;
  if (place.push) {
    try {
      pushed = await place.push(ref, job.name);
    } catch (error) {
      pushError = errorLine(error);
    }
  }
  const json = file('.json');
  const markdown = file('.md');
  writeFileSync(
    json.path,
    `${JSON.stringify(
      {
        job: job.name,
        runId: failure.runId,
        status: 'failed',
        failure: failure.kind,
        message: failure.message,
        exitCode: failure.exitCode,
        signal: failure.signal,
        durationMs: failure.durationMs,
        attempts: failure.attempts,
        command: failure.command,
        env: job.env,
        workdir: job.workdir,
        user: job.user,
        limits: { timeoutMs: job.timeoutMs, memory: job.memory, pids: job.pids, cpus: job.cpus },
        image: { name: failure.image.name, id: failure.image.id },
        committed: {
          image: ref,
          id: committed.id,
          archive: tar.shown,
          ...(pushed ? { pushed } : {}),
          ...(pushError ? { pushError } : {}),
        },
        repro: commands,
        stdout: failure.stdout,
        stderr: failure.stderr,
        changes: changes.map((change) => `${change.kind} ${change.path}`),
      },
      null,
      2,
    )}\n`,
  );
  const pushLine = pushed ? `pushed to \`${pushed}\`` : pushError ? `could not be pushed: ${pushError}` : undefined;
  writeFileSync(markdown.path, reportMarkdown(failure, ref, tar.shown, commands, diffLines, pushLine));
  return {
    image: ref,
    imageId: committed.id,
    tar: tar.shown,
    json: json.shown,
    markdown: markdown.shown,
    repro,
    ...(pushed ? { pushed } : {}),
    ...(pushError ? { pushError } : {}),
  };
}

function tail(text: string, limit: number): string {
  return text.length <= limit ? text : text.slice(text.length - limit);
}

function fence(text: string): string {
  const longest = Math.max(2, ...[...text.matchAll(/`+/g)].map((m) => m[0].length));
  return '`'.repeat(longest + 1);
}

function reportMarkdown(
  failure: Failure,
  ref: string,
  tar: string,
  commands: { rerun: string; shell: string; docker: string },
  diff: string[],
  pushLine?: string,
): string {
  const { job } = failure;
  const block = (lang: string, text: string) => {
    if (text === '') return '(none)\n';
    const f = fence(text);
    return `${f}${lang}\n${text.endsWith('\n') || text === '' ? text : `${text}\n`}${f}\n`;
  };
  const out = [
    `# Job \`${job.name}\` failed: ${failure.message}`,
    '',
    `- run: ${failure.runId}`,
    `- image: ${failure.image.name} (${failure.image.id})`,
    `- command: \`${failure.command.map(shellQuote).join(' ')}\``,
    `- duration: ${formatDuration(failure.durationMs)}, attempts: ${failure.attempts}`,
    `- committed: \`${ref}\`, saved to \`${tar}\``,
    ...(pushLine ? [`- ${pushLine}`] : []),
    '',
    '## Reproduce',
    '',
    block(
      'sh',
      `${commands.rerun}   # run the failed command again\n${commands.shell}   # a shell in the failed state\n${commands.docker}`,
    ),
    '## Output (last part)',
    '',
    block('', failure.stdout),
    '## Error output (last part)',
    '',
    block('', failure.stderr),
    '## Changes in the container',
    '',
    block('', diff.join('\n')),
  ];
  return `${out.join('\n')}`;
}
