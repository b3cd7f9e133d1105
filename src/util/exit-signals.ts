const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * Runs `cleanup` (synchronous) first of the listeners of SIGINT, SIGTERM and
 * SIGHUP, once, then steps aside: when no other listener is left, the signal is
 * raised again, so that it ends the process as it would have; libraries that do
 * the same (signal-exit, which proper-lockfile loads) then see only
 * themselves. Returns what removes the hook without running it.
 */
export function cleanupOnSignals(cleanup: () => void): () => void {
  const unhook = () => {
    for (const signal of SIGNALS) process.off(signal, onSignal);
  };
  function onSignal(signal: NodeJS.Signals): void {
    unhook();
    cleanup();
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  }
  for (const signal of SIGNALS) process.prependListener(signal, onSignal);
  return unhook;
}
