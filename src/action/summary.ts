import type { JobResult } from '../test-runner/events.js';
import { shellQuote } from '../test-runner/failure-labels.js';
import { formatDuration } from '../util/units.js';

/** What became of a failed job's files: uploaded as an artifact, or why not. */
export type UploadOutcome = { name: string; id?: number } | { error: string };

export interface FailureDetail {
  /** The last lines the job wrote (stdout and stderr, in order), of its last attempt. */
  lastLines: string[];
  upload?: UploadOutcome;
  /** `docker run …` for the committed image (from the job's report), without the `docker load`. */
  dockerRun?: string;
}

export interface SummaryInput {
  results: JobResult[];
  runId?: string;
  durationMs?: number;
  shard?: string;
  /** The config file as shown (relative to the workspace). */
  config?: string;
  details: Map<string, FailureDetail>;
  /** `GITHUB_RUN_ID` and `GITHUB_REPOSITORY`, for `gh run download`. */
  githubRunId?: string;
  repository?: string;
  /** When petri itself failed (bad config, not root…): its message. */
  error?: string;
}

const ICON: Record<JobResult['status'], string> = {
  passed: '✅ passed',
  failed: '❌ failed',
  error: '⚠️ error',
  interrupted: '⏹️ interrupted',
};

/** The job summary's markdown: a table of the jobs, then each failure with how to open it on a laptop. */
export function summaryMarkdown(input: SummaryInput): string {
  const { results } = input;
  const count = (status: JobResult['status']) => results.filter((r) => r.status === status).length;
  const parts = [
    `${count('failed')} failed`,
    `${count('passed')} passed`,
    ...(count('error') ? [`${count('error')} could not run`] : []),
    ...(count('interrupted') ? [`${count('interrupted')} interrupted`] : []),
  ];
  const out: string[] = [];
  if (input.error !== undefined && results.length === 0) {
    out.push('### petri test did not run', '', block('text', input.error));
    return `${out.join('\n')}\n`;
  }
  const took = input.durationMs !== undefined ? ` in ${formatDuration(input.durationMs)}` : '';
  out.push(`### petri test: ${parts.join(', ')}${took}`, '');
  const facts = [
    ...(input.runId ? [`run \`${input.runId}\``] : []),
    ...(input.shard ? [`shard ${input.shard}`] : []),
    ...(input.config ? [`config \`${input.config}\``] : []),
  ];
  if (facts.length > 0) out.push(facts.join(' · '), '');
  if (results.length === 0) out.push('No job in this shard: nothing to do.', '');
  else {
    out.push('| Job | Image | Status | Duration | Attempts |', '| --- | --- | --- | --- | ---: |');
    for (const r of results) {
      out.push(
        `| \`${cell(r.name)}\` | ${cell(r.image)} | ${ICON[r.status]} | ${formatDuration(r.durationMs)} | ${r.attempts} |`,
      );
    }
    out.push('');
  }
  if (input.error !== undefined) out.push(block('text', input.error));
  for (const r of results) {
    if (r.status === 'failed') out.push(...failureSection(r, input));
    else if (r.status === 'error') out.push(`#### ⚠️ \`${r.name}\` could not run`, '', block('text', r.message));
  }
  return `${out.join('\n')}\n`;
}

