import { PetriError } from '../../errors.js';
import { imageArchitecture } from '../platform.js';
import type { Descriptor } from '../types.js';

/** An OCI platform: what an image index entry says it runs on. */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

const ARCH_ALIASES: Record<string, string> = { x86_64: 'amd64', 'x86-64': 'amd64', aarch64: 'arm64', armhf: 'arm' };

/** `linux/arm64/v8`, `linux/amd64`, `arm64` (linux assumed); architecture aliases (x86_64, aarch64) accepted. */
export function parsePlatform(text: string): Platform {
  const parts = text.trim().toLowerCase().split('/');
  if (parts.some((part) => !/^[a-z0-9_.-]+$/.test(part)) || parts.length > 3) {
    throw new PetriError(`invalid platform "${text}": expected os/arch[/variant], like linux/amd64 or linux/arm64/v8`, {
      code: 'EUSAGE',
    });
  }
  const [os, arch, variant] = parts.length === 1 ? ['linux', parts[0] as string] : parts;
  return normalizePlatform({ os: os as string, architecture: arch as string, ...(variant ? { variant } : {}) });
}

/** Containerd's normalisation: arch aliases, arm64's default variant v8 and arm's v7 made explicit. */
export function normalizePlatform(platform: Platform): Platform {
  const architecture = ARCH_ALIASES[platform.architecture] ?? platform.architecture;
  let variant = platform.variant;
  if (architecture === 'arm64' && (variant === undefined || variant === '8')) variant = 'v8';
  if (architecture === 'arm' && (variant === undefined || /^\d$/.test(variant))) variant = `v${variant ?? '7'}`;
  if (architecture === 'amd64' && variant === 'v1') variant = undefined;
  return { os: platform.os, architecture, ...(variant ? { variant } : {}) };
}

/** The platform petri runs images of on this machine. */
export function hostPlatform(): Platform {
  const architecture = imageArchitecture();
  const armVersion = (process.config.variables as { arm_version?: string }).arm_version;
  return normalizePlatform({
    os: 'linux',
    architecture,
    ...(architecture === 'arm' && armVersion ? { variant: `v${armVersion}` } : {}),
  });
}

export function formatPlatform(platform: Platform): string {
  return [platform.os, platform.architecture, platform.variant].filter(Boolean).join('/');
}

/** Whether an index entry's platform is the wanted one (after normalising both). */
export function platformMatches(entry: Platform | undefined, wanted: Platform): boolean {
  if (!entry) return false;
  const a = normalizePlatform(entry);
  const b = normalizePlatform(wanted);
  return a.os === b.os && a.architecture === b.architecture && a.variant === b.variant;
}

/**
 * The manifest of an image index for `wanted`: an exact match, else (for arm)
 * the highest lower variant that the machine also runs, as containerd picks.
 */
export function selectManifest(manifests: readonly Descriptor[], wanted: Platform): Descriptor | undefined {
  const exact = manifests.find((m) => platformMatches(m.platform, wanted));
  if (exact) return exact;
  const want = normalizePlatform(wanted);
  if (want.architecture !== 'arm' || !want.variant) return undefined;
  const level = Number(want.variant.slice(1));
  for (let v = level - 1; v >= 5; v--) {
    const found = manifests.find((m) => platformMatches(m.platform, { ...want, variant: `v${v}` }));
    if (found) return found;
  }
  return undefined;
}

/** The platforms an index offers, for an error message (attestations and unknown/unknown left out). */
export function offeredPlatforms(manifests: readonly Descriptor[]): string[] {
  return manifests
    .map((m) => m.platform)
    .filter((p): p is NonNullable<typeof p> => !!p && p.os !== 'unknown')
    .map((p) => formatPlatform(normalizePlatform(p)));
}
