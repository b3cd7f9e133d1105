import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';

export interface Collected {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Spawns a command with its output collected (not spawnSync: the test process can go on serving, a
 * download or an agent, while it runs); `exit` resolves once it has ended and its output is closed.
 * Its stdin is a pipe, for the caller to write or end.
 */
export function spawnCollect(
  command: string,
  args: string[],
  options: SpawnOptions = {},
): { child: ChildProcess; exit: Promise<Collected> } {
  const child = spawn(command, args, { ...options, stdio: 'pipe' });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (chunk) => {
    stdout += chunk;
  });
  child.stderr?.on('data', (chunk) => {
    stderr += chunk;
  });
  const exit = new Promise<Collected>((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
  return { child, exit };
}
