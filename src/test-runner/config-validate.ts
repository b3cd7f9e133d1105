import { existsSync } from 'node:fs';
import { isAbsolute, relative, resolve } from 'node:path';
import { didYouMean } from '../dockerfile/suggest.js';
import { PetriError } from '../errors.js';
import { parseCpus, parseDuration, parseSize } from '../util/units.js';

/** An image a test run needs: built from a Dockerfile, or taken from the store. */
export type TestImage =
  | {
      name: string;
      kind: 'build';
      /** Absolute paths. */
      context: string;
      dockerfile?: string;
      buildArgs: Record<string, string>;
      target?: string;
    }
  | { name: string; kind: 'store'; ref: string };

/** A job as `petri test` runs it: every default applied, every value checked. */
export interface TestJob {
  name: string;
  image: string;
  /** One argv per command; several only for `steps`. */
  commands: string[][];
  steps: boolean;
  env: Record<string, string>;
  workdir?: string;
  user?: string;
  timeoutMs?: number;
  retries: number;
  memory?: number;
  pids?: number;
  cpus?: number;
  /** Copied from the host into the container before its command runs: `source` absolute, `target` absolute in the container. */
  files: { source: string; target: string; shown: string }[];
  tags: string[];
}

export interface TestConfig {
  /** The config file (absolute) and its directory. */
  file: string;
  dir: string;
  images: Map<string, TestImage>;
  jobs: TestJob[];
}

const TOP_KEYS = ['$schema', 'images', 'jobs'];
const BUILD_KEYS = ['context', 'dockerfile', 'buildArgs', 'target'];
const JOB_KEYS = [
  'name',
  'image',
  'run',
  'steps',
  'env',
  'passEnv',
  'workdir',
  'user',
  'timeout',
  'retries',
  'memory',
  'pids',
  'cpus',
  'files',
  'tags',
];
const FILE_KEYS = ['source', 'target'];
/** Job names become file names and image name components: keep them plain. */
const JOB_NAME = /^[A-Za-z0-9]+(?:(?:[._]|__|-+)[A-Za-z0-9]+)*$/;
/** Built images are tagged `petri-test/<name>`: a name component. */
const IMAGE_NAME = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** A config error: the file, the key path, the bad value and what was expected, on one line. */
class Checker {
  constructor(private readonly file: string) {}

  fail(path: string, value: unknown, expected: string): never {
    const where = path === '' ? '' : `${path}: `;
    throw new PetriError(`${this.file}: ${where}${show(value)} is not valid: expected ${expected}`, {
      code: 'ECONFIG',
    });
  }

  object(path: string, value: unknown, keys: string[] | undefined, what: string): Record<string, unknown> {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) this.fail(path, value, what);
    const record = value as Record<string, unknown>;
    if (keys) {
      for (const key of Object.keys(record)) {
        if (!keys.includes(key)) {
          throw new PetriError(
            `${this.file}: ${join(path, key)}: unknown key${didYouMean(key, keys)}: expected one of ${keys.join(', ')}`,
            { code: 'ECONFIG' },
          );
        }
      }
    }
    return record;
  }

  string(path: string, value: unknown, what = 'a non-empty string'): string {
    if (typeof value !== 'string' || value === '') this.fail(path, value, what);
    return value;
  }

  stringList(path: string, value: unknown, what: string): string[] {
    if (!Array.isArray(value)) this.fail(path, value, what);
    return value.map((item, i) => this.string(`${path}[${i}]`, item));
  }

  /** Runs a units parser, turning its error into a config error at `path`. */
  parsed<T>(path: string, value: unknown, what: string, parse: (v: string | number) => T): T {
    if (typeof value !== 'string' && typeof value !== 'number') this.fail(path, value, what);
    try {
      return parse(value);
    } catch {
      return this.fail(path, value, what);
    }
  }

  integer(path: string, value: unknown, min: number, what: string): number {
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) this.fail(path, value, what);
    return value;
  }
}

