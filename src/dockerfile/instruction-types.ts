import type { Mount } from './mounts.js';
import type { Heredoc } from './parser.js';

/** What every typed instruction has: where it is, its parsed flags, its typed arguments, its heredocs. */
interface Base<K extends string, F, A> {
  keyword: K;
  line: number;
  endLine: number;
  column: number;
  flags: F;
  args: A;
  heredocs: Heredoc[];
  /** The flag words and arguments as written (continuations joined), for display. */
  source: { flags: string[]; args: string };
}

/** A command in shell form (`cmd` is one string run by the SHELL) or exec form (`cmd` is argv). */
export interface CommandLine {
  cmd: string[];
  prependShell: boolean;
}

export interface KeyValue {
  key: string;
  value: string;
}

export type NoFlags = Record<string, never>;

export type FromInstruction = Base<'FROM', { platform?: string }, { image: string; name?: string }>;
export type RunInstruction = Base<
  'RUN',
  { mounts?: Mount[]; network?: 'default' | 'none' | 'host'; security?: 'sandbox' | 'insecure' },
  CommandLine
>;
export type CmdInstruction = Base<'CMD', NoFlags, CommandLine>;
export type EntrypointInstruction = Base<'ENTRYPOINT', NoFlags, CommandLine>;
export type ShellInstruction = Base<'SHELL', NoFlags, { shell: string[] }>;

export interface CopyFlags {
  from?: string;
  chown?: string;
  chmod?: string;
  link?: boolean;
  parents?: boolean;
  exclude?: string[];
}
export interface AddFlags {
  chown?: string;
  chmod?: string;
  link?: boolean;
  checksum?: string;
  keepGitDir?: boolean;
  exclude?: string[];
}
/** Sources exclude heredoc words (`<<EOF`): those are in `heredocs`. */
export interface SourcesAndDest {
  sources: string[];
  dest: string;
}
export type CopyInstruction = Base<'COPY', CopyFlags, SourcesAndDest>;
export type AddInstruction = Base<'ADD', AddFlags, SourcesAndDest>;

/** Keys and values as written (quotes kept); `expandInstruction` removes quotes and expands variables. */
export type EnvInstruction = Base<'ENV', NoFlags, { pairs: KeyValue[] }>;
export type LabelInstruction = Base<'LABEL', NoFlags, { pairs: KeyValue[] }>;
export type ArgInstruction = Base<'ARG', NoFlags, { args: { key: string; value?: string }[] }>;
export type WorkdirInstruction = Base<'WORKDIR', NoFlags, { path: string }>;
export type UserInstruction = Base<'USER', NoFlags, { user: string }>;
export type ExposeInstruction = Base<'EXPOSE', NoFlags, { ports: string[] }>;
export type VolumeInstruction = Base<'VOLUME', NoFlags, { paths: string[] }>;
export type StopsignalInstruction = Base<'STOPSIGNAL', NoFlags, { signal: string }>;
export type MaintainerInstruction = Base<'MAINTAINER', NoFlags, { name: string }>;

/** Durations in milliseconds. `test` is the image config's Healthcheck.Test: `["NONE"]`, `["CMD", …]` or `["CMD-SHELL", cmd]`. */
export type HealthcheckInstruction = Base<
  'HEALTHCHECK',
  { interval?: number; timeout?: number; startPeriod?: number; startInterval?: number; retries?: number },
  { test: string[] }
>;
export type OnbuildInstruction = Base<'ONBUILD', NoFlags, { expression: string; instruction: Instruction }>;

export type Instruction =
  | FromInstruction
  | RunInstruction
  | CmdInstruction
  | EntrypointInstruction
  | ShellInstruction
  | CopyInstruction
  | AddInstruction
  | EnvInstruction
  | LabelInstruction
  | ArgInstruction
  | WorkdirInstruction
  | UserInstruction
  | ExposeInstruction
  | VolumeInstruction
  | StopsignalInstruction
  | MaintainerInstruction
  | HealthcheckInstruction
  | OnbuildInstruction;

export type Keyword = Instruction['keyword'];