function failureSection(r: JobResult, input: SummaryInput): string[] {
  const detail = input.details.get(r.name) ?? { lastLines: [] };
  const out = [`#### ❌ \`${r.name}\`: ${escapeInline(r.message)}`, ''];
  if (r.command) out.push(`Command: \`${escapeInline(r.command.map(shellQuote).join(' '))}\``, '');
  const lines = detail.lastLines.length > 0 ? detail.lastLines : lastLines(r);
  out.push('Last output lines:', '', block('text', lines.join('\n') || '(no output)'));
  const commands = reproCommands(r, detail, input);
  if (!r.artifact) {
    const why = r.artifactError ? `its container could not be saved: ${r.artifactError}` : 'keep-failed is off';
    out.push(`No artifact: ${escapeInline(why)}.`, '');
    return out;
  }
  const upload = detail.upload;
  if (upload && 'name' in upload) {
    out.push(`Artifact: **${upload.name}** (\`${r.name}.tar\`, \`${r.name}.json\`, \`${r.name}.md\`)`, '');
  } else {
    const why = upload ? `not uploaded: ${upload.error}` : 'not uploaded (upload-failed is off)';
    out.push(`Artifact: \`${r.artifact.tar}\` on the runner, ${escapeInline(why)}.`, '');
    const docker = detail.dockerRun ? [`docker load -i ${shellQuote(r.artifact.tar)}`, detail.dockerRun] : [];
    out.push('On the runner:', '', block('sh', [r.artifact.repro, ...docker].join('\n')));
  }
  if (commands) {
    out.push('Reproduce on your machine (petri needs root):', '', block('sh', commands.petri.join('\n')));
    out.push('With only Docker:', '', block('sh', commands.docker.join('\n')));
  }
  return out;
}

export interface ReproCommands {
  petri: string[];
  docker: string[];
}

/** The commands that fetch a failed job's artifact and open it: with petri, and with only Docker. */
export function reproCommands(
  r: JobResult,
  detail: FailureDetail,
  input: Pick<SummaryInput, 'githubRunId' | 'repository'>,
): ReproCommands | undefined {
  if (!r.artifact || !detail.upload || !('name' in detail.upload)) return undefined;
  const name = detail.upload.name;
  const tar = `${name}/${r.name}.tar`;
  const repo = input.repository ? ` -R ${shellQuote(input.repository)}` : '';
  const download = `gh run download ${input.githubRunId ?? 'RUN_ID'}${repo} -n ${shellQuote(name)} -D ${shellQuote(name)}`;
  const dockerRun = detail.dockerRun ?? `docker run -it --rm ${shellQuote(r.artifact.image)} sh`;
  return {
    petri: [
      download,
      `sudo petri repro ${shellQuote(tar)} --rerun   # run the failed command again`,
      `sudo petri repro ${shellQuote(tar)}           # a shell in the container as the job left it`,
    ],
    docker: [download, `docker load -i ${shellQuote(tar)}`, dockerRun],
  };
}

/** The annotation of a failed job: what happened, its last lines, and the commands that open it again. */
export function annotationMessage(
  r: JobResult,
  detail: FailureDetail,
  input: Pick<SummaryInput, 'githubRunId' | 'repository'>,
): string {
  const lines = detail.lastLines.length > 0 ? detail.lastLines : lastLines(r);
  const text = [`${r.name}: ${r.message}`];
  if (lines.length > 0) text.push('', ...lines.slice(-5));
  const commands = reproCommands(r, detail, input);
  if (commands) text.push('', 'Reproduce:', ...commands.petri.slice(0, 2).map((line) => line.replace(/\s+#.*$/, '')));
  else if (r.repro) text.push('', `Reproduce on the runner: ${r.repro}`);
  return text.join('\n');
}

/** The last lines of a result's output, stdout then stderr (their order is lost in the result). */
function lastLines(r: JobResult, count = 20): string[] {
  const split = (text: string) => (text === '' ? [] : text.replace(/\n$/, '').split('\n'));
  return [...split(r.stdout), ...split(r.stderr)].slice(-count);
}

function block(lang: string, text: string): string {
  const longest = Math.max(2, ...[...text.matchAll(/`+/g)].map((m) => m[0].length));
  const fence = '`'.repeat(longest + 1);
  return `${fence}${lang}\n${text.replace(/\n$/, '')}\n${fence}\n`;
}

function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

function escapeInline(text: string): string {
  return text.replace(/\n/g, ' ').replace(/`/g, "'");
}