function join(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`;
}

function show(value: unknown): string {
  if (value === undefined) return 'nothing';
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/**
 * Checks a loaded config (from any format) and returns it with every default
 * applied. `file` is the config file's path (absolute): relative paths in it
 * are relative to its directory.
 */
export function validateConfig(
  raw: unknown,
  file: string,
  cwd = process.cwd(),
  hostEnv: NodeJS.ProcessEnv = process.env,
): TestConfig {
  const shown = relative(cwd, file) || file;
  const check: Checker = new Checker(shown.startsWith('..') ? file : shown);
  const dir = resolve(file, '..');
  const top = check.object('', raw, TOP_KEYS, 'an object with images and jobs');
  const imagesRaw = check.object('images', top.images ?? {}, undefined, 'an object of image name → image');
  const images = new Map<string, TestImage>();
  for (const [name, value] of Object.entries(imagesRaw)) {
    if (!IMAGE_NAME.test(name)) {
      check.fail(
        'images',
        name,
        'image names of lowercase letters and digits, separated by one . or _, two _, or dashes',
      );
    }
    images.set(name, validateImage(check, `images.${name}`, name, value, dir));
  }
  if (!Array.isArray(top.jobs) || top.jobs.length === 0) check.fail('jobs', top.jobs, 'a non-empty array of jobs');
  const jobs: TestJob[] = [];
  const seen = new Map<string, number>();
  for (const [i, value] of top.jobs.entries()) {
    const job = validateJob(check, `jobs[${i}]`, value, [...images.keys()], hostEnv, dir);
    const lower = job.name.toLowerCase();
    const first = seen.get(lower);
    if (first !== undefined) {
      check.fail(`jobs[${i}].name`, job.name, `a name no other job has (jobs[${first}] is named like it)`);
    }
    seen.set(lower, i);
    jobs.push(job);
  }
  return { file, dir, images, jobs };
}

function validateImage(check: Checker, path: string, name: string, value: unknown, dir: string): TestImage {
  const expected = 'an object with context (a Dockerfile build) or image (an image in the store)';
  const entry = check.object(path, value, undefined, expected);
  if ('image' in entry) {
    check.object(path, entry, ['image'], expected);
    return { name, kind: 'store', ref: check.string(`${path}.image`, entry.image, 'an image name or id') };
  }
  if (!('context' in entry)) check.fail(path, value, expected);
  check.object(path, entry, BUILD_KEYS, expected);
  const context = resolve(dir, check.string(`${path}.context`, entry.context, 'a directory path'));
  const image: TestImage = { name, kind: 'build', context, buildArgs: {} };
  if (entry.dockerfile !== undefined) {
    const dockerfile = check.string(`${path}.dockerfile`, entry.dockerfile, 'a file path, relative to the context');
    image.dockerfile = isAbsolute(dockerfile) ? dockerfile : resolve(context, dockerfile);
  }
  if (entry.target !== undefined) image.target = check.string(`${path}.target`, entry.target, 'a stage name');
  if (entry.buildArgs !== undefined) {
    const args = check.object(`${path}.buildArgs`, entry.buildArgs, undefined, 'an object of NAME → value');
    for (const [key, arg] of Object.entries(args)) {
      if (!ENV_NAME.test(key)) check.fail(`${path}.buildArgs`, key, 'build arg names of letters, digits and _');
      image.buildArgs[key] = scalar(check, `${path}.buildArgs.${key}`, arg);
    }
  }
  return image;
}

function scalar(check: Checker, path: string, value: unknown): string {
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') return String(value);
  return check.fail(path, value, 'a string, number or boolean');
}

function command(check: Checker, path: string, value: unknown): string[] {
  if (typeof value === 'string') {
    if (value.trim() === '') check.fail(path, value, 'a command');
    return ['sh', '-c', value];
  }
  if (!Array.isArray(value) || value.length === 0)
    check.fail(path, value, 'a command string or a non-empty argv array');
  return value.map((arg, i) => {
    if (typeof arg !== 'string') check.fail(`${path}[${i}]`, arg, 'a string (an argv element)');
    return arg;
  });
}

function validateJob(
  check: Checker,
  path: string,
  value: unknown,
  imageNames: string[],
  hostEnv: NodeJS.ProcessEnv,
  dir: string,
): TestJob {
  const job = check.object(path, value, JOB_KEYS, 'a job object with name, image and run');
  const name = check.string(`${path}.name`, job.name, 'a job name');
  if (!JOB_NAME.test(name) || name.length > 100) {
    check.fail(`${path}.name`, name, 'up to 100 letters and digits, separated by one . or _, two _, or dashes');
  }
  const image = check.string(`${path}.image`, job.image, `one of the images: ${imageNames.join(', ') || '(none)'}`);
  if (!imageNames.includes(image)) {
    check.fail(
      `${path}.image`,
      image,
      `a key of images${didYouMean(image, imageNames)}: ${imageNames.join(', ') || 'images is empty'}`,
    );
  }
  if ((job.run === undefined) === (job.steps === undefined)) {
    check.fail(path, job.run ?? job.steps, 'exactly one of run (a command) or steps (a list of commands)');
  }
  let commands: string[][];
  if (job.steps !== undefined) {
    if (!Array.isArray(job.steps) || job.steps.length === 0) {
      check.fail(`${path}.steps`, job.steps, 'a non-empty array of commands');
    }
    commands = job.steps.map((step, i) => command(check, `${path}.steps[${i}]`, step));
  } else {
    commands = [command(check, `${path}.run`, job.run)];
  }
  const result: TestJob = {
    name,
    image,
    commands,
    steps: job.steps !== undefined,
    env: {},
    retries: 0,
    files: [],
    tags: [],
  };
  if (job.env !== undefined) {
    const env = check.object(`${path}.env`, job.env, undefined, 'an object of NAME → value');
    for (const [key, v] of Object.entries(env)) {
      if (!ENV_NAME.test(key)) check.fail(`${path}.env`, key, 'variable names of letters, digits and _');
      result.env[key] = scalar(check, `${path}.env.${key}`, v);
    }
  }
  if (job.passEnv !== undefined) {
    const names = check.stringList(`${path}.passEnv`, job.passEnv, 'an array of variable names');
    for (const [i, key] of names.entries()) {
      if (!ENV_NAME.test(key)) check.fail(`${path}.passEnv[${i}]`, key, 'a variable name of letters, digits and _');
      const value = hostEnv[key];
      if (value !== undefined && result.env[key] === undefined) result.env[key] = value;
    }
  }
  if (job.workdir !== undefined) {
    const workdir = check.string(`${path}.workdir`, job.workdir, 'an absolute path');
    if (!workdir.startsWith('/')) check.fail(`${path}.workdir`, workdir, 'an absolute path');
    result.workdir = workdir;
  }
  if (job.user !== undefined) {
    const user = typeof job.user === 'number' ? String(job.user) : job.user;
    if (typeof user !== 'string' || !/^[^:\s]+(:[^:\s]+)?$/.test(user)) {
      check.fail(`${path}.user`, job.user, 'user, uid, user:group or uid:gid');
    }
    result.user = user;
  }
  if (job.timeout !== undefined) {
    result.timeoutMs = check.parsed(`${path}.timeout`, job.timeout, 'a duration like 500ms, 30s or 1m30s', (v) =>
      parseDuration(v),
    );
  }
  if (job.retries !== undefined) result.retries = check.integer(`${path}.retries`, job.retries, 0, 'an integer ≥ 0');
  if (job.memory !== undefined) {
    result.memory = check.parsed(`${path}.memory`, job.memory, 'a size like 256m or 1g', (v) => parseSize(v));
  }
  if (job.pids !== undefined) result.pids = check.integer(`${path}.pids`, job.pids, 1, 'a positive integer');
  if (job.cpus !== undefined) {
    result.cpus = check.parsed(`${path}.cpus`, job.cpus, 'a positive number of CPUs like 0.5', parseCpus);
  }
  if (job.tags !== undefined) result.tags = check.stringList(`${path}.tags`, job.tags, 'an array of strings');
  if (job.files !== undefined) result.files = validateFiles(check, `${path}.files`, job.files, dir);
  return result;
}

function validateFiles(check: Checker, path: string, value: unknown, dir: string): TestJob['files'] {
  const expected =
    'an array of { source, target }: a host path relative to the config file, an absolute container path';
  if (!Array.isArray(value)) check.fail(path, value, expected);
  return value.map((entry, i) => {
    const at = `${path}[${i}]`;
    const file = check.object(at, entry, FILE_KEYS, 'an object with source and target');
    const shown = check.string(`${at}.source`, file.source, 'a file or directory path, relative to the config file');
    const source = resolve(dir, shown);
    if (!existsSync(source)) check.fail(`${at}.source`, shown, `an existing file or directory (${source} is missing)`);
    const target = check.string(`${at}.target`, file.target, 'an absolute path in the container');
    if (!target.startsWith('/') || target.split('/').includes('..')) {
      check.fail(`${at}.target`, target, 'an absolute path in the container, without ..');
    }
    return { source, target, shown };
  });
}
