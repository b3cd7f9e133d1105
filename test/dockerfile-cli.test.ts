import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';

const petri = join(import.meta.dirname, '..', 'dist', 'cli', 'main.js');
const fixtures = join(import.meta.dirname, '..', 'fixtures', 'dockerfile');
const run = (args: string[]) => spawnSync(process.execPath, [petri, ...args], { encoding: 'utf8', timeout: 20_000 });

it('prints one line per instruction with heredocs indented below', () => {
  const result = run(['dockerfile', 'parse', join(fixtures, 'heredocs', 'Dockerfile')]);
  expect(result.stderr).toBe('');
  expect(result.status).toBe(0);
  expect(result.stdout).toBe(
    [
      '1 FROM busybox',
      '2 RUN <<EOF1 cat > /a && cat <<EOF2 > /b',
      '    first $HOME',
      '    EOF1',
      '    second',
      '    EOF2',
      '7 RUN <<-"EOT"',
      '    echo tabs stripped, not expanded $HOME',
      '    EOT',
      "10 COPY <<'CONF' <<EOF /etc/",
      '    key=value',
      '    CONF',
      '    plain',
      '    EOF',
      '15 RUN cat <<EOF',
      '',
      '    EOF',
      '',
    ].join('\n'),
  );
  const flags = run(['dockerfile', 'parse', join(fixtures, 'copy-flags', 'Dockerfile')]);
  expect(flags.stdout.split('\n')[2]).toBe('3 COPY --from=src --chown=app:app --chmod=0644 --link /a /b /dst/');
});

it('prints the typed instructions as JSON with --json', () => {
  const result = run(['dockerfile', 'parse', '--json', join(fixtures, 'run-mount', 'Dockerfile')]);
  expect(result.status).toBe(0);
  expect(JSON.parse(result.stdout)).toEqual(
    JSON.parse(readFileSync(join(fixtures, 'run-mount', 'expected.json'), 'utf8')),
  );
});

it('reports a parse error or a missing file as one line and exits 1', () => {
  const file = join(fixtures, 'negative', 'unknown-instruction', 'Dockerfile');
  const result = run(['dockerfile', 'parse', file]);
  expect(result).toMatchObject({ status: 1, stdout: '' });
  expect(result.stderr).toBe(`petri: ${file}:2:1: unknown instruction FORM (did you mean FROM?)\n`);
  const missing = run(['dockerfile', 'parse', '/nonexistent/Dockerfile']);
  expect(missing).toMatchObject({
    status: 1,
    stderr: 'petri: /nonexistent/Dockerfile:1:1: cannot read the Dockerfile: no such file\n',
  });
  expect(run(['dockerfile', 'frob']).stderr).toBe(
    'petri: petri dockerfile: unknown subcommand frob: use petri dockerfile parse FILE\n',
  );
});
