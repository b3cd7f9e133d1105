import { accessSync, constants, existsSync, mkdirSync, readdirSync, readFileSync, renameSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { PetriError } from '../errors.js';
import { petriRoot } from './paths.js';

// import.meta.dirname, not a file URL: parsing URLs at load time is measurable in `petri run`.
const packageRoot = join(import.meta.dirname, '..', '..');
let cached: string | undefined;

/**
 * The path of a `petri-runner` that fits this machine: `$PETRI_RUNNER`, the one
 * `npm run build` left in `build/`, or one compiled on first use with `cc` into
 * `$PETRI_ROOT/runner/<source hash>/` (a registry install has the C sources only).
 */
export function runnerPath(): string {
  if (cached) return cached;
  const override = process.env.PETRI_RUNNER;
  if (override) {
    if (!isExecutable(override)) throw new PetriError(`PETRI_RUNNER=${override} is not an executable file`);
    cached = override;
    return cached;
  }
  const prebuilt = join(packageRoot, 'build', 'petri-runner');
  if (isExecutable(prebuilt)) {
    cached = prebuilt;
    return cached;
  }
  cached = buildRunner();
  return cached;
}

function buildRunner(): string {
  // Loaded here, not at the top: commands that never build the runner (petri build's cached path) skip them.
  const require = createRequire(import.meta.url);
  const { createHash } = require('node:crypto') as typeof import('node:crypto');
  const { execFileSync } = require('node:child_process') as typeof import('node:child_process');
  const sourceDir = join(packageRoot, 'runner');
  if (!existsSync(sourceDir)) {
    throw new PetriError(`petri-runner is missing: neither build/petri-runner nor its sources in ${sourceDir} exist`);
  }
  const files = readdirSync(sourceDir)
    .filter((f) => f.endsWith('.c') || f.endsWith('.h'))
    .sort();
  const hash = createHash('sha256');
  for (const file of files) hash.update(file).update(readFileSync(join(sourceDir, file)));
  const out = join(petriRoot(), 'runner', `${process.arch}-${hash.digest('hex').slice(0, 16)}`, 'petri-runner');
  if (isExecutable(out)) return out;
  mkdirSync(dirname(out), { recursive: true });
  const cc = process.env.CC || 'cc';
  const tmp = `${out}.${process.pid}.tmp`;
  const args = [
    '-O2',
    '-Wall',
    '-Wextra',
    '-o',
    tmp,
    ...files.filter((f) => f.endsWith('.c')).map((f) => join(sourceDir, f)),
  ];
  const compile = (extra: string[]) => execFileSync(cc, [...extra, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  try {
    // Static where the C library allows it (each fork and exec of a container's runner then has no dynamic linking to do).
    try {
      compile(['-static']);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw error;
      compile([]);
    }
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new PetriError(
        `cannot build petri-runner: no C compiler "${cc}" found; install one (apt-get install gcc) or set CC`,
      );
    }
    const stderr = String((error as { stderr?: Buffer }).stderr ?? '')
      .trim()
      .split('\n')[0];
    throw new PetriError(`cannot build petri-runner with ${cc}: ${stderr}`, { cause: error });
  }
  renameSync(tmp, out);
  return out;
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}
