import { chmodSync, chownSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PetriError } from '../errors.js';

/** An agent's socket of a step's own (`path`), until `close()`. */
export interface AgentProxy {
  path: string;
  close(): void;
}

/** What a unix socket's path may hold (108 bytes with its NUL on Linux), with room to spare. */
const MAX_SOCKET_PATH = 100;

/**
 * `RUN --mount=type=ssh`: a socket of the step's own, in `dir` (or, when that
 * path would be too long for a unix socket, in a directory of its own under
 * the OS temp dir), owner and mode as the mount asks (BuildKit's defaults 0:0
 * and 0600), whose every connection is passed on to the host's SSH agent at
 * `agent`, as BuildKit forwards the agent of `docker build --ssh`. The step
 * never sees the host's socket, and a user other than the agent's can use it.
 * Unreferenced: it never keeps the process alive.
 */
export async function agentProxy(
  agent: string,
  dir: string,
  name: string,
  owner: { uid: number; gid: number; mode: number },
): Promise<AgentProxy> {
  const own =
    Buffer.byteLength(join(dir, name)) > MAX_SOCKET_PATH ? mkdtempSync(join(tmpdir(), 'petri-ssh-')) : undefined;
  const path = join(own ?? dir, name);
  // Half-open both ways: a client that ends its side still gets the agent's answer.
  const server = createServer({ allowHalfOpen: true }, (client) => {
    const upstream = connect({ path: agent, allowHalfOpen: true });
    client.pipe(upstream).pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', end);
    upstream.on('close', end);
  });
  const close = () => {
    server.close();
    if (own) rmSync(own, { recursive: true, force: true });
  };
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error) =>
        reject(new PetriError(`RUN --mount=type=ssh: cannot make the agent's socket ${path}: ${error.message}`)),
      );
      server.listen(path, () => resolve());
    });
    server.unref();
    chownSync(path, owner.uid, owner.gid);
    chmodSync(path, owner.mode);
  } catch (error) {
    close();
    throw error;
  }
  return { path, close };
}

/**
 * `petri build --ssh ID[=SOCKET]`: ID and the agent's socket (`$SSH_AUTH_SOCK`
 * when none is given), which must be a socket: key files are not read, as
 * BuildKit would read them into an agent of its own (load them with ssh-add).
 */
export function parseSshSpec(spec: string, env: NodeJS.ProcessEnv = process.env): [string, string] {
  const eq = spec.indexOf('=');
  const id = eq < 0 ? spec : spec.slice(0, eq);
  const given = eq < 0 ? undefined : spec.slice(eq + 1);
  if (!/^[A-Za-z0-9_.-]+$/.test(id)) {
    throw new PetriError(`petri build: invalid --ssh ${spec}: expected ID or ID=SOCKET (default, or a name)`);
  }
  const socket = given ?? env.SSH_AUTH_SOCK;
  if (!socket) {
    // sudo clears SSH_AUTH_SOCK unless told to keep it
    const hint = env.SUDO_USER ? 'sudo --preserve-env=SSH_AUTH_SOCK keeps it' : 'start ssh-agent';
    throw new PetriError(
      `petri build --ssh ${id}: ${given === '' ? 'no socket given' : 'SSH_AUTH_SOCK is not set'}: ${hint}, or give the agent's socket: --ssh ${id}=PATH`,
    );
  }
  if (socket.includes(',')) {
    throw new PetriError(
      `petri build --ssh ${spec}: key files are not read by petri: load them with ssh-add and give the agent's socket`,
    );
  }
  let isSocket = false;
  try {
    isSocket = statSync(socket).isSocket();
  } catch (error) {
    throw new PetriError(`petri build --ssh ${id}: no agent at ${socket}: ${(error as NodeJS.ErrnoException).code}`);
  }
  if (!isSocket) {
    throw new PetriError(
      `petri build --ssh ${id}: ${socket} is not an agent's socket (key files are not read: load them with ssh-add)`,
    );
  }
  return [id, socket];
}
