/**
 * What a failed job's image records in its labels (`org.petri.test.*`), so
 * that `petri repro` can run its command again the way the job ran it, and a
 * person reading `petri inspect` or `docker inspect` sees what happened.
 */

const PREFIX = 'org.petri.test.';

export interface FailureRecord {
  job: string;
  runId: string;
  /** The config's image name and the id of the image the job ran on. */
  image: string;
  imageId: string;
  /** The failing command's argv. */
  command: string[];
  /** The job's own variables (the image's are in its Env). */
  env: Record<string, string>;
  workdir?: string;
  user?: string;
  status: string;
  exitCode: number;
  signal: number | null;
  durationMs: number;
  timeoutMs?: number;
  memory?: number;
  pids?: number;
  cpus?: number;
  stdoutTail: string;
  stderrTail: string;
  /** `petri diff` of the container, summarised. */
  diff: string;
}

export function failureLabels(record: FailureRecord): Record<string, string> {
  const labels: Record<string, string> = {
    job: record.job,
    'run-id': record.runId,
    image: record.image,
    'image-id': record.imageId,
    command: JSON.stringify(record.command),
    env: JSON.stringify(record.env),
    status: record.status,
    'exit-code': String(record.exitCode),
    signal: record.signal === null ? '' : String(record.signal),
    'duration-ms': String(record.durationMs),
    'stdout-tail': record.stdoutTail,
    'stderr-tail': record.stderrTail,
    diff: record.diff,
  };
  if (record.workdir !== undefined) labels.workdir = record.workdir;
  if (record.user !== undefined) labels.user = record.user;
  if (record.timeoutMs !== undefined) labels['timeout-ms'] = String(record.timeoutMs);
  if (record.memory !== undefined) labels.memory = String(record.memory);
  if (record.pids !== undefined) labels.pids = String(record.pids);
  if (record.cpus !== undefined) labels.cpus = String(record.cpus);
  return Object.fromEntries(Object.entries(labels).map(([key, value]) => [PREFIX + key, value]));
}

/** What `petri repro` needs from an image's labels; undefined when it is not a failed job's image. */
export interface ReproSettings {
  job: string;
  command: string[];
  env: Record<string, string>;
  workdir?: string;
  user?: string;
  exitCode?: number;
  status?: string;
  timeoutMs?: number;
  memory?: number;
  pids?: number;
  cpus?: number;
}

export function readFailureLabels(labels: Record<string, string> | undefined | null): ReproSettings | undefined {
  const get = (key: string) => labels?.[PREFIX + key];
  const job = get('job');
  const command = parseJson<string[]>(get('command'));
  if (job === undefined || !Array.isArray(command)) return undefined;
  const number = (key: string) => {
    const text = get(key);
    return text === undefined || text === '' || !Number.isFinite(Number(text)) ? undefined : Number(text);
  };
  const settings: ReproSettings = { job, command, env: parseJson<Record<string, string>>(get('env')) ?? {} };
  const workdir = get('workdir');
  const user = get('user');
  const status = get('status');
  if (workdir) settings.workdir = workdir;
  if (user) settings.user = user;
  if (status) settings.status = status;
  for (const key of ['timeout-ms', 'memory', 'pids', 'cpus', 'exit-code'] as const) {
    const value = number(key);
    if (value === undefined) continue;
    if (key === 'timeout-ms') settings.timeoutMs = value;
    else if (key === 'exit-code') settings.exitCode = value;
    else settings[key] = value;
  }
  return settings;
}

function parseJson<T>(text: string | undefined): T | undefined {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as T;
  } catch {
    return undefined;
  }
}

/** Quotes a word for a POSIX shell when it needs it. */
export function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** `docker run` flags that give a container the job's limits (env, workdir and user are in the image's config). */
export function dockerRunFlags(settings: ReproSettings): string[] {
  // A job's container has a network namespace of its own with only `lo`: Docker's `none`.
  const flags: string[] = ['--network', 'none'];
  if (settings.memory !== undefined) {
    const memory = dockerSize(settings.memory);
    flags.push('--memory', memory, '--memory-swap', memory);
  }
  if (settings.pids !== undefined) flags.push('--pids-limit', String(settings.pids));
  if (settings.cpus !== undefined) flags.push('--cpus', String(settings.cpus));
  return flags;
}

function dockerSize(bytes: number): string {
  for (const [unit, size] of [
    ['g', 1024 ** 3],
    ['m', 1024 ** 2],
    ['k', 1024],
  ] as const) {
    if (bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return `${bytes}b`;
}
