import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { missingForContainers } from './helpers/kernel.js';
import { missingTool, type RunningRegistry, startRegistry } from './helpers/registry.js';

const top = join(import.meta.dirname, '..');
const petriBin = join(top, 'dist', 'cli', 'main.js');
const missing = missingForContainers() ?? missingTool('docker-registry');
const describeHere = missing ? describe.skip : describe;

interface JsonEvent {
  type: string;
  [key: string]: unknown;
}

describeHere(
  `petri test with a registry: missing images pulled, --push-failed${missing ? ` [skipped: ${missing}]` : ''}`,
  () => {
    let work: string;
    let root: string;
    let registry: RunningRegistry | undefined;
    const petri = (cwd: string, args: string[]) => {
      const r = spawnSync(process.execPath, [petriBin, ...args], {
        cwd,
        encoding: 'utf8',
        timeout: 120_000,
        env: { ...process.env, PETRI_ROOT: root, NO_COLOR: '1' },
      });
      return { status: r.status, stdout: r.stdout, stderr: r.stderr };
    };
    const ok = (args: string[]) => {
      const r = petri(work, args);
      if (r.status !== 0) throw new Error(`petri ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
      return r.stdout;
    };
    const events = (stdout: string) =>
      stdout
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as JsonEvent);

    beforeAll(async () => {
      work = mkdtempSync(join(tmpdir(), 'ptest-testreg-'));
      root = join(work, 'root');
      const context = join(work, 'busybox-context');
      cpSync(join(top, 'fixtures', 'build', 'busybox'), context, { recursive: true });
      copyFileSync('/bin/busybox', join(context, 'busybox'));
      ok(['build', '-q', '-t', 'petri-fixture/busybox', context]);
      mkdirSync(join(work, 'registry'));
      registry = await startRegistry(join(work, 'registry'));
    });
    afterAll(async () => {
      await registry?.stop();
      if (work) rmSync(work, { recursive: true, force: true });
    });

    it('pulls a job image missing from the store (not with --pull never); pushes failed jobs’ images', () => {
      const host = registry?.host as string;
      const remote = `${host}/fixtures/busybox:1`;
      ok(['push', 'petri-fixture/busybox', remote]);
      const dir = join(work, 'project');
      mkdirSync(dir);
      writeFileSync(
        join(dir, 'petri.config.json'),
        JSON.stringify({
          images: { remote: { image: remote } },
          jobs: [
            { name: 'fine', image: 'remote', run: 'true' },
            { name: 'broken', image: 'remote', run: 'echo left-behind > /state; exit 4' },
          ],
        }),
      );
      const never = petri(dir, ['test', '--reporter', 'json', '--pull', 'never']);
      expect(never.status).toBe(1);
      const imageError = events(never.stdout).find((e) => e.type === 'image' && e.status === 'error');
      expect(imageError?.error).toMatch(/image remote: .*--pull missing/);

      const r = petri(dir, ['test', '--reporter', 'json', '--push-failed', `${host}/failed`, '--junit', 'junit.xml']);
      expect(r.status, r.stderr).toBe(1);
      const all = events(r.stdout);
      const runId = (all.find((e) => e.type === 'plan') as { runId: string }).runId;
      const results = Object.fromEntries(
        all.filter((e) => e.type === 'job-end').map((e) => [(e.result as { name: string }).name, e.result]),
      ) as Record<string, { status: string; pushed?: string; pushError?: string; artifact?: { json: string } }>;
      expect(results.fine?.status).toBe('passed');
      expect(results.broken?.status).toBe('failed');
      expect(results.broken?.pushError).toBeUndefined();
      const pushed = results.broken?.pushed as string;
      expect(pushed).toMatch(new RegExp(`^${host.replace(/\./g, '\\.')}/failed:broken-${runId}@sha256:[0-9a-f]{64}$`));
      const report = JSON.parse(readFileSync(join(dir, results.broken?.artifact?.json as string), 'utf8'));
      expect(report.committed.pushed).toBe(pushed);
      expect(readFileSync(join(dir, 'junit.xml'), 'utf8')).toContain(
        `<property name="artifact.broken.pushed" value="${pushed}"/>`,
      );
      // What went up is the failed state: pulled back by its tag, it holds the file the job wrote.
      const tag = pushed.slice(0, pushed.indexOf('@'));
      ok(['rmi', `petri-failed/broken:${runId}`]);
      ok(['pull', tag]);
      expect(ok(['run', '--rm', tag, 'cat', '/state'])).toBe('left-behind\n');
      expect(ok(['ps', '-a', '-q'])).toBe('');
    });

    it('refuses a --push-failed that is not REGISTRY/REPO, or that --no-keep-failed makes empty', () => {
      const dir = join(work, 'project');
      for (const bad of ['failed', `${registry?.host}/failed:1`, `${registry?.host}/`]) {
        const r = petri(dir, ['test', '--push-failed', bad]);
        expect(r.status).not.toBe(0);
        expect(r.stderr).toContain('expected REGISTRY/REPO without a tag');
      }
      const r = petri(dir, ['test', '--push-failed', `${registry?.host}/x`, '--no-keep-failed']);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toContain('--no-keep-failed does not commit');
    });
  },
);
