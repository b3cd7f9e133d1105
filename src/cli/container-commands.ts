import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PetriError } from '../errors.js';
import { ImageStore } from '../image/store.js';
import { findContainer } from '../runtime/containers.js';
import { type OptionSpec, parseArgs } from './args.js';

/** `petri commit` and `petri diff`: a container's writable layer. */

export const COMMIT_HELP = `usage: petri commit CONTAINER [IMAGE[:TAG]] [options]

Turns a container's changes (running or exited) into a new image layer on top
of its image, with a config merged from the image and the container.
  -m, --message M     a comment for the history entry
  -a, --author A      the author
  -c, --change INSTR  apply a Dockerfile instruction (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE, VOLUME)
Set SOURCE_DATE_EPOCH to clamp timestamps: the same change then gives the same layer digest.
`;

export async function commitMain(argv: string[]): Promise<number> {
  const specs: OptionSpec[] = [
    { name: 'message', short: 'm', value: true },
    { name: 'author', short: 'a', value: true },
    { name: 'change', short: 'c', value: true, multiple: true },
    { name: 'help' },
  ];
  const { options, rest } = parseArgs('commit', argv, specs);
  if (options.help) return help(COMMIT_HELP);
  if (rest.length < 1 || rest.length > 2) throw new PetriError('petri commit: expected CONTAINER [IMAGE[:TAG]]');
  const { commitContainer } = await import('../harness/commit.js');
  const result = await commitContainer(ImageStore.open(), rest[0] as string, {
    ...(rest[1] ? { ref: rest[1] } : {}),
    ...(typeof options.message === 'string' ? { message: options.message } : {}),
    ...(typeof options.author === 'string' ? { author: options.author } : {}),
    changes: (options.change as string[] | undefined) ?? [],
  });
  process.stdout.write(`${result.id}\n`);
  return 0;
}

export const DIFF_HELP = `usage: petri diff CONTAINER

Lists the changes in a container's filesystem, like docker diff:
A (added), C (changed), D (deleted), one path per line.
`;

export async function diffMain(argv: string[]): Promise<number> {
  const { options, rest } = parseArgs('diff', argv, [{ name: 'help' }]);
  if (options.help) return help(DIFF_HELP);
  if (rest.length !== 1) throw new PetriError('petri diff: expected one CONTAINER');
  const container = findContainer(rest[0] as string);
  const spec = JSON.parse(readFileSync(join(container.dir, 'config.json'), 'utf8'));
  const upper = spec.annotations?.['org.petri.rootfs.upper'] as string | undefined;
  if (!upper) throw new PetriError(`petri diff: container ${container.name} runs on its root directory in place`);
  const { diffUpper } = await import('../snapshot/diff.js');
  for (const change of await diffUpper(upper, container.lower)) process.stdout.write(`${change.kind} ${change.path}\n`);
  return 0;
}

function help(text: string): number {
  process.stdout.write(text);
  return 0;
}
