import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeKernel } from './helpers/kernel.js';
import { busyboxRootfs } from './helpers/rootfs.js';

const top = join(import.meta.dirname, '..');

describeKernel('an installed package without a prebuilt runner', () => {
  let pkg: string;
  let state: string;
  beforeAll(() => {
    // What `npm install petri` gives: dist/ and the runner's C sources, no build/.
    pkg = mkdtempSync(join(tmpdir(), 'ptest-pkg-'));
    state = mkdtempSync(join(tmpdir(), 'ptest-state-'));
    for (const part of ['dist', 'runner', 'package.json'])
      cpSync(join(top, part), join(pkg, part), { recursive: true });
    symlinkSync(join(top, 'node_modules'), join(pkg, 'node_modules'));
  });
  afterAll(() => {
    rmSync(pkg, { recursive: true, force: true });
    rmSync(state, { recursive: true, force: true });
  });

  it('compiles petri-runner on first use into the state directory, and uses it', async () => {
    const rootfs = await busyboxRootfs();
    const env = { ...process.env, PETRI_ROOT: state };
    const run = spawnSync(
      process.execPath,
      [join(pkg, 'dist/bin/petri.cjs'), 'run', '--rootfs', rootfs, 'echo', 'built'],
      {
        encoding: 'utf8',
        env,
        timeout: 60_000,
      },
    );
    expect(run.stderr).toBe('');
    expect(run).toMatchObject({ status: 0, stdout: 'built\n' });
    const [dir] = readdirSync(join(state, 'runner'));
    expect(dir).toMatch(new RegExp(`^${process.arch}-[0-9a-f]{16}$`));
    expect(existsSync(join(state, 'runner', dir as string, 'petri-runner'))).toBe(true);
  });

  it('says clearly when there is no C compiler', async () => {
    const rootfs = await busyboxRootfs();
    const fresh = mkdtempSync(join(tmpdir(), 'ptest-state-'));
    try {
      const run = spawnSync(process.execPath, [join(pkg, 'dist/bin/petri.cjs'), 'run', '--rootfs', rootfs, 'true'], {
        encoding: 'utf8',
        env: { ...process.env, PETRI_ROOT: fresh, CC: 'no-such-cc' },
      });
      expect(run.stderr).toBe(
        'petri: cannot build petri-runner: no C compiler "no-such-cc" found; install one (apt-get install gcc) or set CC\n',
      );
      expect(run.status).toBe(125);
    } finally {
      rmSync(fresh, { recursive: true, force: true });
    }
  });
});
