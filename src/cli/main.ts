#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { errorLine, PetriError } from '../errors.js';
import { enableCompileCache } from './compile-cache.js';

// Keep compiled code between runs (a leaner start for every petri command); the bundle's entry (bin.ts) did it already.
enableCompileCache();

const COMMANDS: Record<string, () => Promise<{ main: (argv: string[]) => Promise<number> }>> = {
  run: () => import('./run.js'),
  build: () => import('./build.js'),
  test: () => import('./test.js'),
  repro: () => import('./repro.js'),
  ps: () => import('./ps.js'),
  rm: () => import('./rm.js'),
  images: () => import('./images.js'),
  inspect: () => import('./inspect.js'),
  tag: () => import('./tag.js'),
  rmi: () => import('./rmi.js'),
  prune: () => import('./prune.js'),
  import: () => import('./image-commands.js').then((m) => ({ main: m.importMain })),
  save: () => import('./image-commands.js').then((m) => ({ main: m.saveMain })),
  load: () => import('./image-commands.js').then((m) => ({ main: m.loadMain })),
  commit: () => import('./container-commands.js').then((m) => ({ main: m.commitMain })),
  diff: () => import('./container-commands.js').then((m) => ({ main: m.diffMain })),
  dockerfile: () => import('./dockerfile.js'),
  pull: () => import('./registry-commands.js').then((m) => ({ main: m.pullMain })),
  push: () => import('./registry-commands.js').then((m) => ({ main: m.pushMain })),
  login: () => import('./registry-commands.js').then((m) => ({ main: m.loginMain })),
  logout: () => import('./registry-commands.js').then((m) => ({ main: m.logoutMain })),
};

const USAGE = `usage: petri <command> [options]

commands:
  run       run a command in a container
  build     build an image from a Dockerfile
  test      run petri.config.*'s test jobs in parallel containers, keep the failed ones
  repro     open a failed test job's container again (shell, re-run, or docker commands)
  ps        list containers
  rm        remove containers
  commit    make an image from a container's changes
  diff      list a container's changes
  images    list images
  inspect   show an image or container as JSON
  tag       name an image
  rmi       remove image names
  import    make an image from a root filesystem directory or tarball
  save      write images to a docker/OCI archive
  load      read images from a docker/OCI archive
  pull      download an image from a registry
  push      upload an image to a registry
  login     save credentials for a registry
  logout    remove a registry's saved credentials
  prune     remove unused content and leftovers
  dockerfile  parse a Dockerfile and print its instructions (dockerfile parse [--json] FILE)
  version   print petri's version

petri <command> --help shows a command's options.`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    process.stdout.write(`${USAGE}\n`);
    return command === undefined ? 2 : 0;
  }
  if (command === 'version' || command === '--version') {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
    process.stdout.write(`petri ${pkg.version}\n`);
    return 0;
  }
  const load = COMMANDS[command];
  if (!load) throw new PetriError(`unknown command "${command}" (see petri --help)`);
  return (await load()).main(rest);
}

// A command whose work stopped without finishing (a promise nothing will settle) must not exit 0.
let settled = false;
process.on('exit', () => {
  if (!settled) {
    process.stderr.write('petri: internal error: the command stopped before it finished\n');
    process.exitCode = 125;
  }
});

main(process.argv.slice(2)).then(
  (code) => {
    settled = true;
    process.exitCode = code;
  },
  (error: unknown) => {
    settled = true;
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
