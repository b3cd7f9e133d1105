import { PetriError } from '../../errors.js';
import { parseReference } from '../reference.js';

/** Docker Hub's name, and the host its API is served from. */
export const DOCKER_HUB = 'docker.io';
const DOCKER_HUB_API = 'registry-1.docker.io';
/** The key Docker writes Docker Hub's credentials under in config.json. */
export const DOCKER_HUB_AUTH_KEY = 'https://index.docker.io/v1/';

/** An image reference resolved against a registry, the way Docker reads names. */
export interface RemoteReference {
  /** `docker.io`, `ghcr.io`, `localhost:5000`, `[::1]:5000` */
  registry: string;
  /** The repository in that registry: `library/busybox`, `org/app` */
  repository: string;
  /** The tag; undefined when the reference pins a digest. */
  tag?: string;
  digest?: string;
}

/**
 * Reads `NAME[:TAG][@DIGEST]` as Docker does (distribution/reference's
 * ParseNormalizedNamed): a first component with a `.` or a `:`, or
 * `localhost`, is a registry; otherwise the registry is Docker Hub, where a
 * one-component name is in `library/`. `busybox` → docker.io/library/busybox:latest.
 * With a digest, the tag is dropped (the digest decides, as in Docker).
 */
export function normalizeReference(text: string): RemoteReference {
  const parsed = parseReference(text);
  const slash = parsed.name.indexOf('/');
  const first = slash < 0 ? '' : parsed.name.slice(0, slash);
  let registry = DOCKER_HUB;
  let repository = parsed.name;
  if (slash >= 0 && (/[.:]/.test(first) || first === 'localhost' || first !== first.toLowerCase())) {
    registry = first;
    repository = parsed.name.slice(slash + 1);
  }
  if (registry === 'index.docker.io' || registry === DOCKER_HUB_API) registry = DOCKER_HUB;
  if (registry === DOCKER_HUB && !repository.includes('/')) repository = `library/${repository}`;
  const result: RemoteReference = { registry, repository };
  if (parsed.digest) result.digest = parsed.digest;
  else result.tag = parsed.tag;
  return result;
}

/** `docker.io/library/busybox` → `busybox`, `docker.io/org/app` → `org/app`; other registries keep their host. */
export function familiarName(registry: string, repository: string): string {
  if (registry !== DOCKER_HUB) return `${registry}/${repository}`;
  const rest = repository.startsWith('library/') ? repository.slice('library/'.length) : repository;
  return rest.includes('/') ? repository : rest;
}

/** `docker.io/library/busybox:latest`, `localhost:5000/app@sha256:…` */
export function canonicalString(ref: RemoteReference): string {
  const name = `${ref.registry}/${ref.repository}`;
  return ref.digest ? `${name}@${ref.digest}` : `${name}:${ref.tag ?? 'latest'}`;
}

/** The name the image store gives a pulled image: the familiar `name:tag` (`busybox:latest`), like `docker images`. */
export function storeTag(ref: RemoteReference): string | undefined {
  return ref.tag === undefined ? undefined : `${familiarName(ref.registry, ref.repository)}:${ref.tag}`;
}

/** Other spellings of a reference that name the same image in the store (`docker.io/library/x:1` → `x:1`). */
export function familiarRef(text: string): string | undefined {
  try {
    const ref = normalizeReference(text);
    const name = familiarName(ref.registry, ref.repository);
    return ref.digest ? `${name}@${ref.digest}` : `${name}:${ref.tag}`;
  } catch {
    return undefined;
  }
}

/** The host[:port] a registry's API is served from: Docker Hub's is registry-1.docker.io. */
export function apiHost(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_API : registry;
}

/** The host without its port: `localhost:5000` → `localhost`, `[::1]:5000` → `::1`. */
export function hostOf(registry: string): string {
  const v6 = /^\[([^\]]+)\](?::\d+)?$/.exec(registry);
  if (v6) return v6[1] as string;
  const colon = registry.lastIndexOf(':');
  return colon < 0 ? registry : registry.slice(0, colon);
}

/** Whether a registry is on this machine's loopback (plain HTTP is allowed there, as in Docker). */
export function isLoopback(registry: string): boolean {
  const host = hostOf(registry).toLowerCase();
  return host === 'localhost' || host === '::1' || /^127(?:\.\d{1,3}){3}$/.test(host);
}

/**
 * A registry as a user names it for `petri login` / `--insecure-registry`:
 * `https://ghcr.io/`, `ghcr.io`, `index.docker.io`, `docker.io` → `ghcr.io`, `docker.io`.
 */
export function registryName(text: string): string {
  let name = text.trim().replace(/^[a-z]+:\/\//i, '');
  name = name.split('/')[0] ?? '';
  if (name === '') throw new PetriError(`"${text}" is not a registry host[:port]`, { code: 'EREFERENCE' });
  if (name === 'index.docker.io' || name === DOCKER_HUB_API) return DOCKER_HUB;
  return name.toLowerCase();
}
