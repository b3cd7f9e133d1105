import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { listContainers } from '../src/runtime/containers.js';
import { Container, containersDir, sweepContainers } from '../src/runtime/index.js';
import { drainSpares, spareCount } from '../src/runtime/spares.js';
import { describeKernel } from './helpers/kernel.js';
import { busyboxRootfs } from './helpers/rootfs.js';

const top = join(import.meta.dirname, '..');

async function run(rootfs: string, script: string): Promise<{ container: Container; output: string }> {
  const container = Container.create({ rootfs, command: ['sh', '-c', script] });
  await container.start();
  let output = '';
  container.stdout?.on('data', (chunk) => {
    output += chunk;
  });
  const exit = await container.wait();
  expect(exit.exitCode).toBe(0);
  return { container, output };
}

function firstLine(child: ReturnType<typeof spawn>): Promise<number> {
  return new Promise((resolve, reject) => {
    child.stdout?.once('data', (chunk) => resolve(Number(String(chunk).trim())));
    child.once('exit', (code) => reject(new Error(`exited ${code}`)));
  });
}

const mine = () => readdirSync(containersDir()).filter((name) => name.startsWith(`spare-${process.pid}-`));

describeKernel('spare container directories', () => {
  afterEach(() => drainSpares());

  it('gives a removed container’s directory to the next container, emptied, with its own record and bundle', async () => {
    const rootfs = await busyboxRootfs();
    // A spare is kept by a process that made more than one container: this worker has made one at least now.
    await (await run(rootfs, 'true')).container.remove();
    drainSpares();
    const first = await run(rootfs, 'echo kept > /written && mkdir -p /deep/er && echo x > /deep/er/f && chmod 700 /');
    expect(statSync(join(first.container.dir, 'upper')).mode & 0o777).toBe(0o700);
    const inodes = ['', 'record.json', 'config.json', 'work', 'rootfs'].map(
      (name) => statSync(join(first.container.dir, name)).ino,
    );
    await first.container.remove();
    expect(spareCount()).toBe(1);
    const [spare] = mine();
    expect(spare).toBeDefined();
    // A spare is nobody's container: no record, not listed, not swept while this process lives.
    expect(existsSync(join(containersDir(), spare as string, 'record.json'))).toBe(false);
    expect(listContainers().map((c) => c.id)).not.toContain(first.container.id);
    expect(await sweepContainers()).not.toContain(spare);

    // The next container: the same inodes, its own id, record and bundle, and nothing of the first's files.
    const second = await run(rootfs, 'ls /written /deep 2>&1; stat -c "root %a" /');
    expect(second.container.dir).not.toBe(first.container.dir);
    expect(
      ['', 'record.json', 'config.json', 'work', 'rootfs'].map(
        (name) => statSync(join(second.container.dir, name)).ino,
      ),
    ).toEqual(inodes);
    expect(spareCount()).toBe(0);
    expect(second.output).toContain('No such file or directory');
    expect(second.output).not.toContain('kept');
    // The writable layer is made anew: its root (the container's `/`) does not keep the first one's mode.
    expect(second.output).toContain('root 755');
    const record = JSON.parse(readFileSync(join(second.container.dir, 'record.json'), 'utf8'));
    expect(record.id).toBe(second.container.id);
    const bundle = readFileSync(join(second.container.dir, 'config.json'), 'utf8');
    expect(JSON.parse(bundle).process.args).toEqual(second.container.spec.process.args);
    expect(bundle.endsWith('}')).toBe(true); // cut to its length: nothing of the longer bundle before it
    expect(listContainers().map((c) => c.id)).toContain(second.container.id);
    await second.container.remove();
    drainSpares();
    expect(mine()).toEqual([]);
  });

  it('keeps no spare in a process that made one container only (a build with one RUN, petri run)', async () => {
    const script = `
      import { Container } from ${JSON.stringify(join(top, 'dist/lib/index.js'))};
      import { readdirSync } from 'node:fs';
      const c = Container.create({ rootfs: ${JSON.stringify(await busyboxRootfs())}, command: ['true'] });
      await c.start();
      await c.wait();
      await c.remove();
      console.log(readdirSync(${JSON.stringify(containersDir())}).filter((n) => n.startsWith('spare-' + process.pid + '-')).length);
    `;
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(child.status, child.stderr).toBe(0);
    expect(child.stdout.trim()).toBe('0');
  });

  it('keeps no spare past the process: removed at exit and on SIGTERM, swept after a SIGKILL', async () => {
    const rootfs = await busyboxRootfs();
    const script = (then: string) => `
      import { Container } from ${JSON.stringify(join(top, 'dist/lib/index.js'))};
      // Two containers: a process keeps a spare once it has made more than one.
      for (let i = 0; i < 2; i++) {
        const c = Container.create({ rootfs: ${JSON.stringify(rootfs)}, command: ['true'] });
        await c.start();
        await c.wait();
        await c.remove();
      }
      ${then}
    `;
    const spares = (pid: number) => readdirSync(containersDir()).filter((n) => n.startsWith(`spare-${pid}-`));

    const exits = spawnSync(process.execPath, ['--input-type=module', '-e', script('console.log(process.pid)')], {
      encoding: 'utf8',
    });
    expect(exits.status, exits.stderr).toBe(0);
    expect(spares(Number(exits.stdout.trim()))).toEqual([]);

    const hold = 'console.log(process.pid); setInterval(() => {}, 1000);';
    const killed = spawn(process.execPath, ['--input-type=module', '-e', script(hold)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const pid = await firstLine(killed);
    expect(spares(pid)).toHaveLength(1);
    killed.kill('SIGKILL');
    await new Promise((resolve) => killed.once('exit', resolve));
    // (Another test worker's background sweep may get to it first.)
    await sweepContainers();
    expect(spares(pid)).toEqual([]);

    // SIGTERM (how vitest ends its workers): removed, and the signal still ends the process.
    const termed = spawn(process.execPath, ['--input-type=module', '-e', script(hold)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const termedPid = await firstLine(termed);
    expect(spares(termedPid)).toHaveLength(1);
    termed.kill('SIGTERM');
    const signal = await new Promise((resolve) => termed.once('exit', (_code, sig) => resolve(sig)));
    expect(signal).toBe('SIGTERM');
    expect(spares(termedPid)).toEqual([]);
  });

  it('marks a new containers directory for ext4 to spread its subdirectories (chattr +T)', async (context) => {
    const root = mkdtempSync(join(tmpdir(), 'petri-topdir-'));
    try {
      const fs = spawnSync('stat', ['-f', '-c', '%T', root], { encoding: 'utf8' }).stdout.trim();
      if (fs !== 'ext2/ext3') context.skip(`${tmpdir()} is on ${fs}, not ext4: the flag is ext4's`);
      if (spawnSync('lsattr', ['-d', root]).status !== 0) context.skip('needs lsattr (e2fsprogs)');
      const rootfs = await busyboxRootfs();
      const script = `
        import { Container } from ${JSON.stringify(join(top, 'dist/lib/index.js'))};
        const c = Container.create({ rootfs: ${JSON.stringify(rootfs)}, command: ['true'] });
        await c.start();
        await c.wait();
        await c.remove();
        await new Promise((resolve) => setTimeout(resolve, 300)); // chattr runs in the background
      `;
      const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
        encoding: 'utf8',
        env: { ...process.env, PETRI_ROOT: root },
      });
      expect(child.status, child.stderr).toBe(0);
      const flags = spawnSync('lsattr', ['-d', join(root, 'containers')], { encoding: 'utf8' }).stdout.split(' ')[0];
      expect(flags).toContain('T');
      expect(readdirSync(join(root, 'containers'))).toEqual([]);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
