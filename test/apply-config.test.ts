import { describe, expect, it } from 'vitest';
import { imageCommand, imageEnv, resolveUser } from '../src/image/apply-config.js';

const files: Record<string, string> = {
  '/etc/passwd':
    'root:x:0:0:root:/root:/bin/sh\ntester:x:1000:1000::/home/tester:/bin/sh\nweb:x:33:33::/var/www:/bin/false\n',
  '/etc/group': 'root:x:0:\ntester:x:1000:\nextra:x:2000:tester,web\nwww:x:33:\n',
};
const read = (path: string) => files[path];

describe('applying an image config like docker run', () => {
  it('joins Entrypoint and Cmd; a command replaces Cmd; --entrypoint clears Cmd', () => {
    const config = { Entrypoint: ['/entry'], Cmd: ['default'] };
    expect(imageCommand(config, {}, 'img')).toEqual(['/entry', 'default']);
    expect(imageCommand(config, { command: ['mine'] }, 'img')).toEqual(['/entry', 'mine']);
    expect(imageCommand(config, { entrypoint: ['sh'] }, 'img')).toEqual(['sh']);
    expect(() => imageCommand({}, {}, 'img:1')).toThrow(
      'no command given and image img:1 has neither Entrypoint nor Cmd',
    );
  });
  it('puts the caller env over the image env', () => {
    expect(imageEnv({ Env: ['PATH=/bin', 'A=1', 'B=x=y'] }, { A: '2' })).toEqual({ PATH: '/bin', A: '2', B: 'x=y' });
  });
  it('resolves users and groups from the image', () => {
    expect(resolveUser(undefined, read)).toEqual({ uid: 0, gid: 0, additionalGids: [], home: '/root' });
    expect(resolveUser('tester', read)).toEqual({ uid: 1000, gid: 1000, additionalGids: [2000], home: '/home/tester' });
    expect(resolveUser('web:tester', read)).toEqual({ uid: 33, gid: 1000, additionalGids: [], home: '/var/www' });
    expect(resolveUser('1000:33', read)).toMatchObject({ uid: 1000, gid: 33 });
    expect(resolveUser('4242', read)).toEqual({ uid: 4242, gid: 4242, additionalGids: [] });
    expect(() => resolveUser('nobody-here', read)).toThrow(
      "unable to find user nobody-here: no matching entries in the image's /etc/passwd",
    );
    expect(() => resolveUser('tester:nogroup', read)).toThrow('unable to find group nogroup');
  });
});
