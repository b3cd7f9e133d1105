import { petriGlobalSetup } from 'petri/vitest';

// The store the outer test made (with the busybox image `ptest/api:1` the Dockerfile starts FROM).
const dir = process.env.PTEST_VITEST_STORE;
if (!dir) throw new Error('PTEST_VITEST_STORE is not set: run this suite through test/vitest-integration.test.ts');

export default petriGlobalSetup({
  store: `${dir}/images`,
  layers: `${dir}/layers`,
  images: {
    web: { context: 'web', buildArgs: { GREETING: 'built once' } },
    base: { image: 'ptest/api:1' },
  },
});
