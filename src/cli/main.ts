#!/usr/bin/env node
import { errorLine, PetriError } from '../errors.js';

const COMMANDS: Record<string, () => Promise<{ main: (argv: string[]) => Promise<number> }>> = {
  run: () => import('./run.js'),
  ps: () => import('./ps.js'),
  rm: () => import('./rm.js'),
};

const USAGE = `usage: petri <command> [options]

commands:
  run       run a command in a container
  ps        list containers
  rm        remove containers
  version   print petri's version

petri <command> --help shows a command's options.`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    process.stdout.write(`${USAGE}\n`);
    return command === undefined ? 2 : 0;
  }
  if (command === 'version' || command === '--version') {
    const { readFileSync } = await import('node:fs');
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
    process.stdout.write(`petri ${pkg.version}\n`);
    return 0;
  }
  const load = COMMANDS[command];
  if (!load) throw new PetriError(`unknown command "${command}" (see petri --help)`);
  return (await load()).main(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    if (error instanceof PetriError) {
      process.stderr.write(`petri: ${errorLine(error)}\n`);
    } else {
      process.stderr.write(
        `petri: internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
      );
    }
    process.exitCode = (error as { exitCode?: number }).exitCode ?? 125;
  },
);
