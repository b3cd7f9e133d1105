// biome-ignore-all lint/suspicious/noTemplateCurlyInString: shell words like ${VAR}, not template strings
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DockerfileError, instructionJson, parseDockerfile } from '../src/dockerfile/index.js';

// Each fixtures/dockerfile/<case>/Dockerfile parses to expected.json (the `petri dockerfile parse --json`
// output); each negative/<case>/Dockerfile fails with the one line in error.txt.
const root = join(import.meta.dirname, '..', 'fixtures', 'dockerfile');
const read = (...path: string[]) => readFileSync(join(root, ...path), 'utf8');
const cases = readdirSync(root).filter((name) => name !== 'negative');
const negatives = readdirSync(join(root, 'negative'));

describe('Dockerfile golden cases', () => {
  it.each(cases)('%s', (name) => {
    const { instructions } = parseDockerfile(read(name, 'Dockerfile'), { file: 'Dockerfile' });
    expect(instructions.map(instructionJson)).toEqual(JSON.parse(read(name, 'expected.json')));
  });

  it('has enough cases', () => {
    expect(cases.length).toBeGreaterThanOrEqual(12);
    expect(negatives.length).toBeGreaterThanOrEqual(8);
  });
});

describe('Dockerfile negative cases', () => {
  it.each(negatives)('%s', (name) => {
    const text = read('negative', name, 'Dockerfile');
    let error: unknown;
    try {
      parseDockerfile(text, { file: 'Dockerfile' });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(DockerfileError);
    expect((error as Error).message).toBe(read('negative', name, 'error.txt').trimEnd());
  });
});

describe('parseDockerfile', () => {
  it('splits stages at FROM, keeping ARGs before the first FROM apart', () => {
    const parsed = parseDockerfile(read('multi-stage', 'Dockerfile'));
    expect(parsed.metaArgs.map((a) => a.args.args[0]?.key)).toEqual(['BASE', 'VERSION']);
    expect(parsed.stages.map((s) => [s.index, s.name, s.from.args.image, s.instructions.length])).toEqual([
      [0, 'build', '${BASE}', 2],
      [1, 'test', 'build', 1],
      [2, undefined, 'scratch', 1],
    ]);
  });

  it('reads directives only at the top', () => {
    expect(parseDockerfile(read('escape-backtick', 'Dockerfile')).directives).toEqual({ escape: '`' });
    const late = parseDockerfile('FROM a\n# escape=`\nRUN x \\\n  y\n');
    expect(late.directives.escape).toBe('\\');
    expect(late.instructions[1]?.source.args).toBe('x   y');
    expect(parseDockerfile('#\n# escape=`\nFROM a\n').directives.escape).toBe('\\');
    for (const syntax of ['docker/dockerfile:1', 'docker/dockerfile:1.7.1', 'docker.io/docker/dockerfile:1.4']) {
      expect(parseDockerfile(`# syntax=${syntax}\nFROM a\n`).directives.syntax).toBe(syntax);
    }
    expect(() => parseDockerfile('# syntax=docker/dockerfile:1-labs\nFROM a\n')).toThrow(/unsupported frontend/);
  });

  it('locates errors on continuation lines and in flags', () => {
    expect(() => parseDockerfile('FROM a\nRUN --network=none \\\n  --mout=type=cache true\n')).toThrow(
      'Dockerfile:3:3: unknown flag --mout for RUN (did you mean --mount?)',
    );
    expect(() => parseDockerfile('FROM a\nWORKDIR --x /a\n')).toThrow(
      'unknown flag --x for WORKDIR (WORKDIR takes no flags)',
    );
    expect(() => parseDockerfile('FROM a\nCOPY --from=a --from=b x y\n')).toThrow('--from is given more than once');
    expect(() => parseDockerfile('FROM a\nHEALTHCHECK --interval=5 CMD true\n')).toThrow('is not a duration');
    expect(() => parseDockerfile('FROM a AS 1x\n')).toThrow('Dockerfile:1:11: invalid stage name 1x');
    expect(() => parseDockerfile('FROM a\nONBUILD ONBUILD RUN x\n')).toThrow('ONBUILD cannot be an ONBUILD trigger');
  });

  it('handles CRLF line endings and a missing final newline', () => {
    const { instructions } = parseDockerfile('FROM a\r\nRUN echo \\\r\n  hi');
    expect(instructions.map((i) => [i.keyword, i.source.args, i.line, i.endLine])).toEqual([
      ['FROM', 'a', 1, 1],
      ['RUN', 'echo   hi', 2, 3],
    ]);
  });
});
