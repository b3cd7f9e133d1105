#!/usr/bin/env node
// The `petri` command as bundled (dist/bin/petri.cjs, see scripts/bundle-cli.mjs):
// turns the compile cache on before the rest of the CLI loads, then runs it.
import { enableCompileCache } from './compile-cache.js';

enableCompileCache();
void import('./main.js');
