/** What a build reports while it runs: `petri build --progress` renders these; `--progress json` prints them. */
export type BuildEvent =
  | {
      type: 'step';
      /** Step number, unique in the build (BuildKit's `#N`). */
      id: number;
      /** Stage name (`AS name`) or `stage-N`. */
      stage: string;
      /** Position in the stage (FROM is 1) and the stage's length. */
      index: number;
      total: number;
      /** The instruction as written, variables expanded where Docker expands them. */
      text: string;
      status: 'start' | 'cached' | 'done' | 'error';
      durationMs?: number;
      /** For `error`: the one-line reason. */
      error?: string;
      /** A RUN step whose container petri started early, while it started itself (see the README). */
      early?: true;
    }
  | { type: 'output'; id: number; stream: 'stdout' | 'stderr'; data: string }
  | { type: 'warning'; message: string }
  /** A build cache pushed to a registry (`--cache-to`): its manifest, the steps and layers it holds. */
  | { type: 'cache'; action: 'export'; ref: string; digest: string; steps: number; layers: number }
  | {
      type: 'image';
      id: string;
      manifestDigest: string;
      tags: string[];
      durationMs: number;
      /** The same build as before, nothing changed: answered from `petri build`'s result cache. */
      resultCache?: true;
    };
