import { readdirSync, readFileSync } from 'node:fs';
import { processStartTime } from '../runtime/record.js';

/** A process as seen at one moment: its pid and start time (so a reused pid is never signalled). */
export interface ProcessRef {
  pid: number;
  startTime: number;
}

/** The process `root` (when it is still the one that started at `startTime`) and all its descendants. */
export function processTree(root: ProcessRef): ProcessRef[] {
  if (processStartTime(root.pid) !== root.startTime) return [];
  const children = new Map<number, number[]>();
  for (const name of safeList('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const ppid = parentOf(Number(name));
    if (ppid !== undefined) children.set(ppid, [...(children.get(ppid) ?? []), Number(name)]);
  }
  const tree: ProcessRef[] = [root];
  for (let i = 0; i < tree.length; i++) {
    for (const pid of children.get((tree[i] as ProcessRef).pid) ?? []) {
      const startTime = processStartTime(pid);
      if (startTime !== undefined) tree.push({ pid, startTime });
    }
  }
  return tree;
}

export function alive(ref: ProcessRef): boolean {
  return processStartTime(ref.pid) === ref.startTime;
}

/** Sends a signal to a process if it is still the same process. */
export function signal(ref: ProcessRef, name: NodeJS.Signals): void {
  if (!alive(ref)) return;
  try {
    process.kill(ref.pid, name);
  } catch {
    // exited in between
  }
}

export function commandLine(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return [];
  }
}

function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
