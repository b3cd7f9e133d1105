import type childProcessModule from 'node:child_process';
import type httpModule from 'node:http';
import type httpsModule from 'node:https';
import { createRequire } from 'node:module';
import type ttyModule from 'node:tty';
import type zlibModule from 'node:zlib';

// Node built-ins that cost milliseconds to load (node:https ~6 ms with tls, node:http ~5 ms, node:zlib
// ~2 ms, node:child_process ~1.5 ms with net and stream) and that most commands and test files (or a
// build that runs no RUN step) never use: loaded on first use instead of at import.
// The require function is made on first use too: in the CLI's CommonJS bundle, import.meta.url is a
// file URL computed when asked for, and every command loads this file.
let require: NodeJS.Require | undefined;
const load = (name: string): unknown => {
  require ??= createRequire(import.meta.url);
  return require(name);
};

/** node:zlib, when an archive needs it. */
export const zlib = (): typeof zlibModule => load('node:zlib') as typeof zlibModule;

/** node:http, when a request is made. */
export const http = (): typeof httpModule => load('node:http') as typeof httpModule;

/** node:https, when a request is made. */
export const https = (): typeof httpsModule => load('node:https') as typeof httpsModule;

/** node:child_process, when a process is started. */
export const childProcess = (): typeof childProcessModule => load('node:child_process') as typeof childProcessModule;

/** node:tty, when whether an fd is a terminal matters. */
export const tty = (): typeof ttyModule => load('node:tty') as typeof ttyModule;
