import { DockerfileError, InstructionError } from './errors.js';
import type { Instruction } from './instruction-types.js';
import { type Env, processWord, processWords } from './shell-words.js';

export interface ExpandOptions {
  escape?: string;
  /** For error locations (default `Dockerfile`). */
  file?: string;
}

/**
 * Expands variables in the instructions Docker expands them in — ADD, COPY, ENV,
 * EXPOSE, FROM, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR and ARG — removing quotes
 * as a shell would. RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK, MAINTAINER and
 * ONBUILD come back unchanged: their shell (or a later build) expands them.
 * Every value expands with `env` as it was before the instruction (`ENV A=1 B=$A`
 * does not see the new A).
 */
export function expandInstruction<T extends Instruction>(instruction: T, env: Env, options: ExpandOptions = {}): T {
  const word = (text: string) => processWord(text, env, options);
  const words = (text: string) => processWords(text, env, options);
  try {
    const i = instruction as Instruction;
    switch (i.keyword) {
      case 'FROM': {
        const flags = i.flags.platform === undefined ? {} : { platform: word(i.flags.platform) };
        return { ...i, flags, args: { ...i.args, image: word(i.args.image) } } as T;
      }
      case 'COPY':
      case 'ADD': {
        const flags: Record<string, unknown> = { ...i.flags };
        for (const key of ['from', 'chown', 'chmod', 'checksum'] as const) {
          const value = flags[key];
          if (typeof value === 'string') flags[key] = word(value);
        }
        if (i.flags.exclude) flags.exclude = i.flags.exclude.map(word);
        const args = { sources: i.args.sources.map(word), dest: word(i.args.dest) };
        return { ...i, flags, args } as unknown as T;
      }
      case 'ENV':
      case 'LABEL':
        return { ...i, args: { pairs: i.args.pairs.map((p) => ({ key: word(p.key), value: word(p.value) })) } } as T;
      case 'ARG':
        return {
          ...i,
          args: { args: i.args.args.map((a) => (a.value === undefined ? a : { key: a.key, value: word(a.value) })) },
        } as T;
      case 'EXPOSE':
        return { ...i, args: { ports: i.args.ports.flatMap(words) } } as T;
      case 'VOLUME':
        return { ...i, args: { paths: i.args.paths.map(word) } } as T;
      case 'WORKDIR':
        return { ...i, args: { path: word(i.args.path) } } as T;
      case 'USER':
        return { ...i, args: { user: word(i.args.user) } } as T;
      case 'STOPSIGNAL':
        return { ...i, args: { signal: word(i.args.signal) } } as T;
      default:
        return instruction;
    }
  } catch (error) {
    if (!(error instanceof InstructionError)) throw error;
    throw new DockerfileError(options.file ?? 'Dockerfile', instruction.line, instruction.column, error.message);
  }
}
