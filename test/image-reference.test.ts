import { describe, expect, it } from 'vitest';
import { parseReference } from '../src/image/index.js';

const DIGEST = `sha256:${'ab'.repeat(32)}`;

describe('parseReference', () => {
  it("reads names, tags and digests by Docker's rules, keeping the name as written", () => {
    expect(parseReference('busybox')).toEqual({ name: 'busybox', tag: 'latest', ref: 'busybox:latest' });
    expect(parseReference('busybox:1.36')).toEqual({ name: 'busybox', tag: '1.36', ref: 'busybox:1.36' });
    expect(parseReference('library/busybox:musl')).toMatchObject({ name: 'library/busybox', tag: 'musl' });
    expect(parseReference('ghcr.io/owner/repo/sub:v1_2-3.x')).toMatchObject({
      name: 'ghcr.io/owner/repo/sub',
      tag: 'v1_2-3.x',
    });
    expect(parseReference('localhost:5000/app')).toEqual({
      name: 'localhost:5000/app',
      tag: 'latest',
      ref: 'localhost:5000/app:latest',
    });
    expect(parseReference('localhost/app:dev').name).toBe('localhost/app');
    expect(parseReference('[::1]:5000/app:dev').name).toBe('[::1]:5000/app');
    expect(parseReference('My-Registry.example.com/app').name).toBe('My-Registry.example.com/app');
    expect(parseReference('a__b/c.d/e-f/g--h:TAG_1')).toMatchObject({ name: 'a__b/c.d/e-f/g--h', tag: 'TAG_1' });
    expect(parseReference(`app@${DIGEST}`)).toEqual({ name: 'app', digest: DIGEST, ref: `app@${DIGEST}` });
    expect(parseReference(`app:1@${DIGEST}`)).toEqual({ name: 'app', tag: '1', digest: DIGEST, ref: 'app:1' });
    expect(parseReference(`x:${'t'.repeat(128)}`).tag).toHaveLength(128);
  });

  it('refuses bad references with one line naming the input and the reason', () => {
    const bad: [string, string][] = [
      ['', 'it is empty'],
      ['Busybox', 'the name must be lowercase'],
      ['ubuntu/Focal', 'the name must be lowercase'],
      [':tag', 'the name is empty'],
      ['app:', 'tag "" must be 1-128'],
      ['app:-x', 'tag "-x" must be'],
      ['app:.x', 'tag ".x" must be'],
      [`app:${'t'.repeat(129)}`, 'must be 1-128'],
      ['app:a/b', '"app:a" is not a registry host[:port]'],
      ['/app', 'empty path component'],
      ['app/', 'empty path component'],
      ['a//b', 'empty path component'],
      ['a..b', 'name component "a..b" must be'],
      ['-app', 'name component "-app" must be'],
      ['app_', 'name component "app_" must be'],
      ['a___b', 'name component "a___b" must be'],
      ['app name', 'name component "app name" must be'],
      ['bad_host.io:x/app', '"bad_host.io:x" is not a registry host[:port]'],
      ['app@sha256:abc', '"sha256:abc" is not a digest'],
      [`app@sha512:${'ab'.repeat(64)}`, 'only sha256: with 64 lowercase hex digits'],
      [`app@${DIGEST.toUpperCase().replace('SHA256', 'sha256')}`, 'only sha256: with 64 lowercase hex digits'],
      ['ab'.repeat(32), 'a name cannot be 64 hex digits'],
      [`${'a'.repeat(256)}:1`, 'longer than 255 characters'],
    ];
    for (const [text, why] of bad) {
      expect(() => parseReference(text), text).toThrow(`invalid image reference "${text}": `);
      expect(() => parseReference(text), text).toThrow(why);
    }
  });
});
