#!/usr/bin/env node
// Compiles the C helper petri-runner with the system's C compiler (cc), as part of
// `npm run build`. petri also runs this logic on first use when no prebuilt runner
// fits (src/runtime/runner-binary.ts); never from an npm install script.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, renameSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const top = join(dirname(fileURLToPath(import.meta.url)), '..');
const sources = readdirSync(join(top, 'runner'))
  .filter((f) => f.endsWith('.c'))
  .sort()
  .map((f) => join(top, 'runner', f));
const out = join(top, 'build', 'petri-runner');
mkdirSync(dirname(out), { recursive: true });
const cc = process.env.CC || 'cc';
const args = ['-O2', '-Wall', '-Wextra', '-Werror', '-o', `${out}.tmp`, ...sources];
// Static where the C library allows it (glibc's libc.a, in libc6-dev): a container's
// runner is forked or executed per container, and then has no dynamic linking to do.
try {
  execFileSync(cc, ['-static', ...args], { stdio: ['ignore', 'inherit', 'pipe'] });
} catch {
  console.log('petri-runner: no static C library; linking dynamically');
  execFileSync(cc, args, { stdio: 'inherit' });
}
renameSync(`${out}.tmp`, out);
console.log(`built ${out}`);
