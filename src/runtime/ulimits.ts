import { readFileSync } from 'node:fs';
import { PetriError } from '../errors.js';

/** Docker's `--ulimit` names → the /proc/self/limits row and the OCI rlimit type. */
const ULIMITS: Record<string, { row: string; type: string }> = {
  core: { row: 'Max core file size', type: 'RLIMIT_CORE' },
  cpu: { row: 'Max cpu time', type: 'RLIMIT_CPU' },
  data: { row: 'Max data size', type: 'RLIMIT_DATA' },
  fsize: { row: 'Max file size', type: 'RLIMIT_FSIZE' },
  locks: { row: 'Max file locks', type: 'RLIMIT_LOCKS' },
  memlock: { row: 'Max locked memory', type: 'RLIMIT_MEMLOCK' },
  msgqueue: { row: 'Max msgqueue size', type: 'RLIMIT_MSGQUEUE' },
  nice: { row: 'Max nice priority', type: 'RLIMIT_NICE' },
  nofile: { row: 'Max open files', type: 'RLIMIT_NOFILE' },
  nproc: { row: 'Max processes', type: 'RLIMIT_NPROC' },
  rss: { row: 'Max resident set', type: 'RLIMIT_RSS' },
  rtprio: { row: 'Max realtime priority', type: 'RLIMIT_RTPRIO' },
  rttime: { row: 'Max realtime timeout', type: 'RLIMIT_RTTIME' },
  sigpending: { row: 'Max pending signals', type: 'RLIMIT_SIGPENDING' },
  stack: { row: 'Max stack size', type: 'RLIMIT_STACK' },
};

export interface Rlimit {
  type: string;
  soft: number;
  hard: number;
}

/** Parses `nofile=1024:2048` or `nofile=1024` (soft = hard) like `docker run --ulimit`. */
export function parseUlimit(text: string): { name: string; soft: number; hard: number } {
  const match = /^([a-z]+)=(\d+)(?::(\d+))?$/.exec(text.trim());
  if (!match) throw new PetriError(`invalid ulimit "${text}": expected NAME=SOFT[:HARD] like nofile=1024:1024`);
  const soft = Number(match[2]);
  const hard = match[3] === undefined ? soft : Number(match[3]);
  return { name: match[1] as string, soft, hard };
}

/**
 * Checks the limits against the current process: petri only lowers limits
 * (raising one needs CAP_SYS_RESOURCE, which CI sandboxes often lack).
 */
export function resolveUlimits(ulimits: { name: string; soft: number; hard: number }[]): Rlimit[] {
  if (ulimits.length === 0) return [];
  const current = readOwnLimits();
  return ulimits.map(({ name, soft, hard }) => {
    const known = ULIMITS[name];
    if (!known) {
      throw new PetriError(`unknown ulimit "${name}": expected one of ${Object.keys(ULIMITS).join(', ')}`);
    }
    if (soft > hard)
      throw new PetriError(`invalid ulimit ${name}=${soft}:${hard}: the soft limit is above the hard one`);
    const max = current.get(known.row);
    if (max !== undefined && hard > max) {
      throw new PetriError(
        `cannot raise ulimit ${name} to ${hard}: petri only lowers limits, and the current hard limit is ${max}`,
      );
    }
    return { type: known.type, soft, hard };
  });
}

function readOwnLimits(): Map<string, number> {
  const limits = new Map<string, number>();
  for (const line of readFileSync('/proc/self/limits', 'utf8').split('\n').slice(1)) {
    const row = line.slice(0, 26).trim();
    const hard = line.slice(47, 68).trim();
    if (row && hard && hard !== 'unlimited') limits.set(row, Number(hard));
  }
  return limits;
}
