import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, expect, it } from 'vitest';
import { containersDir } from '../src/runtime/paths.js';
import { describeKernel, isRoot } from './helpers/kernel.js';
import { busyboxRootfs } from './helpers/rootfs.js';

// The package's bin: the bundled CLI (scripts/bundle-cli.mjs), as users run it.
const petri = join(import.meta.dirname, '..', 'dist', 'bin', 'petri.cjs');
const run = (args: string[], options: { input?: string; uid?: number } = {}) =>
  spawnSync(process.execPath, [petri, ...args], { encoding: 'utf8', timeout: 20_000, ...options });

it('prints usage and version without root', () => {
  const help = run(['--help']);
  expect(help.status).toBe(0);
  expect(help.stdout).toContain('usage: petri <command>');
  expect(run(['run', '--rm', '--help']).stdout).toContain('--rootfs DIR');
  expect(run(['version']).stdout).toMatch(/^petri \d+\.\d+\.\d+\n$/);
  const unknown = run(['frobnicate']);
  expect(unknown.status).toBe(125);
  expect(unknown.stderr).toBe('petri: unknown command "frobnicate" (see petri --help)\n');
});

describeKernel('petri run', () => {
  let rootfs: string;
  beforeAll(async () => {
    rootfs = await busyboxRootfs();
  });

  it('streams output and exits with the command code', () => {
    const result = run(['run', '--rm', '--rootfs', rootfs, '--', 'sh', '-c', 'echo out; echo err >&2; exit 3']);
    expect(result).toMatchObject({ status: 3, stdout: 'out\n', stderr: 'err\n' });
  });

  it('applies options: env, workdir, user, hostname, limits, stdin', () => {
    const result = run(
      [
        'run',
        '--rm',
        '--rootfs',
        rootfs,
        '-e',
        'A=1',
        '-w',
        '/tmp',
        '-u',
        '1000:1000',
        '--hostname',
        'h1',
        '-m',
        '64m',
        '--pids',
        '32',
        '--cpus',
        '0.5',
        '-i',
        'sh',
        '-c',
        'echo $A $(pwd) $(id -u):$(id -g) $(hostname); cat',
      ],
      { input: 'from stdin\n' },
    );
    expect(result.stderr).toBe('');
    expect(result.stdout).toBe('1 /tmp 1000:1000 h1\nfrom stdin\n');
    expect(result.status).toBe(0);
  });

  it('exits 128+N when a signal kills the command, 124 on timeout', () => {
    expect(run(['run', '--rm', '--rootfs', rootfs, 'sh', '-c', 'kill -9 $$']).status).toBe(137);
    const timedOut = run(['run', '--rm', '--rootfs', rootfs, '--timeout', '200ms', 'sleep', '10']);
    expect(timedOut.status).toBe(124);
    expect(timedOut.stderr).toMatch(/^petri: container [0-9a-f]{12} timed out after 200ms and was killed\n$/);
  });

  it('never writes to the root filesystem directory', () => {
    const result = run([
      'run',
      '--rm',
      '--rootfs',
      rootfs,
      'sh',
      '-c',
      'echo x > /written && rm /probe && ls /written',
    ]);
    expect(result.status).toBe(0);
    expect(run(['run', '--rm', '--rootfs', rootfs, 'ls', '/probe']).status).toBe(0);
    expect(run(['run', '--rm', '--rootfs', rootfs, 'ls', '/written']).status).toBe(1);
  });

  it.each([
    [
      ['run', '--rm', '--rootfs', '/nonexistent', 'true'],
      'petri: petri run: root filesystem /nonexistent does not exist or is not a directory',
    ],
    [
      ['run', '--rm', '--rootfs', '{rootfs}'],
      'petri: petri run: no command given (petri run --rootfs DIR -- CMD [ARGS…])',
    ],
    [['run', '--rm', 'no-such-image'], 'petri: no such image: no-such-image'],
    [['run', '--rm'], 'petri: petri run: no image given (petri run IMAGE [CMD…], or petri run --rootfs DIR CMD…)'],
    [
      ['run', '--rm', '--rootfs', '{rootfs}', '--frob', 'true'],
      'petri: petri run: unknown option --frob (see petri run --help)',
    ],
    [
      ['run', '--rm', '--rootfs', '{rootfs}', '-m', '12q', 'true'],
      'petri: invalid memory limit "12q": expected a number with an optional unit b, k, m or g (like 64m)',
    ],
    [
      ['run', '--rm', '--rootfs', '{rootfs}', '--timeout', 'soon', 'true'],
      'petri: invalid timeout "soon": expected a duration like 500ms, 10s, 1m30s or 2h',
    ],
    [
      ['run', '--rm', '--rootfs', '{rootfs}', '--cpus', '-1', 'true'],
      'petri: invalid cpus "-1": expected a positive number like 0.5 or 2',
    ],
    [
      ['run', '--rm', '--rootfs', '{rootfs}', '--ulimit', 'nofile=1:999999999999', 'true'],
      'petri: cannot raise ulimit nofile to 999999999999: petri only lowers limits',
    ],
    [['run', '--rm', '--rootfs', '{rootfs}', 'no-such-command'], 'petri: cannot start container'],
  ])('gives bad input one clear line: %j', (args, message) => {
    const result = run(args.map((a) => a.replace('{rootfs}', rootfs)));
    expect(result.status).not.toBe(0);
    expect(result.stdout).toBe('');
    expect(result.stderr.split('\n').filter(Boolean)).toHaveLength(1);
    expect(result.stderr.startsWith(message)).toBe(true);
  });

  it('keeps an exited container without --rm until petri rm, like docker', async () => {
    const first = run(['run', '--name', 'ptest-keep', '--rootfs', rootfs, 'sh', '-c', 'echo hi > /kept; exit 3']);
    expect(first.status).toBe(3);
    expect(run(['ps']).stdout).not.toContain('ptest-keep');
    const listed = run(['ps', '-a']).stdout;
    expect(listed).toMatch(/^CONTAINER ID +IMAGE +COMMAND +CREATED +STATUS +NAMES\n/);
    expect(listed).toMatch(/[0-9a-f]{12} .*Exited \(3\) .* ptest-keep\n/);
    const again = run(['run', '--name', 'ptest-keep', '--rootfs', rootfs, 'true']);
    expect(again.stderr).toMatch(
      /^petri: the container name "ptest-keep" is already in use by container [0-9a-f]{12}; remove it first \(petri rm ptest-keep\)\n$/,
    );
    const id = /([0-9a-f]{12}) .* ptest-keep\n/.exec(listed)?.[1] as string;
    expect(readFileSync(join(containersDir(), id, 'upper', 'kept'), 'utf8')).toBe('hi\n');
    expect(run(['rm', 'ptest-keep'])).toMatchObject({ status: 0, stdout: 'ptest-keep\n' });
    expect(run(['ps', '-a']).stdout).not.toContain('ptest-keep');
    expect(existsSync(join(containersDir(), id))).toBe(false);
    expect(run(['rm', 'ptest-nosuch'])).toMatchObject({
      status: 1,
      stderr: 'petri: no such container: ptest-nosuch\n',
    });
  });

  it('removes a running container only with rm -f', async () => {
    const bg = spawn(process.execPath, [petri, 'run', '--name', 'ptest-bg', '--rootfs', rootfs, 'sleep', '30']);
    const exited = new Promise<number | null>((resolve) => bg.on('exit', resolve));
    for (let i = 0; i < 100 && !run(['ps']).stdout.includes('ptest-bg'); i++)
      await new Promise((r) => setTimeout(r, 50));
    expect(run(['ps']).stdout).toMatch(/ Up +ptest-bg\n/);
    expect(run(['rm', 'ptest-bg']).stderr).toBe(
      'petri: cannot remove container ptest-bg: it is running; stop it first, or force it with petri rm -f\n',
    );
    expect(run(['rm', '-f', 'ptest-bg'])).toMatchObject({ status: 0 });
    expect(await exited).toBe(137);
    expect(run(['ps', '-a']).stdout).not.toContain('ptest-bg');
  });

  it('names PETRI_ROOT and the fix when overlayfs cannot use it', () => {
    // A private mount namespace with PETRI_ROOT on an overlay (which cannot hold an overlay's upper dir).
    const script = [
      'set -e; d=$(mktemp -d /tmp/ptest-ovl-XXXXXX); mkdir $d/l $d/u $d/w $d/m',
      'mount -t overlay o -o lowerdir=$d/l,upperdir=$d/u,workdir=$d/w $d/m',
      `PETRI_ROOT=$d/m/state ${process.execPath} ${petri} run --rm --rootfs ${rootfs} true || echo "exit=$?"`,
      'umount $d/m; rm -rf $d',
    ].join('\n');
    const result = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script], { encoding: 'utf8' });
    expect(result.stderr).toMatch(
      /^petri: cannot start container [0-9a-f]{12}: mount overlay on \S+: Invalid argument: \S+\/m\/state is on a filesystem overlayfs cannot use .*; set PETRI_ROOT to a directory on ext4, xfs, btrfs or tmpfs\n$/,
    );
    expect(result.stdout).toBe('exit=125\n');
  });

  it.skipIf(!isRoot)('refuses to run without root, saying so', () => {
    const result = run(['run', '--rm', '--rootfs', rootfs, 'true'], { uid: 65534 });
    expect(result.stderr).toBe(
      'petri: petri must run as root to create containers (namespaces, mounts, cgroups); try sudo\n',
    );
    expect(result.status).toBe(125);
  });
});
