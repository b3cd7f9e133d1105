// biome-ignore-all lint/suspicious/noTemplateCurlyInString: shell words like ${VAR}, not template strings
import { describe, expect, it } from 'vitest';
import { expandInstruction, parseDockerfile, processWord, processWords } from '../src/dockerfile/index.js';

const env = {
  HOME: '/root',
  EMPTY: '',
  NAME: 'petri',
  FILE: 'archive.tar.gz',
  PATHV: '/usr/local/bin',
  LIST: 'a  b c',
};

describe('processWord', () => {
  it.each([
    // quoting and escapes
    ['plain', 'plain'],
    ["'single $HOME'", 'single $HOME'],
    ['"double $HOME"', 'double /root'],
    ['"a\\"b"', 'a"b'],
    ['"\\$HOME"', '$HOME'],
    ['"\\\\"', '\\'],
    ['"\\n stays"', '\\n stays'],
    ["'\\n'", '\\n'],
    ['\\$HOME', '$HOME'],
    ['a\\ b', 'a b'],
    ['end\\', 'end'],
    ['it"s "ok', 'its ok'],
    ['  spaces  kept ', '  spaces  kept '],
    // variables
    ['$HOME/x', '/root/x'],
    ['${HOME}x', '/rootx'],
    ['$UNSET', ''],
    ['$', '$'],
    ['a$-', 'a'],
    ['$1', ''],
    ['100$', '100$'],
    ['$/x', '$/x'],
    // defaults and alternatives
    ['${UNSET:-dflt}', 'dflt'],
    ['${EMPTY:-dflt}', 'dflt'],
    ['${HOME:-dflt}', '/root'],
    ['${UNSET-dflt}', 'dflt'],
    ['${EMPTY-dflt}', ''],
    ['${HOME:+alt}', 'alt'],
    ['${EMPTY:+alt}', ''],
    ['${EMPTY+alt}', 'alt'],
    ['${UNSET+alt}', ''],
    ['${HOME:?must be set}', '/root'],
    ['${EMPTY?must be set}', ''],
    ['${UNSET:-$HOME/y}', '/root/y'],
    ['${UNSET:-"quoted } brace"}', 'quoted } brace'],
    ['${UNSET:-${NAME}}', 'petri'],
    // pattern removal
    ['${FILE#*.}', 'tar.gz'],
    ['${FILE##*.}', 'gz'],
    ['${FILE%.*}', 'archive.tar'],
    ['${FILE%%.*}', 'archive'],
    ['${FILE#nomatch}', 'archive.tar.gz'],
    ['${PATHV##*/}', 'bin'],
    ['${NAME#?}', 'etri'],
    ['${NAME%[a-z]}', 'petr'],
    ['${NAME%[!i]}', 'petri'],
    // replacement
    ['${NAME/t/T}', 'peTri'],
    ['${PATHV//\\//:}', ':usr:local:bin'],
    ['${PATHV/\\//}', 'usr/local/bin'],
    ['${FILE/.*/}', 'archive'],
    ['${FILE//a/A}', 'Archive.tAr.gz'],
    ['${NAME/x/y}', 'petri'],
  ])('%s → %s', (word, expected) => {
    expect(processWord(word, env)).toBe(expected);
  });

  it.each([
    ['${UNSET:?must be set}', 'UNSET: must be set'],
    ['${EMPTY:?}', 'EMPTY: is not set or empty'],
    ['${UNSET?}', 'UNSET: is not set'],
    ["'open", 'unmatched single quote'],
    ['"open', 'unmatched double quote'],
    ['${HOME', 'bad substitution'],
    ['${}', 'bad substitution'],
    ['${HOME:x}', 'bad substitution'],
  ])('%s fails: %s', (word, message) => {
    expect(() => processWord(word, env)).toThrow(message);
  });

  it('uses the escape directive character', () => {
    expect(processWord('c:\\dir`$x', {}, { escape: '`' })).toBe('c:\\dir$x');
    expect(processWord('"a`"b"', {}, { escape: '`' })).toBe('a"b');
  });
});

