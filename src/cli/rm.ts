import { PetriError } from '../errors.js';
import { removeContainer } from '../runtime/containers.js';
import { type OptionSpec, parseArgs } from './args.js';

const OPTIONS: OptionSpec[] = [{ name: 'force', short: 'f' }, { name: 'help' }];

export const HELP = `usage: petri rm [-f] CONTAINER...

Removes containers (by name, id or id prefix): their upper dir, record and cgroups.
  -f, --force   kill a running container first
`;

export async function main(argv: string[]): Promise<number> {
  const { options, rest } = parseArgs('rm', argv, OPTIONS);
  if (options.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (rest.length === 0) throw new PetriError('petri rm: no container given (petri rm CONTAINER...)');
  let failed = 0;
  for (const ref of rest) {
    try {
      await removeContainer(ref, { force: options.force === true });
      process.stdout.write(`${ref}\n`);
    } catch (error) {
      if (!(error instanceof PetriError)) throw error;
      process.stderr.write(`petri: ${error.message}\n`);
      failed++;
    }
  }
  return failed ? 1 : 0;
}
