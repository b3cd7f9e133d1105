// One "test file" of bench/api.mjs, run as a process of its own like a vitest worker: imports
// GenericContainer from the module given (petri's dist/lib/index.js, or testcontainers), says `ready` on
// stdout and waits for a line on stdin (so that workers meant to run side by side start their tests
// together), then runs BENCH_TESTS tests one after another, each starting its own container from the
// image, running one exec in it and stopping it. Prints one JSON line: when the process started, when
// the import finished, and each test's start, end of start(), end of exec() and end (epoch ms,
// comparable between processes). Not meant to be run by hand: bench/api.mjs sets the environment.
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';

const started = performance.timeOrigin;
const { BENCH_MODULE: module, BENCH_IMAGE: image, BENCH_TESTS: count } = process.env;
const now = () => performance.timeOrigin + performance.now();

const { GenericContainer } = await import(pathToFileURL(module).href);
const imported = now();
process.stdout.write('ready\n');
const lines = createInterface({ input: process.stdin });
await new Promise((resolve) => lines.once('line', resolve));
lines.close();

const tests = [];
for (let i = 0; i < Number(count); i++) {
  const start = now();
  // the image's CMD is `sh`, which exits at once without a terminal: keep the container running
  const container = await new GenericContainer(image).withCommand(['sleep', '3600']).start();
  const running = now();
  const { exitCode, output } = await container.exec(['echo', `test ${i}`]);
  const executed = now();
  await container.stop();
  const end = now();
  if (exitCode !== 0 || output.trim() !== `test ${i}`) {
    throw new Error(`exec in test ${i}: exit code ${exitCode}, output ${JSON.stringify(output)}`);
  }
  tests.push({ start, running, executed, end });
}
process.stdout.write(`${JSON.stringify({ started, imported, tests })}\n`);
// a Docker client may keep sockets open: end like a vitest worker does, when its file is done
process.exit(0);
