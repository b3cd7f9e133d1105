import { existsSync, lstatSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentProxy, parseSshSpec } from '../src/build/ssh-agent.js';

/** Sends `message` through the socket at `path`, ends its side, resolves with the answer. */
function ask(path: string, message: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ path, allowHalfOpen: true });
    let answer = '';
    socket.on('data', (chunk) => {
      answer += chunk;
    });
    socket.on('end', () => resolve(answer));
    socket.on('error', reject);
    socket.end(message);
  });
}

const isRoot = process.getuid?.() === 0;

(isRoot ? describe : describe.skip)(
  `petri build --ssh: the agent's proxy${isRoot ? '' : ' [skipped: needs root (chown)]'}`,
  () => {
    let tmp: string;
    let agent: Server;
    let agentPath: string;
    beforeAll(async () => {
      tmp = mkdtempSync(join(tmpdir(), 'ptest-ssh-'));
      agentPath = join(tmp, 'agent.sock');
      // A stand-in agent: it answers what it got once the client has ended its side.
      agent = createServer({ allowHalfOpen: true }, (c) => {
        let got = '';
        c.on('data', (chunk) => {
          got += chunk;
        });
        c.on('end', () => c.end(`agent got: ${got}`));
      });
      await new Promise<void>((resolve) => agent.listen(agentPath, resolve));
    });
    afterAll(async () => {
      await new Promise((resolve) => agent.close(resolve));
      rmSync(tmp, { recursive: true, force: true });
    });

    it('passes each connection on, half-open, with the owner and mode asked for; closing removes nothing of the caller', async () => {
      const dir = join(tmp, 'work');
      mkdirSync(dir);
      const proxy = await agentProxy(agentPath, dir, 'ssh-0.sock', { uid: 1000, gid: 1001, mode: 0o640 });
      expect(proxy.path).toBe(join(dir, 'ssh-0.sock'));
      const stat = lstatSync(proxy.path);
      expect([stat.isSocket(), stat.uid, stat.gid, stat.mode & 0o777]).toEqual([true, 1000, 1001, 0o640]);
      expect(await Promise.all([ask(proxy.path, 'one'), ask(proxy.path, 'two')])).toEqual([
        'agent got: one',
        'agent got: two',
      ]);
      proxy.close();
      expect(existsSync(dir)).toBe(true);
    });

    it('a directory whose path is too long for a unix socket: a short one of its own, removed on close', async () => {
      const long = join(tmp, 'x'.repeat(60), 'y'.repeat(60));
      mkdirSync(long, { recursive: true });
      const proxy = await agentProxy(agentPath, long, 'ssh-0.sock', { uid: 0, gid: 0, mode: 0o600 });
      expect(proxy.path.startsWith(long)).toBe(false);
      expect(proxy.path.length).toBeLessThanOrEqual(100);
      expect(await ask(proxy.path, 'hi')).toBe('agent got: hi');
      proxy.close();
      expect(existsSync(dirname(proxy.path))).toBe(false);
    });

    it('--ssh: ID and a socket, $SSH_AUTH_SOCK by default; anything else is one clear line', () => {
      expect(parseSshSpec(`default=${agentPath}`)).toEqual(['default', agentPath]);
      expect(parseSshSpec('github', { SSH_AUTH_SOCK: agentPath })).toEqual(['github', agentPath]);
      expect(() => parseSshSpec('default', {})).toThrow('SSH_AUTH_SOCK is not set: start ssh-agent');
      expect(() => parseSshSpec('default', { SUDO_USER: 'me' })).toThrow('sudo --preserve-env=SSH_AUTH_SOCK keeps it');
      expect(() => parseSshSpec('default=', { SSH_AUTH_SOCK: agentPath })).toThrow('no socket given');
      const key = join(tmp, 'id_ed25519');
      writeFileSync(key, 'not a socket');
      expect(() => parseSshSpec(`default=${key}`)).toThrow("is not an agent's socket");
      expect(() => parseSshSpec(`default=${key},${key}`)).toThrow('key files are not read');
      expect(() => parseSshSpec(`default=${join(tmp, 'none')}`)).toThrow('no agent at');
      expect(() => parseSshSpec('bad id')).toThrow('invalid --ssh');
    });
  },
);
