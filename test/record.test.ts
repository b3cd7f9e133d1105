import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import {
  type ContainerRecord,
  readRecord,
  recordPath,
  rewriteRecordInPlace,
  writeRecord,
} from '../src/runtime/record.js';

const dir = mkdtempSync(join(tmpdir(), 'ptest-record-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const record = (extra: Partial<ContainerRecord>): ContainerRecord => ({
  id: 'abcdefabcdef',
  name: 'r',
  createdAt: '2026-12-04T00:00:00.000Z',
  owner: { pid: 1, startTime: 2 },
  cgroupDirs: ['/sys/fs/cgroup/unified/petri/abcdefabcdef'],
  state: 'created',
  command: ['sh', '-c', 'echo é'],
  lower: ['/l/1'],
  ...extra,
});

it('rewrites a record in place: padded, never truncated, read back whole', () => {
  const long = record({ state: 'running', initPid: 123456, ports: [{ container: 80, host: 40000 }] });
  const first = writeRecord(dir, long);
  expect(statSync(recordPath(dir)).size).toBe(first);
  // Shorter: the file keeps its length, the rest is spaces, and it parses as the new record.
  const short = record({ state: 'exited' });
  expect(rewriteRecordInPlace(dir, short, first)).toBe(first);
  expect(statSync(recordPath(dir)).size).toBe(first);
  expect(readFileSync(recordPath(dir), 'utf8').endsWith(' ')).toBe(true);
  expect(readRecord(dir)).toEqual(short);
  // Longer (non-ASCII counts in bytes): the file grows to it.
  const longer = record({ state: 'running', initPid: 7, command: ['é'.repeat(400)] });
  const grown = rewriteRecordInPlace(dir, longer, first);
  expect(grown).toBe(Buffer.byteLength(JSON.stringify(longer)));
  expect(statSync(recordPath(dir)).size).toBe(grown);
  expect(readRecord(dir)).toEqual(longer);
});
