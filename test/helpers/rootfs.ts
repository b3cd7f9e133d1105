// A tiny root filesystem for container tests: static busybox plus the probe
// (test/probe/probe.c). Built once per content hash into the OS temp dir and
// shared by all vitest workers; the directory is created by building into a
// temporary sibling and renaming it, so a complete rootfs is all anyone sees.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

const BUSYBOX = '/bin/busybox';
const PREFIX = 'ptest-rootfs-';
// Bump when the layout below changes, so stale shared rootfs dirs are not reused.
const LAYOUT_VERSION = '1';

const PASSWD = [
  'root:x:0:0:root:/root:/bin/sh',
  'nobody:x:65534:65534:nobody:/nonexistent:/bin/false',
  'tester:x:1000:1000:tester:/home/tester:/bin/sh',
];
const GROUP = ['root:x:0:', 'tester:x:1000:', 'nogroup:x:65534:', 'extra:x:2000:tester'];
const EMPTY_DIRS = ['proc', 'sys', 'dev', 'tmp', 'home/tester', 'root', 'etc', 'var', 'mnt'];

let pending: Promise<string> | undefined;

export function probeSourcePath(): string {
  return fileURLToPath(new URL('../probe/probe.c', import.meta.url));
}

/** Path of the shared rootfs (built on first use). */
export function busyboxRootfs(): Promise<string> {
  pending ??= build().catch((err: unknown) => {
    pending = undefined;
    throw err;
  });
  return pending;
}

/** Deletes every built rootfs (and leftover partial builds) in the temp dir. */
export async function removeBuiltRootfs(): Promise<void> {
  pending = undefined;
  const tmp = os.tmpdir();
  const mounted = await mountPoints();
  for (const name of await fs.readdir(tmp)) {
    if (!name.startsWith(PREFIX)) continue;
    const dir = path.join(tmp, name);
    // Never recurse into something mounted inside (a leaked /proc or bind mount).
    if (mounted.some((m) => m === dir || m.startsWith(`${dir}/`))) continue;
    await fs.rm(dir, { recursive: true, force: true });
  }
}

async function build(): Promise<string> {
  const busybox = await statBusybox();
  const source = await fs.readFile(probeSourcePath());
  const hash = createHash('sha256')
    .update(`${LAYOUT_VERSION}\0${busybox.size}\0${busybox.mtimeMs}\0`)
    .update(source)
    .digest('hex')
    .slice(0, 16);
  const dir = path.join(os.tmpdir(), PREFIX + hash);
  if (await exists(dir)) return dir;

  const tmp = `${dir}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await populate(tmp);
    await fs.rename(tmp, dir);
  } catch (err) {
    await fs.rm(tmp, { recursive: true, force: true });
    // Another worker won the race to the same (identical) rootfs.
    if (isErrno(err, 'EEXIST', 'ENOTEMPTY') && (await exists(dir))) return dir;
    throw err;
  }
  return dir;
}

async function populate(root: string): Promise<void> {
  await fs.mkdir(root, { recursive: true, mode: 0o755 });
  for (const d of ['bin', ...EMPTY_DIRS]) await fs.mkdir(path.join(root, d), { recursive: true });
  await fs.chmod(path.join(root, 'tmp'), 0o1777);
  if (process.getuid?.() === 0) await fs.chown(path.join(root, 'home/tester'), 1000, 1000);

  await fs.copyFile(BUSYBOX, path.join(root, 'bin/busybox'));
  await fs.chmod(path.join(root, 'bin/busybox'), 0o755);
  const { stdout } = await execFileAsync(BUSYBOX, ['--list']);
  for (const applet of new Set(stdout.split('\n').map((s) => s.trim()))) {
    if (applet && applet !== 'busybox' && !applet.includes('/')) {
      await fs.symlink('busybox', path.join(root, 'bin', applet));
    }
  }

  await fs.writeFile(path.join(root, 'etc/passwd'), `${PASSWD.join('\n')}\n`, { mode: 0o644 });
  await fs.writeFile(path.join(root, 'etc/group'), `${GROUP.join('\n')}\n`, { mode: 0o644 });

  const probe = path.join(root, 'probe');
  const args = ['-static', '-O2', '-Wall', '-Wextra', '-Werror', '-o', probe, probeSourcePath()];
  try {
    await execFileAsync('cc', args);
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? '';
    throw new Error(`compiling the probe failed: cc ${args.join(' ')}\n${stderr}`, { cause: err });
  }
}

/** Stats /bin/busybox and makes sure it is the static build. */
async function statBusybox(): Promise<{ size: number; mtimeMs: number }> {
  const missing = new Error('busybox-static is not installed (apt-get install busybox-static)');
  let data: Buffer;
  try {
    data = await fs.readFile(BUSYBOX);
  } catch (err) {
    throw isErrno(err, 'ENOENT') ? missing : err;
  }
  if (hasInterpreter(data)) throw missing; // the dynamically linked "busybox" package
  const st = await fs.stat(BUSYBOX);
  return { size: st.size, mtimeMs: st.mtimeMs };
}

/** True for a 64-bit little-endian ELF with a PT_INTERP program header. */
function hasInterpreter(elf: Buffer): boolean {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) {
    return false;
  }
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const off = phoff + i * phentsize;
    if (off + 4 <= elf.length && elf.readUInt32LE(off) === 3) return true; // PT_INTERP
  }
  return false;
}

async function mountPoints(): Promise<string[]> {
  try {
    const info = await fs.readFile('/proc/self/mountinfo', 'utf8');
    return info
      .split('\n')
      .filter(Boolean)
      .map((line) =>
        (line.split(' ')[4] ?? '').replace(/\\([0-7]{3})/g, (_, o: string) =>
          String.fromCharCode(Number.parseInt(o, 8)),
        ),
      );
  } catch {
    return [];
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await fs.access(p);
    return true;
  } catch {
    return false;
  }
}

function isErrno(err: unknown, ...codes: string[]): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' && codes.includes(code);
}
