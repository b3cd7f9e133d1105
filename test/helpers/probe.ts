import { type RunResult, runContainer } from '../../src/runtime/index.js';
import type { ContainerOptions } from '../../src/runtime/options.js';
import { busyboxRootfs } from './rootfs.js';

export interface ProbeReport {
  pid: number;
  ppid: number;
  uid: number;
  gid: number;
  groups: number[];
  hostname: string;
  cwd: string;
  umask: string;
  env: string[];
  status: Record<string, string>;
  pid1Comm: string;
  pid1Cmdline: string[];
  pids: number[];
  interfaces: { name: string; up: boolean }[];
  mounts: { target: string; fstype: string; options: string; source: string }[];
  cgroup: string[];
  rlimits: { nofile: [number, number]; nproc: [number, number] };
  nsInodes: Record<string, string>;
  attempts: Record<string, string>;
  masked: Record<string, string>;
  limits: Record<string, string | null>;
}

/** Runs the probe with `args` in a throwaway busybox container. */
export async function runProbe(
  args: string[],
  options: Partial<ContainerOptions> = {},
  input?: string,
): Promise<RunResult> {
  return runContainer({ rootfs: await busyboxRootfs(), command: ['/probe', ...args], ...options }, input);
}

/** Runs `probe report` and returns what the probe saw. */
export async function probeReport(options: Partial<ContainerOptions> = {}): Promise<ProbeReport> {
  const result = await runProbe(['report'], options);
  if (result.exitCode !== 0) throw new Error(`probe report exited ${result.exitCode}: ${result.stderr}`);
  return JSON.parse(result.stdout) as ProbeReport;
}
