// A suite of its own, run by test/vitest-integration.test.ts: petri/vitest as a user's project has it.
import { join } from 'node:path';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  root: import.meta.dirname,
  resolve: {
    // The package's own sources (the `petri/vitest` export is dist/vitest/index.js, built).
    alias: { 'petri/vitest': join(import.meta.dirname, '..', '..', 'src', 'vitest', 'index.ts') },
  },
  test: {
    include: ['*.itest.ts'],
    globalSetup: ['./global-setup.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
