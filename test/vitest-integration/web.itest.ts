import { containerTest, petriImage } from 'petri/vitest';
import { expect } from 'vitest';
import { record } from './record.js';

// Each test gets its own container of the image the global setup built.
const test = containerTest('web', (c) => c.withExposedPorts(8080));

test('serves the page built into the image', async ({ container }) => {
  const port = container.getMappedPort(8080);
  const response = await fetch(`http://127.0.0.1:${port}/`);
  expect(await response.text()).toBe('built once\n');
  record({ file: 'web', id: container.getId(), port, image: petriImage('web') });
});

test('a container of its own: what the last test wrote is not here', async ({ container }) => {
  expect((await container.exec(['sh', '-c', 'test -e /tmp/mark; echo $?'])).stdout).toBe('1\n');
  await container.exec(['touch', '/tmp/mark']);
  const port = container.getMappedPort(8080);
  expect(await (await fetch(`http://127.0.0.1:${port}/page.txt`)).text()).toBe('a page\n');
  record({ file: 'web', id: container.getId(), port, image: petriImage('web') });
});

test('and again', async ({ container }) => {
  expect((await container.exec(['sh', '-c', 'test -e /tmp/mark; echo $?'])).stdout).toBe('1\n');
  await container.exec(['touch', '/tmp/mark']);
  record({ file: 'web', id: container.getId(), port: container.getFirstMappedPort(), image: petriImage('web') });
});
