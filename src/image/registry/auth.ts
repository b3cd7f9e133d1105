import { PetriError } from '../../errors.js';
import type { Credentials } from './credentials.js';
import { discard, type HttpResponse, readText, send } from './http.js';

/** A `WWW-Authenticate` challenge: `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`. */
export interface Challenge {
  scheme: 'bearer' | 'basic';
  params: Record<string, string>;
}

/** Parses a `WWW-Authenticate` header (the first Bearer or Basic challenge in it). */
export function parseChallenge(header: string | undefined): Challenge | undefined {
  if (!header) return undefined;
  const match = /^\s*(Bearer|Basic)\b(.*)$/is.exec(header);
  if (!match) return undefined;
  const params: Record<string, string> = {};
  const pairs = /([A-Za-z_][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
  for (let m = pairs.exec(match[2] as string); m !== null; m = pairs.exec(match[2] as string)) {
    params[(m[1] as string).toLowerCase()] = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : (m[3] ?? '');
  }
  return { scheme: (match[1] as string).toLowerCase() as Challenge['scheme'], params };
}

export function basicHeader(credentials: Credentials): string {
  return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}`;
}

export interface Token {
  token: string;
  /** When to fetch a new one (ms since the epoch). */
  expires: number;
}

/**
 * Gets a bearer token from the challenge's realm for `scopes`
 * (`repository:NAME:pull[,push]`): anonymously, with basic auth, or (with an
 * identity token) by the OAuth2 refresh-token grant, as Docker does.
 */
export async function fetchToken(
  registry: string,
  challenge: Challenge,
  scopes: readonly string[],
  credentials: Credentials | undefined,
  insecureTls: boolean,
): Promise<Token> {
  const realm = challenge.params.realm;
  if (!realm) throw new PetriError(`${registry}: its bearer challenge names no token server (realm)`);
  let url: URL;
  try {
    url = new URL(realm);
  } catch {
    throw new PetriError(`${registry}: its token server "${realm}" is not a URL`);
  }
  const service = challenge.params.service;
  let response: HttpResponse;
  if (credentials?.identityToken) {
    const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: credentials.identityToken });
    form.set('client_id', 'petri');
    if (service) form.set('service', service);
    if (scopes.length > 0) form.set('scope', scopes.join(' '));
    const body = Buffer.from(form.toString());
    response = await send({
      method: 'POST',
      url,
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: () => body,
      insecureTls,
    });
  } else {
    if (service) url.searchParams.set('service', service);
    for (const scope of scopes) url.searchParams.append('scope', scope);
    const headers: Record<string, string> = {};
    if (credentials) headers.Authorization = basicHeader(credentials);
    response = await send({ method: 'GET', url, headers, insecureTls });
  }
  if (response.status === 401 || response.status === 403) {
    const detail = (await readText(response, 65536).catch(() => '')).trim().slice(0, 200);
    throw new PetriError(
      credentials
        ? `${registry}: the token server (${url.host}) refused the credentials${credentials.username ? ` of ${credentials.username}` : ''} (HTTP ${response.status}${detail ? `: ${detail}` : ''}): log in again with petri login ${registry}`
        : `${registry}: the token server (${url.host}) refused an anonymous token (HTTP ${response.status}): log in with petri login ${registry}`,
      { code: 'EAUTH' },
    );
  }
  if (response.status !== 200) {
    discard(response);
    throw new PetriError(`${registry}: the token server (${url.host}) answered HTTP ${response.status}`, {
      code: 'EREGISTRY',
    });
  }
  let parsed: { token?: string; access_token?: string; expires_in?: number };
  try {
    parsed = JSON.parse(await readText(response, 1 << 20)) as typeof parsed;
  } catch {
    throw new PetriError(`${registry}: the token server (${url.host}) sent something that is not JSON`);
  }
  const token = parsed.token ?? parsed.access_token;
  if (!token) throw new PetriError(`${registry}: the token server (${url.host}) sent no token`);
  const lifetime = Math.max(60, Number(parsed.expires_in) || 60) * 1000;
  return { token, expires: Date.now() + lifetime - 10_000 };
}
