// A private dockerd for the side-by-side benchmarks: Debian's docker.io on its own
// socket, data root and exec root under a work directory, without iptables or a
// bridge, and with lowered ulimits (this machine lacks CAP_SYS_RESOURCE). `stop()`
// removes everything it made: the daemon (and its containerd), mounts under the
// work directory and the cgroups it created (cgroupfs leaves docker/ and
// docker/buildkit/ behind).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';

/** Debian's docker.io client (BuildKit built in); a newer CLI elsewhere on PATH needs the buildx plugin. */
export const dockerCli = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';

/** Whether docker.io's dockerd and client are installed. */
export function haveDocker() {
  return (
    spawnSync('dockerd', ['--version'], { stdio: 'ignore' }).status === 0 &&
    spawnSync(dockerCli, ['--version'], { stdio: 'ignore' }).status === 0
  );
}

export class PrivateDockerd {
  /** @param {string} work @param {{ extraArgs?: string[] }} [options] */
  constructor(work, { extraArgs = [] } = {}) {
    this.work = work;
    this.sock = `unix://${work}/d.sock`;
    this.extraArgs = extraArgs;
    this.cgroupsBefore = cgroupsNamed('docker');
    this.process = undefined;
  }

  /** Environment for the docker client talking to this daemon. */
  env(extra = {}) {
    return { ...process.env, DOCKER_HOST: this.sock, DOCKER_CONFIG: join(this.work, 'docker-config'), ...extra };
  }

  async start() {
    const work = this.work;
    const dockerd = spawn(
      'dockerd',
      [
        '--iptables=false',
        '--ip6tables=false',
        '--bridge=none',
        '--default-ulimit',
        'nofile=1024:1024',
        '--default-ulimit',
        'nproc=1024:1024',
        ...this.extraArgs,
        '-H',
        this.sock,
        '--data-root',
        join(work, 'docker-data'),
        '--exec-root',
        join(work, 'docker-exec'),
        '--pidfile',
        join(work, 'd.pid'),
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    this.process = dockerd;
    let log = '';
    dockerd.stderr.on('data', (d) => {
      log = (log + d).slice(-4000);
    });
    const exited = new Promise((resolve) => dockerd.once('exit', resolve));
    for (let i = 0; i < 300; i++) {
      if (dockerd.exitCode !== null) break;
      if (spawnSync(dockerCli, ['info', '--format', 'x'], { stdio: 'ignore', env: this.env() }).status === 0) return;
      await Promise.race([exited, new Promise((r) => setTimeout(r, 100))]);
    }
    throw new Error(`dockerd did not come up:\n${log}`);
  }

  /** Stops the daemon (SIGKILL, with its containerd, after 30 s), unmounts what it left under work, removes its cgroups. */
  async stop() {
    const dockerd = this.process;
    if (dockerd && dockerd.exitCode === null && dockerd.signalCode === null) {
      const exited = new Promise((resolve) => dockerd.once('exit', resolve));
      dockerd.kill('SIGTERM');
      const timeout = new Promise((resolve) => setTimeout(() => resolve('timeout'), 30_000));
      if ((await Promise.race([exited, timeout])) === 'timeout') {
        // dockerd's own containerd keeps its pid in the exec root
        const containerdPid = join(this.work, 'docker-exec', 'containerd', 'containerd.pid');
        dockerd.kill('SIGKILL');
        if (existsSync(containerdPid)) {
          try {
            process.kill(Number(readFileSync(containerdPid, 'utf8')), 'SIGKILL');
          } catch {}
        }
        await exited;
      }
    }
    const mounts = readFileSync('/proc/self/mounts', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[1])
      .filter((target) => target?.startsWith(`${this.work}/`))
      .reverse();
    for (const target of mounts) spawnSync('umount', ['-l', target]);
    for (const dir of cgroupsNamed('docker').filter((d) => !this.cgroupsBefore.includes(d))) removeCgroupTree(dir);
  }
}

/** `name` at the top of every cgroup hierarchy (v2, or each v1 controller and the unified one). */
export function cgroupsNamed(name) {
  const roots = ['/sys/fs/cgroup', ...readdirSync('/sys/fs/cgroup').map((d) => join('/sys/fs/cgroup', d))];
  return roots.map((root) => join(root, name)).filter((dir) => existsSync(dir));
}

/** Removes an empty cgroup tree, children first; a cgroup still in use stays. */
export function removeCgroupTree(dir) {
  let children = [];
  try {
    children = readdirSync(dir, { withFileTypes: true }).filter((c) => c.isDirectory());
  } catch {}
  for (const child of children) removeCgroupTree(join(dir, child.name));
  try {
    rmdirSync(dir);
  } catch {
    // not empty: in use, not ours to take
  }
}
