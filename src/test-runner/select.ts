import { createHash } from 'node:crypto';
import { PetriError } from '../errors.js';
import type { TestJob } from './config-validate.js';

/** `--shard I/N`: the I-th of N parts (1-based). */
export interface Shard {
  index: number;
  count: number;
}

export function parseShard(text: string): Shard {
  const match = /^(\d+)\/(\d+)$/.exec(text.trim());
  const index = Number(match?.[1]);
  const count = Number(match?.[2]);
  if (!match || count < 1 || index < 1 || index > count) {
    throw new PetriError(`invalid --shard "${text}": expected I/N with 1 ≤ I ≤ N, like 2/4`);
  }
  return { index, count };
}

/**
 * The shard a job belongs to (1-based): a hash of its name, so a job stays in
 * its shard whatever other jobs are added, removed or filtered out, and every
 * job is in exactly one shard.
 */
export function shardOf(name: string, count: number): number {
  const hash = createHash('sha256').update(name).digest();
  return (hash.readUInt32BE(0) % count) + 1;
}

/**
 * Whether a job matches a `--filter` pattern: a glob (`*`, `?`, `[…]`) must
 * match the whole name or a whole tag; other text matches a part of the name
 * or of a tag.
 */
export function matchesFilter(job: Pick<TestJob, 'name' | 'tags'>, pattern: string): boolean {
  const candidates = [job.name, ...job.tags];
  if (/[*?[]/.test(pattern)) {
    const glob = globRegExp(pattern);
    return candidates.some((c) => glob.test(c));
  }
  return candidates.some((c) => c.includes(pattern));
}

function globRegExp(pattern: string): RegExp {
  let source = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i] as string;
    if (c === '*') source += '.*';
    else if (c === '?') source += '.';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end < 0) source += '\\[';
      else {
        const body = pattern.slice(i + 1, end).replace(/\\/g, '\\\\');
        source += `[${body.startsWith('!') ? `^${body.slice(1)}` : body}]`;
        i = end;
      }
    } else source += c.replace(/[.+^${}()|\\\]]/g, '\\$&');
  }
  return new RegExp(`^${source}$`);
}

/** The jobs to run: those matching any of the filters (all when none), then those in the shard. */
export function selectJobs(jobs: TestJob[], filters: string[], shard?: Shard): TestJob[] {
  return jobs.filter(
    (job) =>
      (filters.length === 0 || filters.some((f) => matchesFilter(job, f))) &&
      (!shard || shardOf(job.name, shard.count) === shard.index),
  );
}
