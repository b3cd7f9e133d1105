/**
 * The one error class petri throws for problems a user can act on.
 * Its message is a single line that names the thing, the reason and the fix;
 * the CLI prints it as `petri: <message>` without a stack trace.
 */
export class PetriError extends Error {
  override name = 'PetriError';
  readonly code: string;

  constructor(message: string, options: { code?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = options.code ?? 'EPETRI';
  }
}

/** Formats an error for one line of output: PetriErrors as they are, others with their message. */
export function errorLine(error: unknown): string {
  if (error instanceof Error) return error.message.split('\n')[0] ?? String(error);
  return String(error);
}

/** An error that happened while cleaning up after `cause`: both are kept, `cause` first. */
export function withCleanupError(cause: unknown, cleanup: unknown): unknown {
  if (cause instanceof Error) {
    cause.message += ` (and cleaning up failed too: ${errorLine(cleanup)})`;
    return cause;
  }
  return cause;
}
