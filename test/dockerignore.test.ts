import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  cleanPath,
  goMatch,
  hasWildcards,
  IgnoreMatcher,
  parseDockerignore,
  readDockerignore,
} from '../src/dockerfile/dockerignore.js';

describe('parseDockerignore', () => {
  it('reads patterns like ignorefile.ReadAll: comments, blanks, leading / and cleaning', () => {
    const text = [
      'test1',
      '/test2',
      '/a/file/here',
      '',
      'lastfile',
      '# this is a comment',
      '! /inverted/abs/path',
      '!',
      '! ',
    ].join('\n');
    expect(parseDockerignore(text)).toEqual([
      'test1',
      'test2',
      'a/file/here',
      'lastfile',
      '!inverted/abs/path',
      '!',
      '!',
    ]);
  });

  it('cleans like filepath.Clean, trims, and only treats a leading # as a comment', () => {
    const text = '\uFEFFa/./b//c/\r\n  spaced  \r\n  # not a comment\r\nx/../y\n./z\n/\n!/q/../r/\n';
    expect(parseDockerignore(text)).toEqual(['a/b/c', 'spaced', '# not a comment', 'y', 'z', '/', '!r']);
  });

  it('handles empty input', () => {
    expect(parseDockerignore('')).toEqual([]);
    expect(parseDockerignore('\n\n# only\n')).toEqual([]);
  });
});

describe('readDockerignore', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'ptest-dockerignore-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('prefers <Dockerfile name>.dockerignore next to the Dockerfile over <context>/.dockerignore', () => {
    mkdirSync(join(dir, 'docker'));
    writeFileSync(join(dir, '.dockerignore'), 'from-context\n');
    writeFileSync(join(dir, 'docker', 'app.Dockerfile'), 'FROM scratch\n');
    writeFileSync(join(dir, 'docker', 'app.Dockerfile.dockerignore'), 'from-dockerfile\n');
    expect(readDockerignore(dir, join(dir, 'docker', 'app.Dockerfile'))).toEqual(['from-dockerfile']);
    expect(readDockerignore(dir, join(dir, 'docker', 'other.Dockerfile'))).toEqual(['from-context']);
  });

  it('reads Dockerfile.dockerignore for the default Dockerfile, and nothing when there is no file', () => {
    writeFileSync(join(dir, 'Dockerfile'), 'FROM scratch\n');
    expect(readDockerignore(dir, join(dir, 'Dockerfile'))).toEqual([]);
    writeFileSync(join(dir, '.dockerignore'), 'a\n');
    expect(readDockerignore(dir, join(dir, 'Dockerfile'))).toEqual(['a']);
    writeFileSync(join(dir, 'Dockerfile.dockerignore'), 'b\n');
    expect(readDockerignore(dir, join(dir, 'Dockerfile'))).toEqual(['b']);
  });
});

describe('goMatch (Go filepath.Match)', () => {
  const cases: [string, string, boolean][] = [
    ['abc', 'abc', true],
    ['*', 'abc', true],
    ['*c', 'abc', true],
    ['a*', 'a', true],
    ['a*', 'abc', true],
    ['a*', 'ab/c', false],
    ['a*/b', 'abc/b', true],
    ['a*/b', 'a/c/b', false],
    ['a*b*c*d*e*/f', 'axbxcxdxe/f', true],
    ['a*b*c*d*e*/f', 'axbxcxdxexxx/f', true],
    ['a*b*c*d*e*/f', 'axbxcxdxe/xxx/f', false],
    ['a*b?c*x', 'abxbbxdbxebxczzx', true],
    ['a*b?c*x', 'abxbbxdbxebxczzy', false],
    ['ab[c]', 'abc', true],
    ['ab[b-d]', 'abc', true],
    ['ab[e-g]', 'abc', false],
    ['ab[^c]', 'abc', false],
    ['ab[^e-g]', 'abc', true],
    ['a\\*b', 'a*b', true],
    ['a\\*b', 'ab', false],
    ['a?b', 'a☺b', true],
    ['a[^a]b', 'a☺b', true],
    ['a???b', 'a☺b', false],
    ['[a-ζ]*', 'α', true],
    ['*[a-ζ]', 'A', false],
    ['a?b', 'a/b', false],
    ['a*b', 'a/b', false],
    ['[\\]a]', ']', true],
    ['[\\-]', '-', true],
    ['[x\\-]', '-', true],
    ['[x\\-]', 'z', false],
    ['*x', 'xxx', true],
  ];
  it.each(cases)('%s vs %s → %s', (pattern, name, expected) => {
    expect(goMatch(pattern, name)).toBe(expected);
  });

  it.each([
    '[]a]',
    '[-]',
    '[x-]',
    '[-x]',
    '\\',
    '[a-b-c]',
    '[',
    '[^',
    '[^bc',
    'a[',
  ])('rejects the bad pattern %s', (pattern) => {
    expect(() => goMatch(pattern, 'a')).toThrow(/bad pattern/);
  });

  it('tells wildcards from escaped characters', () => {
    expect(hasWildcards('a/b*.txt')).toBe(true);
    expect(hasWildcards('file?')).toBe(true);
    expect(hasWildcards('[ab]')).toBe(true);
    expect(hasWildcards('a\\*b')).toBe(false);
    expect(hasWildcards('plain/path')).toBe(false);
  });

  it('cleans like path.Clean', () => {
    expect(cleanPath('')).toBe('.');
    expect(cleanPath('a//b/./c/..')).toBe('a/b');
    expect(cleanPath('/../a')).toBe('/a');
    expect(cleanPath('../a/../..')).toBe('../..');
    expect(cleanPath('/')).toBe('/');
  });
});

