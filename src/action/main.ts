// The GitHub Action's main entry point, bundled into action/dist/main.cjs (scripts/bundle-action.mjs),
// next to action/dist/petri.cjs, the petri command it runs.
import { join } from 'node:path';
import { runMain } from './main-step.js';

void runMain(join(import.meta.dirname, 'petri.cjs'));
