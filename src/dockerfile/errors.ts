import { PetriError } from '../errors.js';

/** A problem in a Dockerfile, located at `FILE:LINE:COLUMN` (1-based). */
export class DockerfileError extends PetriError {
  readonly file: string;
  readonly line: number;
  readonly column: number;
  readonly reason: string;

  constructor(file: string, line: number, column: number, reason: string) {
    super(`${file}:${line}:${column}: ${reason}`, { code: 'EDOCKERFILE' });
    this.file = file;
    this.line = line;
    this.column = column;
    this.reason = reason;
  }
}

/**
 * Thrown by the instruction parsers, which know what is wrong but not where:
 * `parseDockerfile` attaches the location (of `token` when it is found on the
 * instruction's lines), like BuildKit's one location wrapper.
 */
export class InstructionError extends Error {
  readonly token: string | undefined;

  constructor(message: string, token?: string) {
    super(message);
    this.token = token;
  }
}