describe('IgnoreMatcher', () => {
  const matches = (patterns: string[], path: string) => new IgnoreMatcher(patterns).matches(path);

  // moby/patternmatcher's TestMatches table (MatchesOrParentMatches: exact and parent matches both count).
  const single: [string, string, boolean][] = [
    ['**', 'file', true],
    ['**', 'file/', true],
    ['**/', 'file', true],
    ['**', 'dir/file', true],
    ['**/', 'dir/file', true],
    ['**/**', 'dir/file', true],
    ['dir/**', 'dir/file', true],
    ['dir/**', 'dir/dir2/file', true],
    ['**/dir', 'dir', true],
    ['**/dir', 'dir/file', true],
    ['**/dir2/*', 'dir/dir2/file', true],
    ['**/dir2/**', 'dir/dir2/dir3/file', true],
    ['**file', 'file', true],
    ['**file', 'dir/file', true],
    ['**/file', 'dir/file', true],
    ['**file', 'dir/dir/file', true],
    ['**/file*', 'dir/dir/file.txt', true],
    ['**/file*txt', 'dir/dir/file.txt', true],
    ['**/file*.txt*', 'dir/dir/file.txt', true],
    ['**/**/*.txt', 'dir/dir/file.txt', true],
    ['**/**/*.txt2', 'dir/dir/file.txt', false],
    ['**/*.txt', 'file.txt', true],
    ['**/**/*.txt', 'file.txt', true],
    ['a**/*.txt', 'a/file.txt', true],
    ['a**/*.txt', 'a/dir/file.txt', true],
    ['a**/*.txt', 'a/dir/dir/file.txt', true],
    ['a/*.txt', 'a/dir/file.txt', false],
    ['a/*.txt', 'a/file.txt', true],
    ['a/*.txt**', 'a/file.txt', true],
    ['a[b-d]e', 'ae', false],
    ['a[b-d]e', 'ace', true],
    ['a[b-d]e', 'aae', false],
    ['a[^b-d]e', 'aze', true],
    ['.*', '.foo', true],
    ['.*', 'foo', false],
    ['abc.def', 'abcdef', false],
    ['abc.def', 'abc.def', true],
    ['abc.def', 'abcZdef', false],
    ['abc?def', 'abcZdef', true],
    ['abc?def', 'abcdef', false],
    ['**/foo/bar', 'foo/bar', true],
    ['**/foo/bar', 'dir/foo/bar', true],
    ['**/foo/bar', 'dir/dir2/foo/bar', true],
    ['abc/**', 'abc', false],
    ['abc/**', 'abc/def', true],
    ['abc/**', 'abc/def/ghi', true],
    ['**/.foo', '.foo', true],
    ['**/.foo', 'bar.foo', false],
    ['a(b)c/def', 'a(b)c/def', true],
    ['a(b)c/def', 'a(b)c/xyz', false],
    ['a.|)$(}+{bc', 'a.|)$(}+{bc', true],
    ['dist/*.whl', 'dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl', true],
    ['a\\\\', 'a\\', true],
    ['a\\*b', 'a*b', true],
  ];
  it.each(single)('%s vs %s → %s', (pattern, path, expected) => {
    expect(matches([pattern], path)).toBe(expected);
  });

  it('lets the last matching pattern win, exceptions included', () => {
    expect(matches(['*.go'], 'fileutils.go')).toBe(true);
    expect(matches(['*.go', '!fileutils.go'], 'fileutils.go')).toBe(false);
    expect(matches(['!fileutils.go', '*.go'], 'fileutils.go')).toBe(true);
    expect(matches(['**', '!util/docker/web'], 'util/docker/web/foo')).toBe(false);
    expect(matches(['**', '!util/docker/web', 'util/docker/web/foo'], 'util/docker/web/foo')).toBe(true);
    expect(matches(['**', '!dist/*.whl'], 'dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl')).toBe(false);
  });

  it('matches everything below a matched directory unless re-included', () => {
    expect(matches(['docs'], 'docs/README.md')).toBe(true);
    expect(matches(['docs', '!docs/README.md'], 'docs/README.md')).toBe(false);
    expect(matches(['docs/', '!docs/README.md'], 'docs/README.md')).toBe(false);
    expect(matches(['docs/*', '!docs/README.md'], 'docs/README.md')).toBe(false);
    expect(matches(['docs', '!docs/README.md'], 'docs/other.md')).toBe(true);
  });

  it('follows the documented .dockerignore examples', () => {
    const docs = parseDockerignore('# comment\n*/temp*\n*/*/temp*\ntemp?\n');
    const m = new IgnoreMatcher(docs);
    expect(m.matches('somedir/temporary.txt')).toBe(true);
    expect(m.matches('somedir/temp')).toBe(true);
    expect(m.matches('somedir/temp/inside')).toBe(true);
    expect(m.matches('somedir/subdir/temporary.txt')).toBe(true);
    expect(m.matches('tempa')).toBe(true);
    expect(m.matches('tempb')).toBe(true);
    expect(m.matches('temp')).toBe(false);
    expect(m.matches('temporary.txt')).toBe(false);
    expect(m.matches('a/b/c/temp')).toBe(false);

    expect(matches(['**/*.go'], 'deep/down/main.go')).toBe(true);
    expect(matches(['*.md', '!README.md'], 'README.md')).toBe(false);
    expect(matches(['*.md', '!README.md'], 'CHANGES.md')).toBe(true);
    const readmes = ['*.md', '!README*.md', 'README-secret.md'];
    expect(matches(readmes, 'README-secret.md')).toBe(true);
    expect(matches(readmes, 'README-public.md')).toBe(false);
    expect(matches(['*.md', 'README-secret.md', '!README*.md'], 'README-secret.md')).toBe(false);
  });

  it('never matches the root, and an empty matcher matches nothing', () => {
    expect(matches(['*', '**', '.'], '')).toBe(false);
    expect(matches(['*'], '.')).toBe(false);
    expect(new IgnoreMatcher([]).matches('anything')).toBe(false);
    expect(new IgnoreMatcher([]).empty).toBe(true);
  });

  it('refuses "!" and malformed patterns with one line naming them', () => {
    expect(() => new IgnoreMatcher(['!'])).toThrow('.dockerignore: illegal exclusion pattern "!"');
    expect(() => new IgnoreMatcher(['a[', 'ok'], '--exclude')).toThrow(
      '--exclude: bad pattern "a[": syntax error in pattern',
    );
  });

  it("descends into an ignored directory only for an exception that names something in it (Docker's walker rule)", () => {
    const m = new IgnoreMatcher(['node_modules', '!node_modules/keep', 'build', '!**/keep.txt']);
    expect(m.hasExceptions).toBe(true);
    expect(m.exceptionBelow('node_modules')).toBe(true);
    expect(m.exceptionBelow('build')).toBe(false);
    expect(m.exceptionBelow('node')).toBe(false);
    expect(new IgnoreMatcher(['a']).hasExceptions).toBe(false);
  });

  it('tells an include walk where a pattern may still match', () => {
    const m = new IgnoreMatcher(['packages/*/package.json']);
    expect(m.mayMatchBelow('packages')).toBe(true);
    expect(m.mayMatchBelow('packages/foo')).toBe(true);
    expect(m.mayMatchBelow('packages/foo/src')).toBe(false);
    expect(m.mayMatchBelow('packages/foo/package.json/inner')).toBe(true); // below a match: parents count
    expect(m.mayMatchBelow('apps')).toBe(false);
    expect(new IgnoreMatcher(['**/x']).mayMatchBelow('any/where')).toBe(true);
  });
});
