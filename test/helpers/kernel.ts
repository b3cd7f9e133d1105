import { existsSync } from 'node:fs';
import { describe } from 'vitest';
import { detectCgroupMode } from '../../src/runtime/cgroups/index.js';

export const isRoot = process.getuid?.() === 0;

/** Why the kernel-level tests cannot run here, or undefined when they can. */
export function missingForContainers(): string | undefined {
  if (!isRoot) return 'needs root (namespaces, mounts, cgroups)';
  if (!existsSync('/bin/busybox')) return 'needs /bin/busybox (apt-get install busybox-static)';
  try {
    detectCgroupMode();
  } catch (error) {
    return (error as Error).message;
  }
  return undefined;
}

/**
 * `describe` for suites that need the real kernel as root: when something is
 * missing they are skipped with the reason in their title, never passed silently.
 */
export function describeKernel(title: string, body: () => void): void {
  const missing = missingForContainers();
  if (missing) describe.skip(`${title} [skipped: ${missing}]`, body);
  else describe(title, body);
}
