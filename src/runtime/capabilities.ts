import { readFileSync } from 'node:fs';
import { PetriError } from '../errors.js';

/** Every capability Linux knows, in bit order (CAP_CHOWN = 0 … CAP_CHECKPOINT_RESTORE = 40). */
export const ALL_CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_DAC_READ_SEARCH',
  'CAP_FOWNER',
  'CAP_FSETID',
  'CAP_KILL',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETPCAP',
  'CAP_LINUX_IMMUTABLE',
  'CAP_NET_BIND_SERVICE',
  'CAP_NET_BROADCAST',
  'CAP_NET_ADMIN',
  'CAP_NET_RAW',
  'CAP_IPC_LOCK',
  'CAP_IPC_OWNER',
  'CAP_SYS_MODULE',
  'CAP_SYS_RAWIO',
  'CAP_SYS_CHROOT',
  'CAP_SYS_PTRACE',
  'CAP_SYS_PACCT',
  'CAP_SYS_ADMIN',
  'CAP_SYS_BOOT',
  'CAP_SYS_NICE',
  'CAP_SYS_RESOURCE',
  'CAP_SYS_TIME',
  'CAP_SYS_TTY_CONFIG',
  'CAP_MKNOD',
  'CAP_LEASE',
  'CAP_AUDIT_WRITE',
  'CAP_AUDIT_CONTROL',
  'CAP_SETFCAP',
  'CAP_MAC_OVERRIDE',
  'CAP_MAC_ADMIN',
  'CAP_SYSLOG',
  'CAP_WAKE_ALARM',
  'CAP_BLOCK_SUSPEND',
  'CAP_AUDIT_READ',
  'CAP_PERFMON',
  'CAP_BPF',
  'CAP_CHECKPOINT_RESTORE',
] as const;

/** Docker's default capability set (moby `oci/caps/defaults.go`): CapEff 00000000a80425fb for root. */
export const DEFAULT_CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

/** Accepts `NET_ADMIN`, `cap_net_admin`, `CAP_NET_ADMIN` or `ALL`; returns the canonical name. */
export function normalizeCapability(name: string): string {
  const upper = name.trim().toUpperCase();
  if (upper === 'ALL') return 'ALL';
  const full = upper.startsWith('CAP_') ? upper : `CAP_${upper}`;
  if (!(ALL_CAPABILITIES as readonly string[]).includes(full)) {
    throw new PetriError(`unknown capability "${name}": expected a name like NET_ADMIN or SYS_PTRACE, or ALL`);
  }
  return full;
}

/**
 * Docker's rule: start from the defaults, add, then drop (`ALL` adds or drops
 * everything). "All" means all that petri itself holds: a sandbox may lack some
 * (CAP_SYS_RESOURCE on some CI machines), and asking for one of those by name is an error.
 */
export function resolveCapabilities(
  add: string[] = [],
  drop: string[] = [],
  privileged = false,
  available: readonly string[] = ownBoundingSet(),
): string[] {
  if (privileged) return ALL_CAPABILITIES.filter((c) => available.includes(c));
  const adds = add.map(normalizeCapability);
  const drops = drop.map(normalizeCapability);
  for (const cap of adds) {
    if (cap !== 'ALL' && !available.includes(cap)) {
      throw new PetriError(`cannot add capability ${cap}: petri itself does not hold it here`);
    }
  }
  let caps: string[] = adds.includes('ALL') ? [...ALL_CAPABILITIES] : [...DEFAULT_CAPABILITIES, ...adds];
  if (drops.includes('ALL')) caps = adds.filter((c) => c !== 'ALL');
  caps = caps.filter((c) => !drops.includes(c) && available.includes(c));
  return ALL_CAPABILITIES.filter((c) => caps.includes(c));
}

let bounding: string[] | undefined;

/** The capabilities in this process's bounding set (/proc/self/status CapBnd). */
export function ownBoundingSet(): string[] {
  if (bounding) return bounding;
  let mask = (1n << BigInt(ALL_CAPABILITIES.length)) - 1n;
  try {
    const match = /^CapBnd:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (match) mask = BigInt(`0x${match[1]}`);
  } catch {
    // not Linux: keep every capability
  }
  bounding = ALL_CAPABILITIES.filter((_, bit) => (mask >> BigInt(bit)) & 1n);
  return bounding;
}

/** The capability mask as /proc/self/status prints it (CapEff: 00000000a80425fb). */
export function capabilityMask(caps: string[]): string {
  let mask = 0n;
  for (const cap of caps) mask |= 1n << BigInt(ALL_CAPABILITIES.indexOf(cap as (typeof ALL_CAPABILITIES)[number]));
  return mask.toString(16).padStart(16, '0');
}
