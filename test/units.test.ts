import { describe, expect, it } from 'vitest';
import { parseArgs } from '../src/cli/args.js';
import { parseUlimit } from '../src/runtime/ulimits.js';
import { formatDuration, parseCpus, parseDuration, parseSize } from '../src/util/units.js';

describe('parseSize', () => {
  it('reads Docker-style sizes in powers of 1024', () => {
    expect(parseSize('64m')).toBe(64 * 1024 * 1024);
    expect(parseSize('1g')).toBe(1024 ** 3);
    expect(parseSize('512k')).toBe(512 * 1024);
    expect(parseSize('1048576')).toBe(1048576);
    expect(parseSize('1.5m')).toBe(1572864);
    expect(parseSize('10MiB')).toBe(10 * 1024 * 1024);
  });
  it('rejects bad sizes with one line naming the value', () => {
    expect(() => parseSize('64x', 'memory limit')).toThrow('invalid memory limit "64x": expected a number');
    expect(() => parseSize('', 'memory limit')).toThrow('invalid memory limit ""');
    expect(() => parseSize('0')).toThrow('expected a positive value');
    expect(() => parseSize('-5m')).toThrow('invalid size "-5m"');
  });
});

describe('parseDuration', () => {
  it('reads durations into milliseconds', () => {
    expect(parseDuration('10s')).toBe(10_000);
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration('1m30s')).toBe(90_000);
    expect(parseDuration('2h')).toBe(7_200_000);
    expect(parseDuration('1.5')).toBe(1500);
  });
  it('rejects bad durations', () => {
    expect(() => parseDuration('10 parsecs', 'timeout')).toThrow('invalid timeout "10 parsecs"');
    expect(() => parseDuration('s')).toThrow('expected a duration');
    expect(() => parseDuration('0s')).toThrow('expected a positive value');
  });
  it('formats durations for people', () => {
    expect(formatDuration(850)).toBe('850ms');
    expect(formatDuration(1500)).toBe('1.50s');
    expect(formatDuration(125_000)).toBe('2m05s');
  });
});

describe('parseCpus and parseUlimit', () => {
  it('reads cpus', () => {
    expect(parseCpus('0.5')).toBe(0.5);
    expect(() => parseCpus('half')).toThrow('invalid cpus "half"');
    expect(() => parseCpus('0')).toThrow('invalid cpus "0"');
  });
  it('reads ulimits like docker --ulimit', () => {
    expect(parseUlimit('nofile=1024:2048')).toEqual({ name: 'nofile', soft: 1024, hard: 2048 });
    expect(parseUlimit('nproc=64')).toEqual({ name: 'nproc', soft: 64, hard: 64 });
    expect(() => parseUlimit('nofile')).toThrow('invalid ulimit "nofile"');
  });
});

describe('CLI argument parsing', () => {
  const specs = [
    { name: 'memory', short: 'm', value: true },
    { name: 'env', short: 'e', value: true, multiple: true },
    { name: 'rm' },
  ];
  it('stops at the first argument that is not an option, like docker run', () => {
    expect(parseArgs('run', ['-m', '64m', '--rm', 'sh', '-c', 'ls -l'], specs)).toEqual({
      options: { memory: '64m', rm: true },
      rest: ['sh', '-c', 'ls -l'],
    });
  });
  it('takes --opt=value, -oVALUE, repeated options and --', () => {
    expect(parseArgs('run', ['--memory=1g', '-eA=1', '-e', 'B=2', '--', '--rm'], specs)).toEqual({
      options: { memory: '1g', env: ['A=1', 'B=2'] },
      rest: ['--rm'],
    });
  });
  it('expands bundled short flags', () => {
    const flags = [
      { name: 'all', short: 'a' },
      { name: 'quiet', short: 'q' },
    ];
    expect(parseArgs('ps', ['-aq'], flags)).toEqual({ options: { all: true, quiet: true }, rest: [] });
  });
  it('takes options after arguments for other commands', () => {
    expect(
      parseArgs('commit', ['box', 'img:1', '-m', 'msg', '--', '-x'], [{ name: 'message', short: 'm', value: true }]),
    ).toEqual({
      options: { message: 'msg' },
      rest: ['box', 'img:1', '-x'],
    });
  });
  it('names unknown options and missing values', () => {
    expect(() => parseArgs('run', ['--nope'], specs)).toThrow('petri run: unknown option --nope');
    expect(() => parseArgs('run', ['-m'], specs)).toThrow('petri run: option -m needs a value');
    expect(() => parseArgs('run', ['--rm=1'], specs)).toThrow('option --rm takes no value');
  });
});
