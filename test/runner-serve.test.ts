import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { expect, it } from 'vitest';
import { Container, detectCgroupMode } from '../src/runtime/index.js';
import { runnerPath } from '../src/runtime/runner-binary.js';
import { useRunnerServer } from '../src/runtime/runner-server.js';
import { describeKernel } from './helpers/kernel.js';
import { runProbe } from './helpers/probe.js';
import { busyboxRootfs } from './helpers/rootfs.js';

/** Starts `petri-runner serve`; resolves with it and its event lines once it is listening. */
async function startServer() {
  const name = `ptest-serve-${randomBytes(4).toString('hex')}`;
  const child = spawn(runnerPath(), ['serve', '--socket', name, '--control-fd', '3'], {
    stdio: ['ignore', 'inherit', 'inherit', 'pipe'],
  });
  const channel = child.stdio[3] as Socket;
  const lines: string[] = [];
  let buffered = '';
  channel.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk;
    const parts = buffered.split('\n');
    buffered = parts.pop() ?? '';
    lines.push(...parts);
  });
  while (!lines.includes('{"event":"ready"}')) await new Promise((resolve) => setTimeout(resolve, 10));
  return { name, child, lines };
}

const ctlHeader = (id: number, roles: string, argv: string[]) => {
  const args = Buffer.from(`${argv.join('\0')}\0`);
  return Buffer.concat([Buffer.from(`${id} ctl ${roles} ${args.length}\n`), args]);
};

describeKernel('petri-runner serve (fork server)', () => {
  it('forks a runner for its parent with the connections as its control socket and stdio', async () => {
    const { name, child, lines } = await startServer();
    try {
      const out = connect(`\0${name}`);
      out.write('7 2\n');
      let stderr = '';
      out.setEncoding('utf8').on('data', (chunk: string) => {
        stderr += chunk;
      });
      const control = connect(`\0${name}`);
      control.write(ctlHeader(7, '2', ['run', '--control-fd', '3', '/nonexistent/ptest-bundle']));
      let events = '';
      control.setEncoding('utf8').on('data', (chunk: string) => {
        events += chunk;
      });
      await new Promise((resolve) => control.once('close', resolve));
      // The run failed as a spawned one would: its error event on the control socket, its exit reported by the server.
      expect(events).toContain('/nonexistent/ptest-bundle/config.json');
      while (!lines.some((l) => l.includes('"reaped"'))) await new Promise((resolve) => setTimeout(resolve, 10));
      expect(lines).toContain('{"event":"reaped","id":7,"exitCode":125,"signal":null}');
      expect(stderr).toBe('');
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('refuses connections from any process but its parent', async () => {
    const { name, child, lines } = await startServer();
    try {
      // Another process (a child of ours, not the server's parent) asks for a launch.
      const script = `const s=require('net').connect('\\0${name}');s.on('error',()=>{});s.write(Buffer.from(${JSON.stringify(
        ctlHeader(1, '-', ['run', '--control-fd', '3', '/nonexistent/x']).toString('base64'),
      )},'base64'));s.on('close',()=>{console.log('closed');process.exit(0)});setTimeout(()=>{console.log('open');process.exit(0)},3000)`;
      const other = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      let said = '';
      other.stdout.setEncoding('utf8').on('data', (chunk: string) => {
        said += chunk;
      });
      await new Promise((resolve) => other.once('close', resolve));
      expect(said.trim()).toBe('closed');
      expect(lines.filter((l) => l.includes('reaped'))).toEqual([]);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('runs containers started through it like spawned ones: output, exit code, stdin', async () => {
    useRunnerServer();
    try {
      // The server says it is ready a few ms after it is started; until then runners are spawned.
      await new Promise((resolve) => setTimeout(resolve, 300));
      const container = Container.create({
        rootfs: await busyboxRootfs(),
        command: ['sh', '-c', 'read line; echo "got $line"; echo err >&2; exit 3'],
      });
      try {
        await container.start({ stdin: 'pipe', stdout: 'pipe', stderr: 'pipe' });
        let out = '';
        let err = '';
        container.stdout?.setEncoding('utf8').on('data', (c: string) => {
          out += c;
        });
        container.stderr?.setEncoding('utf8').on('data', (c: string) => {
          err += c;
        });
        // Forked by the server: the runner's parent is not this process.
        const runner = parentOf(container.pid as number);
        expect(parentOf(runner)).not.toBe(process.pid);
        container.stdin?.end('hello\n');
        const exit = await container.wait();
        expect(exit.exitCode).toBe(3);
        expect(out).toBe('got hello\n');
        expect(err).toBe('err\n');
      } finally {
        await container.remove();
      }
    } finally {
      useRunnerServer(false);
    }
  });

  it('loads each device filter once for its runners, and gives each container its own filter', async () => {
    useRunnerServer();
    try {
      await new Promise((resolve) => setTimeout(resolve, 300));
      const mknodDisk = async (options: { privileged?: boolean } = {}) => {
        const result = await runProbe(['report'], options);
        expect(result.exitCode).toBe(0);
        return JSON.parse(result.stdout).attempts.mknodDisk as string;
      };
      // Docker's allowlist (a disk may be made, never opened), then all devices, then the allowlist again:
      // a cached program must never stand in for another.
      expect(await mknodDisk()).toBe('open:EPERM');
      expect(await mknodDisk({ privileged: true })).not.toBe('open:EPERM');
      expect(await mknodDisk()).toBe('open:EPERM');
      expect(await mknodDisk({ privileged: true })).not.toBe('open:EPERM');
      expect(await mknodDisk()).toBe('open:EPERM');
      // The server holds the two programs the runners sent it (v2 and hybrid hosts; pure v1 has no eBPF filter).
      if (detectCgroupMode() !== 'v1') {
        const server = readdirSync('/proc').find((pid) => {
          try {
            return (
              /^\d+$/.test(pid) &&
              parentOf(Number(pid)) === process.pid &&
              readlinkSync(`/proc/${pid}/exe`).includes('petri-runner')
            );
          } catch {
            return false;
          }
        });
        expect(server).toBeDefined();
        const programs = readdirSync(`/proc/${server}/fd`).filter((fd) => {
          try {
            return readlinkSync(`/proc/${server}/fd/${fd}`) === 'anon_inode:bpf-prog';
          } catch {
            return false;
          }
        });
        expect(programs).toHaveLength(2);
      }
    } finally {
      useRunnerServer(false);
    }
  });
});

function parentOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}
