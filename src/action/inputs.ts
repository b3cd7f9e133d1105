import { isAbsolute, resolve } from 'node:path';
import { PetriError } from '../errors.js';

/** The action's inputs (action.yml), checked, with their defaults applied. */
export interface ActionInputs {
  /** The config file, relative to the working directory (default: petri's own lookup). */
  config?: string;
  /** `--filter` patterns, one per line of the input. */
  filters: string[];
  shard?: string;
  parallel?: number;
  /** The JUnit report, relative to the working directory; empty: none. */
  junit?: string;
  artifacts: string;
  uploadFailed: boolean;
  retentionDays?: number;
  keepFailed: boolean;
  /** Absolute. */
  workingDirectory: string;
  cache: boolean;
  /** The uploaded artifacts' names: PREFIX + job name. */
  artifactPrefix: string;
}

/** Reads an input as the runner passes it: `INPUT_<NAME>` (upper case, spaces as `_`), trimmed. */
export type InputReader = (name: string) => string;

export const readEnvInput: InputReader = (name) =>
  (process.env[`INPUT_${name.replace(/ /g, '_').toUpperCase()}`] ?? '').trim();

const SHARD = /^\d+\/\d+$/;
const ARTIFACT_PREFIX = /^[A-Za-z0-9._-]*$/;

/** The inputs, with a one-line error naming the input, the value and what was expected when one is wrong. */
export function readInputs(input: InputReader = readEnvInput, cwd = process.cwd()): ActionInputs {
  const text = (name: string) => input(name) || undefined;
  const bool = (name: string, fallback: boolean): boolean => {
    const value = input(name);
    if (value === '') return fallback;
    if (/^(true|True|TRUE)$/.test(value)) return true;
    if (/^(false|False|FALSE)$/.test(value)) return false;
    throw bad(name, value, 'true or false');
  };
  const positive = (name: string, max = Number.MAX_SAFE_INTEGER): number | undefined => {
    const value = input(name);
    if (value === '') return undefined;
    if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > max) {
      throw bad(name, value, `a whole number from 1 to ${max === Number.MAX_SAFE_INTEGER ? '…' : max}`);
    }
    return Number(value);
  };
  const shard = text('shard');
  if (shard !== undefined) {
    const [index, count] = shard.split('/').map(Number);
    if (!SHARD.test(shard) || !count || !index || index > count)
      throw bad('shard', shard, 'I/N with 1 ≤ I ≤ N, like 2/4');
  }
  const artifactPrefix = input('artifact-prefix') || 'petri-failed-';
  if (!ARTIFACT_PREFIX.test(artifactPrefix)) throw bad('artifact-prefix', artifactPrefix, 'letters, digits, . _ -');
  const workingDirectory = resolve(cwd, input('working-directory') || '.');
  const parallel = positive('parallel');
  const retentionDays = positive('retention-days', 90);
  const config = text('config');
  const junit = input('junit');
  return {
    ...(config !== undefined ? { config } : {}),
    filters: input('filter')
      .split('\n')
      .map((line) => line.trim())
      .filter((line) => line !== ''),
    ...(shard !== undefined ? { shard } : {}),
    ...(parallel !== undefined ? { parallel } : {}),
    // `junit: ''` in a workflow is the same as no input: the default. `junit: none` turns it off.
    ...(junit === 'none' || junit === 'false' ? {} : { junit: junit || 'petri-artifacts/junit.xml' }),
    artifacts: input('artifacts') || 'petri-artifacts',
    uploadFailed: bool('upload-failed', true),
    ...(retentionDays !== undefined ? { retentionDays } : {}),
    keepFailed: bool('keep-failed', true),
    workingDirectory,
    cache: bool('cache', true),
    artifactPrefix,
  };
}

/** The `petri test` arguments for these inputs (the json reporter: the action renders the events itself). */
export function petriTestArgs(inputs: ActionInputs): string[] {
  const args = ['test', '--reporter', 'json', '--artifacts', inputs.artifacts];
  if (inputs.config !== undefined) args.push('--config', inputs.config);
  for (const filter of inputs.filters) args.push('--filter', filter);
  if (inputs.shard !== undefined) args.push('--shard', inputs.shard);
  if (inputs.parallel !== undefined) args.push('--parallel', String(inputs.parallel));
  if (inputs.junit !== undefined) args.push('--junit', inputs.junit);
  args.push(inputs.keepFailed ? '--keep-failed' : '--no-keep-failed');
  return args;
}

/** A path input made absolute against the working directory. */
export function inWorkingDirectory(inputs: ActionInputs, path: string): string {
  return isAbsolute(path) ? path : resolve(inputs.workingDirectory, path);
}

function bad(name: string, value: string, expected: string): PetriError {
  return new PetriError(`input ${name}: ${JSON.stringify(value)} is not valid: expected ${expected}`);
}
