import { createHash } from 'node:crypto';
import { mkdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { petriRoot } from '../runtime/paths.js';
import { fnvName } from '../util/fnv.js';
import { deltaFields } from './delta.js';
import { writeEarlyPlan } from './early.js';
import type { BuildEvent } from './events.js';
import { progressRenderer } from './progress.js';
import type { ResultState } from './result-cache.js';

/**
 * Replay records: what lets the `petri` command (bin/petri) answer a
 * remembered `petri build` in C (`petri-runner replay`, runner/replay.c)
 * without starting Node. Written after a build the result cache remembered,
 * and after a result-cache hit, for the command line that asked for it (the
 * same one without `--no-cache`, as the next build will be), under
 * `$PETRI_ROOT/build-cache/results/replay-<key hash>`.
 *
 * The key: the working directory, the arguments, and what the build read of
 * the environment (PETRI_ROOT, SOURCE_DATE_EPOCH, the variables of a bare
 * `--build-arg NAME`), NUL-separated. The record: the key in full; petri's
 * build file and its size and mtime (an upgrade or a rebuild of petri
 * replays nothing); the context, the Dockerfile and their fingerprint (the
 * result cache's lstat lines); the store's index.json byte for byte and the
 * manifest's blob; and the stdout and stderr the build printed, with the
 * place of its duration. Each field is `<length>\n<bytes>\n`, after a first
 * line with the SHA-256 of the rest: a record changed since (a bad disk, a
 * hand's edit) is not replayed, as its templates would make a wrong image.
 */

const MAGIC = 'petri-replay 2';
/** A duration no build takes: found in the rendered output, it marks where replay writes its own. */
const SENTINEL_MS = 987_654_321;
/** The options of `petri build` that take no value. */
const BOOLEAN = new Set(['-q', '--quiet', '--help']);

export interface ReplayInputs {
  /** The command line after `petri`: `build …`. */
  argv: string[];
  /** The names of `--build-arg NAME` (no value: from the environment). */
  envArgs: string[];
  /** The progress mode asked for. */
  progress: string;
  context: string;
  dockerfile: string;
  /** petri's own build file (a change to it is another petri). */
  self: string;
}

/** The key, as runner/replay.c builds it; undefined for a command line never replayed. */
export function replayKey(inputs: ReplayInputs): Buffer | undefined {
  const argv = [...inputs.argv];
  const noCache = argv.indexOf('--no-cache');
  if (noCache >= 0) {
    // The next build is the same one without --no-cache: that is what to replay, when --no-cache is
    // surely the flag (after the command, a value or a flag without one; not after `-qf` or `--build-arg`).
    const before = argv[noCache - 1] ?? '';
    const flag = noCache === 1 || !before.startsWith('-') || BOOLEAN.has(before);
    if (!flag || argv.lastIndexOf('--no-cache') !== noCache) return undefined;
    argv.splice(noCache, 1);
  }
  if (argv.some((arg) => arg === '--' || arg.startsWith('--no-cache'))) return undefined;
  const env = (name: string) => process.env[name] ?? '\x01';
  const fields = ['petri-replay-1', process.cwd(), ...argv, 'PETRI_ROOT', env('PETRI_ROOT')];
  fields.push('SOURCE_DATE_EPOCH', env('SOURCE_DATE_EPOCH'));
  const scanned: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    let value: string | undefined;
    if (arg === '--build-arg' && i + 1 < argv.length) value = argv[++i];
    else if (arg.startsWith('--build-arg=')) value = arg.slice('--build-arg='.length);
    if (value !== undefined && !value.includes('=')) {
      fields.push(value, env(value));
      scanned.push(value);
    }
  }
  // Every bare build arg petri read must be in the key as runner/replay.c finds it, else no replay.
  for (const name of inputs.envArgs) if (!scanned.includes(name)) return undefined;
  return Buffer.concat(fields.map((field) => Buffer.from(`${field}\0`)));
}

/** Writes the replay record of a build the result cache answered or remembered. Never throws: an optimisation. */
export function writeReplay(inputs: ReplayInputs, state: ResultState, root = petriRoot()): void {
  try {
    const mode = inputs.progress === 'auto' ? 'plain' : inputs.progress;
    if (!['plain', 'json', 'quiet'].includes(mode)) return; // a terminal's live view is Node's
    const key = replayKey(inputs);
    if (!key) return;
    let stderr = '';
    const render = progressRenderer(mode as 'plain', {
      write: (text: string) => {
        stderr += text;
      },
    });
    for (const event of state.events) render(event);
    const image: BuildEvent = {
      type: 'image',
      id: state.id,
      manifestDigest: state.manifestDigest,
      tags: state.tags,
      durationMs: SENTINEL_MS,
      resultCache: true,
    };
    render(image);
    const [mark, unit] = stderr.includes(String(SENTINEL_MS))
      ? [String(SENTINEL_MS), 'ms']
      : stderr.includes((SENTINEL_MS / 1000).toFixed(1))
        ? [(SENTINEL_MS / 1000).toFixed(1), 's']
        : ['', ''];
    const self = statSync(inputs.self, { bigint: true });
    const hex = /^sha256:([a-f0-9]{64})$/.exec(state.manifestDigest)?.[1];
    if (!hex) return;
    const fields: (string | Buffer)[] = [
      key,
      inputs.self,
      `${self.size}:${self.mtimeNs}`,
      inputs.context,
      inputs.dockerfile,
      state.files,
      join(root, 'images', 'index.json'),
      state.index,
      join(root, 'images', 'blobs', 'sha256', hex),
      `${state.id}\n`,
      stderr,
      mark,
      unit,
    ];
    // The delta (delta.ts): a build whose only change is in files its last COPY steps alone read.
    let delta: (string | Buffer)[] | undefined;
    try {
      delta = state.delta && deltaFields(state.delta, state, mode as 'plain', SENTINEL_MS, stderr, root);
    } catch {
      delta = undefined; // a record without: a change starts Node
    }
    if (delta) fields.push(...delta);
    const body = Buffer.concat(
      fields.flatMap((field) => {
        const bytes = Buffer.isBuffer(field) ? field : Buffer.from(field);
        return [Buffer.from(`${bytes.length}\n`), bytes, Buffer.from('\n')];
      }),
    );
    const sum = createHash('sha256').update(body).digest('hex');
    const head = Buffer.from(`${MAGIC} ${sum}\n`);
    const file = join(root, 'build-cache', 'results', `replay-${fnvName(key)}`);
    mkdirSync(join(file, '..'), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, Buffer.concat([head, body]));
    renameSync(tmp, file);
    // The early run's plan (early.ts), tied to this record by its checksum.
    writeEarlyPlan(`${file}.early`, sum, state.early);
  } catch {
    // no replay: the next build starts Node, as before
  }
}
