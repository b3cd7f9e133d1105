import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeKernel } from './helpers/kernel.js';
import { busyboxRootfs } from './helpers/rootfs.js';

const petri = join(import.meta.dirname, '..', 'dist', 'cli', 'main.js');
const ok = (...args: string[]) => {
  const result = spawnSync(process.execPath, [petri, ...args], { encoding: 'utf8', timeout: 60_000 });
  if (result.status !== 0) throw new Error(`petri ${args.join(' ')} exited ${result.status}: ${result.stderr}`);
  return result.stdout;
};
const haveDocker = spawnSync('dockerd', ['--version']).status === 0 && spawnSync('docker', ['--version']).status === 0;

const CHANGE = 'echo new > /added && rm /etc/group && rm -rf /home && mkdir /home && echo x > /home/only';
const SHOW = 'cat /added; ls /etc/group 2>&1; ls -A /home';
const EXPECTED = 'new\nls: /etc/group: No such file or directory\nonly\n';

function cgroupsNamed(name: string): string[] {
  const roots = ['/sys/fs/cgroup', ...readdirSync('/sys/fs/cgroup').map((d) => join('/sys/fs/cgroup', d))];
  return roots.map((root) => join(root, name)).filter((dir) => existsSync(dir));
}

describeKernel('archives and a real Docker daemon', () => {
  let work: string;
  let dockerd: ChildProcess | undefined;
  let before: string[];
  const docker = (...args: string[]) =>
    spawnSync('docker', ['-H', `unix://${work}/d.sock`, ...args], { encoding: 'utf8', timeout: 120_000 });

  beforeAll(async () => {
    if (!haveDocker) return;
    work = mkdtempSync(join(tmpdir(), 'ptest-docker-'));
    before = cgroupsNamed('docker');
    dockerd = spawn(
      'dockerd',
      [
        '--iptables=false',
        '--ip6tables=false',
        '--bridge=none',
        '--default-ulimit',
        'nofile=1024:1024',
        '--default-ulimit',
        'nproc=1024:1024',
        '-H',
        `unix://${work}/d.sock`,
        '--data-root',
        join(work, 'data'),
        '--exec-root',
        join(work, 'exec'),
        '--pidfile',
        join(work, 'd.pid'),
      ],
      { stdio: 'ignore' },
    );
    for (let i = 0; i < 300 && docker('info').status !== 0; i++) await new Promise((r) => setTimeout(r, 100));
  }, 60_000);

  afterAll(async () => {
    spawnSync(process.execPath, [petri, 'rm', '-f', 'ptest-docker']);
    spawnSync(process.execPath, [petri, 'rmi', 'ptest/docker-base:1', 'ptest/for-docker:1', 'ptest/from-docker:1']);
    if (!dockerd) return;
    const exited = new Promise((resolve) => dockerd?.on('exit', resolve));
    dockerd.kill('SIGTERM');
    await exited;
    for (const dir of cgroupsNamed('docker').filter((d) => !before.includes(d))) {
      try {
        rmdirSync(dir);
      } catch {
        // not empty: not ours
      }
    }
    rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it.skipIf(!haveDocker)(
    'docker load runs what petri save wrote, and petri runs what docker save wrote [needs docker.io]',
    async () => {
      expect(docker('info').status).toBe(0);
      ok('import', await busyboxRootfs(), 'ptest/docker-base:1');
      ok('run', '--name', 'ptest-docker', 'ptest/docker-base:1', 'sh', '-c', CHANGE);
      ok('commit', 'ptest-docker', 'ptest/for-docker:1');
      const archive = join(work, 'petri.tar');
      ok('save', 'ptest/for-docker:1', '-o', archive);
      const loaded = docker('load', '-i', archive);
      expect(loaded.stderr).toBe('');
      expect(loaded.stdout).toContain('ptest/for-docker:1');
      const ran = docker('run', '--rm', '--network', 'none', 'ptest/for-docker:1', 'sh', '-c', SHOW);
      expect(ran.stderr).toBe('');
      expect(ran.stdout).toBe(EXPECTED);

      const saved = join(work, 'docker.tar');
      expect(docker('save', '-o', saved, 'ptest/for-docker:1').status).toBe(0);
      ok('rmi', 'ptest/for-docker:1');
      expect(ok('load', '-i', saved)).toContain('Loaded image: ptest/for-docker:1');
      expect(ok('run', '--rm', 'ptest/for-docker:1', 'sh', '-c', SHOW)).toBe(EXPECTED);
    },
    120_000,
  );

  it.skipIf(!haveDocker)(
    'petri repro --docker loads a failed job into Docker and reruns it there (exit code and state); prints without a daemon [needs docker.io]',
    async () => {
      const root = join(work, 'repro-root');
      const project = join(work, 'repro-project');
      mkdirSync(project);
      const env = { ...process.env, PETRI_ROOT: root, DOCKER_HOST: `unix://${work}/d.sock` };
      const run = (args: string[], extra: Record<string, string> = {}) =>
        spawnSync(process.execPath, [petri, ...args], {
          cwd: project,
          encoding: 'utf8',
          timeout: 120_000,
          env: { ...env, ...extra },
        });
      expect(run(['import', await busyboxRootfs(), 'ptest/repro-base:1']).status).toBe(0);
      writeFileSync(
        join(project, 'petri.config.json'),
        JSON.stringify({
          images: { base: { image: 'ptest/repro-base:1' } },
          jobs: [{ name: 'fails', image: 'base', run: 'echo broken >> /state; cat /state; exit 3', memory: '64m' }],
        }),
      );
      const tested = run(['test', '--reporter', 'plain', '--artifacts', 'arts']);
      expect(tested.status).toBe(1);
      expect(existsSync(join(project, 'arts', 'fails.tar'))).toBe(true);

      const rerun = run(['repro', 'arts/fails.tar', '--docker', '--rerun']);
      expect(rerun.stderr).toContain('petri repro: docker load -i arts/fails.tar');
      expect(rerun.stderr).toMatch(
        /petri repro: docker run --rm --network none --memory 64m --memory-swap 64m petri-failed\/fails:/,
      );
      expect(rerun.stderr).toContain('petri repro: exit code 3 (the job: exit code 3)');
      // The committed state: the job's line is there, and the rerun adds its own.
      expect(rerun.stdout).toContain('broken\nbroken\n');
      expect(rerun.status).toBe(3);
      const image = /petri-failed\/fails:\S+/.exec(rerun.stderr)?.[0] as string;
      expect(docker('image', 'inspect', image).status).toBe(0);

      // --print, no terminal without --rerun, or no daemon: the commands, nothing run.
      for (const [args, extra] of [
        [['--docker', '--print', '--rerun'], {}],
        [['--docker'], {}],
        [['--docker', '--rerun'], { DOCKER_HOST: `unix://${work}/nothing.sock` }],
      ] as const) {
        const printed = run(['repro', 'arts/fails.tar', ...args], extra);
        expect(printed.status, args.join(' ')).toBe(0);
        expect(printed.stdout).toContain('docker load -i arts/fails.tar\n');
        expect(printed.stdout).toContain(`docker run --rm --network none --memory 64m --memory-swap 64m ${image}\n`);
        expect(printed.stderr).not.toContain('petri repro: docker');
      }
      expect(run(['repro', 'arts/fails.tar', '--print']).stderr).toContain('--print goes with --docker');
      docker('rmi', image);
    },
    180_000,
  );
});
