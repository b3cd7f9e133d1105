import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeKernel } from './helpers/kernel.js';
import { podmanCgroupsCleanup } from './helpers/podman.js';
import { busyboxRootfs } from './helpers/rootfs.js';

const petri = join(import.meta.dirname, '..', 'dist', 'cli', 'main.js');
const run = (...args: string[]) => spawnSync(process.execPath, [petri, ...args], { encoding: 'utf8', timeout: 60_000 });
const ok = (...args: string[]) => {
  const result = run(...args);
  if (result.status !== 0) throw new Error(`petri ${args.join(' ')} exited ${result.status}: ${result.stderr}`);
  return result.stdout;
};

const havePodman = spawnSync('podman', ['--version']).status === 0;

/** The change the round trip carries: a file written, a file deleted, a directory replaced. */
const CHANGE = 'echo new > /added && rm /etc/group && rm -rf /home && mkdir /home && echo x > /home/only';
const SHOW = 'cat /added; ls /etc/group 2>&1; ls -A /home; cat /probe >/dev/null && echo probe-ok';
const EXPECTED = 'new\nls: /etc/group: No such file or directory\nonly\nprobe-ok\n';

describeKernel('images: import, run, commit, diff, save, load', () => {
  let work: string;
  let removePodmanCgroups: () => Promise<void> = async () => {};
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'ptest-images-'));
    removePodmanCgroups = podmanCgroupsCleanup();
  });
  afterAll(async () => {
    await removePodmanCgroups();
    run('rm', '-f', 'ptest-rt');
    run('rmi', '-f', 'ptest/base:1', 'ptest/committed:1', 'ptest/from-podman:1', 'localhost/ptest/podman-made:1');
    rmSync(work, { recursive: true, force: true });
  });

  it('round-trips a container change through commit, petri run and save/load', async () => {
    const rootfs = await busyboxRootfs();
    expect(ok('import', rootfs, 'ptest/base:1', '--change', 'CMD ["sh"]', '--change', 'ENV FROM_IMAGE=1')).toMatch(
      /^sha256:[0-9a-f]{64}\n$/,
    );
    expect(ok('images')).toMatch(/ptest\/base +1 +[0-9a-f]{12} /);
    expect(run('run', '--name', 'ptest-rt', 'ptest/base:1', 'sh', '-c', CHANGE).status).toBe(0);
    expect(ok('diff', 'ptest-rt').split('\n')).toEqual(
      expect.arrayContaining(['A /added', 'D /etc/group', 'C /home', 'A /home/only']),
    );
    ok('commit', 'ptest-rt', 'ptest/committed:1', '-m', 'the change', '-a', 'petri tests', '-c', 'WORKDIR /home');
    expect(ok('run', '--rm', 'ptest/committed:1', 'sh', '-c', SHOW)).toBe(EXPECTED);
    expect(ok('run', '--rm', 'ptest/committed:1', 'sh', '-c', 'echo $FROM_IMAGE $(pwd)')).toBe('1 /home\n');

    const inspected = JSON.parse(ok('inspect', 'ptest/committed:1'))[0];
    expect(inspected.RootFS.Layers).toHaveLength(2);
    expect(inspected.History.at(-1)).toMatchObject({ author: 'petri tests', comment: 'the change' });

    // save → load into a fresh name → the same image id and content.
    const archive = join(work, 'committed.tar');
    ok('save', 'ptest/committed:1', '-o', archive);
    ok('rmi', 'ptest/committed:1');
    expect(ok('load', '-i', archive)).toBe('Loaded image: ptest/committed:1\n');
    expect(JSON.parse(ok('inspect', 'ptest/committed:1'))[0].Id).toBe(inspected.Id);
    expect(ok('run', '--rm', 'ptest/committed:1', 'sh', '-c', SHOW)).toBe(EXPECTED);
  });

  it('imports a tarball, commits a running container, and prune keeps what a container uses', async () => {
    const rootfs = await busyboxRootfs();
    const tarball = join(work, 'rootfs.tar.gz');
    spawnSync('tar', ['-C', rootfs, '-czf', tarball, '.']);
    ok('import', tarball, 'ptest/from-tar:1', '-c', 'USER tester');
    expect(ok('run', '--rm', 'ptest/from-tar:1', 'sh', '-c', 'id -un; echo $HOME')).toBe('tester\n/home/tester\n');

    // A running container: commit sees what it wrote so far.
    const bg = spawn(process.execPath, [
      petri,
      'run',
      '--rm',
      '--name',
      'ptest-live',
      '-u',
      'root',
      'ptest/from-tar:1',
      'sh',
      '-c',
      'echo live > /live; sleep 30',
    ]);
    for (let i = 0; i < 100 && !run('ps').stdout.includes('ptest-live'); i++)
      await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, 200));
    ok('commit', 'ptest-live', 'ptest/live:1');
    expect(ok('run', '--rm', 'ptest/live:1', 'cat', '/live')).toBe('live\n');

    // prune while the container runs and its image has no name any more: its layers stay.
    expect(run('rmi', 'ptest/from-tar:1').stderr).toBe(
      'petri: unable to remove image ptest/from-tar:1: container ptest-live uses it; remove the container first (petri rm ptest-live) or force it with -f\n',
    );
    ok('rmi', '-f', 'ptest/from-tar:1');
    ok('prune');
    expect(run('ps').stdout).toContain('ptest-live');
    expect(ok('run', '--rm', 'ptest/live:1', 'cat', '/live')).toBe('live\n');
    ok('rm', '-f', 'ptest-live');
    await new Promise((resolve) => bg.on('exit', resolve));
    run('rmi', 'ptest/live:1');
  });

  it.skipIf(!havePodman)('writes archives podman loads and runs, and loads what podman saves [needs podman]', () => {
    const archive = join(work, 'for-podman.tar');
    if (!existsSync(archive)) ok('save', 'ptest/committed:1', '-o', archive);
    const podman = (...args: string[]) =>
      spawnSync(
        'podman',
        [
          '--root',
          join(work, 'podman'),
          '--runroot',
          join(work, 'podman-run'),
          '--storage-driver',
          'vfs',
          '--cgroup-manager',
          'cgroupfs',
          '--events-backend',
          'none',
          ...args,
        ],
        { encoding: 'utf8', timeout: 120_000 },
      );
    const loaded = podman('load', '-i', archive);
    expect(loaded.status, loaded.stderr).toBe(0);
    const ran = podman(
      'run',
      '--rm',
      '--runtime',
      'runc',
      '--network',
      'none',
      '--ulimit',
      'nofile=1024:1024',
      '--ulimit',
      'nproc=1024:1024',
      'ptest/committed:1',
      'sh',
      '-c',
      SHOW,
    );
    expect(ran.stderr).toBe('');
    expect(ran.stdout).toBe(EXPECTED);

    for (const format of ['docker-archive', 'oci-archive']) {
      const saved = join(work, `podman-${format}.tar`);
      const save = podman('save', '--format', format, '-o', saved, 'ptest/committed:1');
      expect(save.status, save.stderr).toBe(0);
      const load = run('load', '-i', saved);
      expect(load.stderr).toBe('');
      expect(load.status).toBe(0);
      const name = /Loaded image: (\S+)/.exec(load.stdout)?.[1] ?? /Loaded image ID: (\S+)/.exec(load.stdout)?.[1];
      expect(name).toBeDefined();
      ok('tag', name as string, 'ptest/from-podman:1');
      expect(ok('run', '--rm', 'ptest/from-podman:1', 'sh', '-c', SHOW)).toBe(EXPECTED);
      run('rmi', 'ptest/from-podman:1');
    }
  });
});
