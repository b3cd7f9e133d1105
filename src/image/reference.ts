import { PetriError } from '../errors.js';
import { isDigest } from './digest.js';

/** An image reference as written: `name[:tag][@digest]`, the name kept as it is (no `docker.io/library/`). */
export interface ImageReference {
  /** `[registry[:port]/]path/components` */
  name: string;
  /** The tag; `latest` when neither a tag nor a digest was given. */
  tag?: string;
  /** `sha256:…` when the reference pins a digest. */
  digest?: string;
  /** `name:tag`, or `name@digest` for a reference with a digest and no tag. */
  ref: string;
}

export const DEFAULT_TAG = 'latest';
const NAME_MAX = 255;

// Docker's grammar (github.com/distribution/reference, regexp.go).
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN = new RegExp(`^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?$`);
const TAG = /^[\w][\w.-]{0,127}$/;
const ANY_DIGEST = /^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$/;
const HEX64 = /^[a-f0-9]{64}$/;

/**
 * Parses `[registry[:port]/]name[:tag][@sha256:…]` by Docker's rules: lowercase
 * path components joined by `/`, an optional registry host first (it has a `.`
 * or a `:`, or is `localhost`), tags of up to 128 word characters, dots and
 * dashes. Bad input is a PetriError `invalid image reference "X": <why>`.
 */
export function parseReference(text: string): ImageReference {
  const fail = (why: string): never => {
    throw new PetriError(`invalid image reference "${text}": ${why}`, { code: 'EREFERENCE' });
  };
  if (text === '') fail('it is empty; expected name[:tag] or name@sha256:…');

  let rest = text;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!ANY_DIGEST.test(digest)) fail(`"${digest}" is not a digest; expected sha256: and 64 lowercase hex digits`);
    if (!isDigest(digest)) fail(`digest "${digest}" is not supported; only sha256: with 64 lowercase hex digits is`);
  }

  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) {
      fail(`tag "${tag}" must be 1-128 letters, digits, underscores, dots or dashes, not starting with . or -`);
    }
  }

  const name = rest;
  if (name === '') fail('the name is empty');
  if (name.length > NAME_MAX) fail(`the name is longer than ${NAME_MAX} characters`);
  if (HEX64.test(name)) fail('a name cannot be 64 hex digits (that is an image id; use sha256:… or the id alone)');

  const components = name.split('/');
  const first = components[0] ?? '';
  const hasDomain =
    components.length > 1 && (/[.:]/.test(first) || first === 'localhost' || first !== first.toLowerCase());
  if (hasDomain) {
    if (!DOMAIN.test(first)) fail(`"${first}" is not a registry host[:port]`);
    components.shift();
  }
  for (const component of components) {
    if (component === '') fail('the name has an empty path component (a leading, trailing or double /)');
    if (component !== component.toLowerCase()) fail('the name must be lowercase');
    if (!PATH_COMPONENT.test(component)) {
      fail(
        `name component "${component}" must be lowercase letters and digits, separated by one . or _, two _, or dashes`,
      );
    }
  }

  if (tag === undefined && digest === undefined) tag = DEFAULT_TAG;
  const result: ImageReference = { name, ref: tag === undefined ? `${name}@${digest}` : `${name}:${tag}` };
  if (tag !== undefined) result.tag = tag;
  if (digest !== undefined) result.digest = digest;
  return result;
}

/** `name:tag` for a reference that names a tag (a tag is required: `name@digest` cannot be a tag). */
export function tagRef(text: string): string {
  const reference = parseReference(text);
  if (reference.tag === undefined || reference.digest !== undefined) {
    throw new PetriError(`invalid tag "${text}": a tag is name[:tag], without @digest`, { code: 'EREFERENCE' });
  }
  return `${reference.name}:${reference.tag}`;
}