describe('processWords', () => {
  it.each([
    ['a b  c', ['a', 'b', 'c']],
    ['"a b" c', ['a b', 'c']],
    ["'a b'c d", ['a bc', 'd']],
    ['a\\ b c', ['a b', 'c']],
    ['$LIST', ['a', 'b', 'c']],
    ['"$LIST"', ['a  b c']],
    ['x$LIST', ['xa', 'b', 'c']],
    ['$EMPTY a', ['a']],
    ['  ', []],
  ])('%s → %j', (text, expected) => {
    expect(processWords(text, env)).toEqual(expected);
  });
});

describe('expandInstruction', () => {
  const parse = (text: string) => parseDockerfile(`FROM a\n${text}\n`).instructions[1];

  it('expands and unquotes the instructions Docker expands', () => {
    const vars = { V: '1.2', D: '/srv', U: 'app' };
    const expand = (text: string) => {
      const instruction = parse(text);
      if (!instruction) throw new Error('no instruction');
      return expandInstruction(instruction, vars).args;
    };
    expect(expand('ENV A=$V B="x $V" C=\'$V\'')).toEqual({
      pairs: [
        { key: 'A', value: '1.2' },
        { key: 'B', value: 'x 1.2' },
        { key: 'C', value: '$V' },
      ],
    });
    expect(expand('ENV OLD "legacy $V"')).toEqual({ pairs: [{ key: 'OLD', value: 'legacy 1.2' }] });
    expect(expand('LABEL "a b"=$V')).toEqual({ pairs: [{ key: 'a b', value: '1.2' }] });
    expect(expand('COPY --chown=$U src/$V $D/')).toEqual({ sources: ['src/1.2'], dest: '/srv/' });
    expect(expandInstruction(parse('COPY --chown=$U a b') as never, vars)).toMatchObject({ flags: { chown: 'app' } });
    expect(expand('WORKDIR ${D}/app')).toEqual({ path: '/srv/app' });
    expect(expand('USER $U')).toEqual({ user: 'app' });
    expect(expand('EXPOSE ${P:-80} 443')).toEqual({ ports: ['80', '443'] });
    expect(expand('VOLUME $D/data')).toEqual({ paths: ['/srv/data'] });
    expect(expand('STOPSIGNAL ${S:-SIGINT}')).toEqual({ signal: 'SIGINT' });
    expect(expand('ARG X=$V Y')).toEqual({ args: [{ key: 'X', value: '1.2' }, { key: 'Y' }] });
  });

  it('leaves RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK and ONBUILD alone', () => {
    for (const text of ['RUN echo $V', 'CMD echo $V', 'ENTRYPOINT ["$V"]', 'HEALTHCHECK CMD $V', 'ONBUILD ENV A=$V']) {
      const instruction = parse(text);
      if (!instruction) throw new Error('no instruction');
      expect(expandInstruction(instruction, { V: 'x' })).toBe(instruction);
    }
  });

  it('expands FROM with the ARGs before it and locates errors', () => {
    const parsed = parseDockerfile('ARG BASE\nFROM --platform=$P ${BASE:-alpine}:3 AS b\n');
    const from = parsed.stages[0]?.from;
    if (!from) throw new Error('no FROM');
    expect(expandInstruction(from, { P: 'linux/amd64' })).toMatchObject({
      flags: { platform: 'linux/amd64' },
      args: { image: 'alpine:3', name: 'b' },
    });
    expect(() => expandInstruction(from, {}, { file: 'x/Dockerfile' })).not.toThrow();
    const bad = parse('WORKDIR ${NEED:?set NEED}');
    expect(() => expandInstruction(bad as never, {}, { file: 'x/Dockerfile' })).toThrow(
      'x/Dockerfile:2:1: NEED: set NEED',
    );
  });
});
