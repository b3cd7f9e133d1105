import { PetriError } from '../errors.js';

export interface OptionSpec {
  /** Long name without dashes. */
  name: string;
  short?: string;
  /** Takes a value (`--memory 64m`, `--memory=64m`). */
  value?: boolean;
  /** May be given more than once; values collect into an array. */
  multiple?: boolean;
}

export interface ParsedArgs {
  options: Record<string, string | boolean | string[]>;
  /** Everything from the first non-option argument (or after `--`) on. */
  rest: string[];
}

/**
 * Parses a command line. For `run`, the way `docker run` does: options end at
 * the first argument that is not one, so the container command's own flags pass
 * through. For the other commands options may come anywhere (`--` ends them).
 */
export function parseArgs(
  command: string,
  argv: string[],
  specs: OptionSpec[],
  { interspersed = command !== 'run' }: { interspersed?: boolean } = {},
): ParsedArgs {
  const options: ParsedArgs['options'] = {};
  const positional: string[] = [];
  const args = [...argv];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg === '--') return { options, rest: [...positional, ...args.slice(i + 1)] };
    if (!arg.startsWith('-') || arg === '-') {
      if (!interspersed) return { options, rest: args.slice(i) };
      positional.push(arg);
      continue;
    }
    const long = arg.startsWith('--');
    // Bundled short flags, like `ps -aq`: expand when the first one takes no value.
    const first = long ? undefined : specs.find((s) => s.short === arg[1]);
    if (first && !first.value && arg.length > 2) {
      args.splice(i, 1, ...[...arg.slice(1)].map((c) => `-${c}`));
      i--;
      continue;
    }
    const eq = long ? arg.indexOf('=') : -1;
    const key = long ? arg.slice(2, eq < 0 ? undefined : eq) : arg.slice(1, 2);
    const spec = specs.find((s) => (long ? s.name === key : s.short === key));
    if (!spec)
      throw new PetriError(
        `petri ${command}: unknown option ${long ? `--${key}` : `-${key}`} (see petri ${command} --help)`,
      );
    let value: string | boolean = true;
    if (spec.value) {
      if (long && eq >= 0) value = arg.slice(eq + 1);
      else if (!long && arg.length > 2) value = arg.slice(2);
      else {
        const next = args[++i];
        if (next === undefined) throw new PetriError(`petri ${command}: option ${arg} needs a value`);
        value = next;
      }
    } else if (eq >= 0) {
      throw new PetriError(`petri ${command}: option --${key} takes no value`);
    }
    if (spec.multiple) options[spec.name] = [...((options[spec.name] as string[] | undefined) ?? []), String(value)];
    else options[spec.name] = value;
  }
  return { options, rest: positional };
}
