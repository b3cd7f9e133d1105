import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { GenericContainer } from '../src/index.js';
import { findContainer, listContainers, removeContainer } from '../src/runtime/containers.js';
import { containerDir } from '../src/runtime/paths.js';
import { readRecord } from '../src/runtime/record.js';
import { sweepContainers } from '../src/runtime/sweep.js';
import { type ApiImages, apiImages } from './helpers/api-image.js';
import { describeKernel, missingForContainers } from './helpers/kernel.js';
import { spawnCollect } from './helpers/spawn.js';

const dist = join(import.meta.dirname, '..', 'dist', 'lib', 'index.js');

let images: ApiImages;
let script: string;

beforeAll(async () => {
  if (missingForContainers()) return;
  images = await apiImages();
  // A test process of its own: starts containers through the built package, says which, then does as told.
  script = join(images.dir, 'harness.mjs');
  writeFileSync(
    script,
    `
    import { GenericContainer, ImageStore, LayerCache } from ${JSON.stringify(dist)};
    const [storeDir, layersDir, mode] = process.argv.slice(2);
    const options = { store: ImageStore.open(storeDir), layers: new LayerCache(layersDir) };
    const make = () => new GenericContainer('ptest/api:1', options).withCommand(['sh', '-c', 'echo up; exec sleep 1000']);
    if (mode === 'reuse') {
      const reused = await make().withReuse().withEnvironment({ REUSE: 'yes' }).start();
      console.log(JSON.stringify({ ids: [reused.getId()] }));
    } else {
      const started = await make().start();
      const kept = mode === 'exit' ? await make().withAutoRemove(false).start() : undefined;
      console.log(JSON.stringify({ ids: [started.getId(), ...(kept ? [kept.getId()] : [])] }));
      if (mode === 'throw') throw new Error('boom');
      if (mode === 'wait') setInterval(() => {}, 1000);
    }
    `,
  );
});
afterAll(() => images?.remove());

interface Harness {
  child: ChildProcess;
  ids: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
}

async function harness(mode: 'exit' | 'throw' | 'wait' | 'reuse'): Promise<Harness> {
  const child = spawn(process.execPath, [script, join(images.dir, 'images'), join(images.dir, 'layers'), mode], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (chunk) => {
    stderr += chunk;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal, stderr })),
  );
  const line = await new Promise<string>((resolve, reject) => {
    child.stdout?.once('data', (chunk) => resolve(String(chunk)));
    void exited.then(({ code, stderr }) => reject(new Error(`the harness exited ${code} before starting: ${stderr}`)));
  });
  return { child, ids: (JSON.parse(line) as { ids: string[] }).ids, exited };
}

/** Nothing of the container is left: no record, no cgroup, no running init. */
function allGone(id: string): void {
  expect(existsSync(containerDir(id)), `record of ${id}`).toBe(false);
  for (const hierarchy of ['', 'unified/', 'devices/', 'freezer/']) {
    expect(existsSync(`/sys/fs/cgroup/${hierarchy}petri/${id}`), `cgroup ${hierarchy}${id}`).toBe(false);
  }
}

function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return false;
  }
}

