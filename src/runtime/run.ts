import { withCleanupError } from '../errors.js';
import { Container, type ExitResult } from './container.js';
import type { ContainerOptions } from './options.js';

export interface RunResult extends ExitResult {
  id: string;
  stdout: string;
  stderr: string;
}

/** The whole lifecycle in one call: create, start, collect the output, wait, remove. */
export async function runContainer(options: ContainerOptions, input?: string | Buffer): Promise<RunResult> {
  const container = Container.create(options);
  let result: RunResult;
  try {
    const started = container.start({ stdin: input === undefined ? 'ignore' : 'pipe' });
    if (input !== undefined) container.stdin?.end(input);
    const stdout = collect(container.stdout);
    const stderr = collect(container.stderr);
    await started;
    const exit = await container.wait();
    result = { id: container.id, ...exit, stdout: await stdout, stderr: await stderr };
  } catch (error) {
    await container.remove().catch((cleanup) => {
      throw withCleanupError(error, cleanup);
    });
    throw error;
  }
  await container.remove();
  return result;
}

function collect(stream: NodeJS.ReadableStream | null): Promise<string> {
  if (!stream) return Promise.resolve('');
  const chunks: Buffer[] = [];
  stream.on('data', (chunk: Buffer) => chunks.push(chunk));
  return new Promise((resolve, reject) => {
    stream.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    stream.on('error', reject);
  });
}
