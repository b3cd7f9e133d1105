import { petriTest as test } from 'petri/vitest';
import { expect } from 'vitest';
import { record } from './record.js';

test('several containers in one test, all removed after it', async ({ petri }) => {
  const server = await petri.start('web', (c) => c.withExposedPorts(8080));
  const job = await petri.start('base', (c) => c.withCommand(['sh', '-c', 'echo job ran; exec sleep 1000']));
  expect((await job.exec(['hostname'])).stdout).toBe(`${job.getHostname()}\n`);
  const port = server.getMappedPort(8080);
  expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toBe('built once\n');
  record({ file: 'pair', id: server.getId(), port, image: petri.image('web') });
  record({ file: 'pair', id: job.getId(), image: petri.image('base') });
});

test('an unknown image name says what there is', ({ petri }) => {
  expect(() => petri.image('nope')).toThrow('petri/vitest: no image "nope": the global setup prepared web, base');
});

test('same container port in the other worker, another host port', async ({ petri }) => {
  const server = await petri.start('web', (c) => c.withExposedPorts(8080));
  const port = server.getMappedPort(8080);
  expect((await fetch(`http://127.0.0.1:${port}/page.txt`)).status).toBe(200);
  record({ file: 'pair', id: server.getId(), port, image: petri.image('web') });
});

// vitest's modifiers work on petriTest too.
test.skip('skipped through petriTest.skip', () => {
  throw new Error('not run');
});