describeKernel('API cleanup: the containers of a test process go with it', () => {
  it('on a normal exit (a running container does not keep the process alive); withAutoRemove(false) keeps its layer', async () => {
    const { ids, exited } = await harness('exit');
    const [started, kept] = ids as [string, string];
    expect(await exited).toMatchObject({ code: 0, signal: null });
    allGone(started);
    try {
      const record = readRecord(containerDir(kept));
      expect(record).toMatchObject({ state: 'exited', keep: true, exit: { signal: 9 } });
      expect(existsSync(join(containerDir(kept), 'upper'))).toBe(true);
      expect(record?.cgroupDirs.some((dir) => existsSync(dir))).toBe(false);
    } finally {
      await removeContainer(kept, { force: true });
    }
    allGone(kept);
  });

  it('on an uncaught exception', async () => {
    const { ids, exited } = await harness('throw');
    const result = await exited;
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('boom');
    allGone(ids[0] as string);
  });

  it.each(['SIGTERM', 'SIGINT'] as const)('on %s, which then ends the process as it would have', async (signal) => {
    const { child, ids, exited } = await harness('wait');
    const id = ids[0] as string;
    expect(existsSync(containerDir(id))).toBe(true);
    child.kill(signal);
    expect(await exited).toMatchObject({ code: null, signal });
    allGone(id);
  });

  it('on SIGKILL: the container dies with its runner, and the next petri process sweeps the rest', async () => {
    const { child, ids, exited } = await harness('wait');
    const id = ids[0] as string;
    const initPid = readRecord(containerDir(id))?.initPid as number;
    expect(running(initPid)).toBe(true);
    child.kill('SIGKILL');
    await exited;
    for (let i = 0; i < 100 && running(initPid); i++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(running(initPid)).toBe(false);
    // Another test process's background sweep may get there first.
    const removed = await sweepContainers();
    if (removed.length > 0) expect(removed).toContain(id);
    allGone(id);
  });

  it('withReuse: the container outlives its process, and the same configuration gets it back', async () => {
    const { ids, exited } = await harness('reuse');
    const id = ids[0] as string;
    expect((await exited).code).toBe(0);
    expect(findContainer(id).status).toBe('running');
    const make = () =>
      new GenericContainer('ptest/api:1', { store: images.store, layers: images.layers })
        .withCommand(['sh', '-c', 'echo up; exec sleep 1000'])
        .withReuse();
    const again = await make().withEnvironment({ REUSE: 'yes' }).start();
    try {
      expect(again.getId()).toBe(id);
      expect((await again.exec(['sh', '-c', 'echo $REUSE'])).stdout).toBe('yes\n');
      const logs = await again.logs();
      expect(await new Promise((resolve) => logs.once('data', resolve))).toBe('up\n');
      logs.destroy();
      // Disposing of a reused container leaves it running.
      await again[Symbol.asyncDispose]();
      expect(findContainer(id).status).toBe('running');
      // A different configuration is another container.
      const other = await make().start();
      try {
        expect(other.getId()).not.toBe(id);
      } finally {
        await other.stop();
      }
      allGone(other.getId());
    } finally {
      await again.stop();
    }
    allGone(id);
    expect(listContainers().filter((c) => c.id === id)).toEqual([]);
  });
});

describeKernel('API start-up: the fork server', () => {
  it("forks a process's first container: start() waits for the server it launched rather than spawning a runner", async () => {
    // The default store (PETRI_ROOT), as a user's test has it: the image is found without a turn of the
    // event loop, so the server's `ready` line is still unread when the container is created.
    const first = join(images.dir, 'first.mjs');
    writeFileSync(
      first,
      `
      import { readdirSync, readFileSync } from 'node:fs';
      import { GenericContainer } from ${JSON.stringify(dist)};
      const container = await new GenericContainer('ptest/api:1').withCommand(['sleep', '1000']).start();
      // this process's children: the second field after the command name in /proc/PID/stat is the parent
      const parentOf = (pid) => {
        try {
          const stat = readFileSync(\`/proc/\${pid}/stat\`, 'utf8');
          return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
        } catch {
          return undefined; // gone meanwhile
        }
      };
      const children = readdirSync('/proc').filter((name) => /^\\d+$/.test(name) && parentOf(name) === process.pid);
      console.log(JSON.stringify(children.map((pid) => readFileSync(\`/proc/\${pid}/cmdline\`, 'utf8').split('\\0')[1])));
      await container.stop();
      `,
    );
    const run = async () => {
      const { code, stdout, stderr } = await spawnCollect(process.execPath, [first], {
        env: { ...process.env, PETRI_ROOT: images.dir },
      }).exit;
      expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
      return JSON.parse(stdout) as string[];
    };
    // The first run in a fresh store prepares the image's layers, with turns of the event loop; a
    // user's later runs do not: the second run is the one that shows.
    await run();
    // the fork server only: no `petri-runner run` of its own
    expect(await run()).toEqual(['serve']);
    expect(existsSync(join(images.dir, 'containers')) ? readdirSync(join(images.dir, 'containers')) : []).toEqual([]);
  });
});
