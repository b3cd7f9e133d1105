import { InstructionError } from './errors.js';
import { didYouMean } from './suggest.js';

/** How a flag takes its value: `--from=x`, `--link[=true|false]`, or a repeatable `--exclude=x`. */
export type FlagKind = 'string' | 'bool' | 'list';
export type FlagValues = Record<string, string | boolean | string[]>;

/**
 * Parses an instruction's flag words against the flags it allows (BuildKit's
 * BFlags): unknown flags (with the closest allowed one suggested), string flags
 * without a value and repeated single flags are errors.
 */
export function parseFlags(keyword: string, words: readonly string[], allowed: Record<string, FlagKind>): FlagValues {
  const values: FlagValues = {};
  const names = Object.keys(allowed);
  for (const word of words) {
    const eq = word.indexOf('=');
    const name = word.slice(2, eq < 0 ? undefined : eq);
    const value = eq < 0 ? undefined : word.slice(eq + 1);
    const kind = allowed[name];
    if (kind === undefined) {
      const hint = names.length === 0 ? ` (${keyword} takes no flags)` : didYouMean(name, names, '--');
      throw new InstructionError(`unknown flag --${name} for ${keyword}${hint}`, `--${name}`);
    }
    if (kind !== 'list' && name in values) {
      throw new InstructionError(`--${name} is given more than once for ${keyword}; keep one`, `--${name}`);
    }
    if (kind === 'bool') {
      if (value !== undefined && value !== 'true' && value !== 'false') {
        throw new InstructionError(`--${name} takes true or false, not ${JSON.stringify(value)}`, `--${name}`);
      }
      values[name] = value !== 'false';
    } else if (value === undefined) {
      throw new InstructionError(`--${name} needs a value: --${name}=VALUE`, `--${name}`);
    } else if (kind === 'list') {
      values[name] = [...((values[name] as string[] | undefined) ?? []), value];
    } else {
      values[name] = value;
    }
  }
  return values;
}

const UNITS: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** A Go duration (`30s`, `1m30s`, `500ms`, `0`) in milliseconds, as HEALTHCHECK's flags take it. */
export function parseDuration(flag: string, text: string): number {
  if (text === '0') return 0;
  const part = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/y;
  let total = 0;
  let pos = 0;
  while (pos < text.length) {
    part.lastIndex = pos;
    const match = part.exec(text);
    if (!match) break;
    total += Number(match[1]) * (UNITS[match[2] as string] as number);
    pos = part.lastIndex;
  }
  if (pos !== text.length || text.length === 0) {
    throw new InstructionError(
      `--${flag}=${text} is not a duration: use a number with a unit, like 30s or 1m30s`,
      text,
    );
  }
  if (total > 0 && total < 1) throw new InstructionError(`--${flag}=${text} is less than 1ms`, text);
  return total;
}
