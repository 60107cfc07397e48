/**
 * The {@link JobDriver} contract: what a scenario runner needs from whatever runs the job. The
 * multi-process launcher of `@phalanx/cli` (`phalanx launch`) implements it with real processes and
 * signals; tests implement it in one process over the memory transport. The runner depends only on
 * this interface.
 *
 * @module
 */
import type { AbortOptions } from '@phalanx/core'
import type { ClockSkew } from './clock.js'
import type { ChaosLog } from './event-log.js'
import type { DiskRule } from './storage.js'
import type { NetworkRule } from './transport.js'

/** What a process of the job is. */
export type ProcessRole = 'coordinator' | 'worker' | 'holder'

/** One process of the job, as the driver sees it. */
export interface ProcessInfo {
  /** Process id within the job (`coordinator`, `worker-2`). */
  id: string
  role: ProcessRole
  /** Rank in the current quorum (workers that are members). */
  rank?: number
  /** OS process id, when it is a real process. */
  pid?: number
  /** Host group (a host name, a rack): the target of `{ group }` faults. */
  group?: string
  /** False once it exited or was killed. */
  alive: boolean
}

/** Signals a driver delivers. */
export type ProcessSignal = 'SIGKILL' | 'SIGTERM' | 'SIGSTOP' | 'SIGCONT'

/**
 * A fault applied from inside a process (through a control message or an environment hook that
 * calls `createChaosAgent(...).apply(fault)` there).
 */
export type InProcessFault =
  /** Throws an uncaught error: the process dies from inside. */
  | { kind: 'crash', message?: string }
  /** Blocks the event loop for `ms` (a busy loop): heartbeats, timers and I/O all stop. */
  | { kind: 'stall', ms: number }
  /** Network rule on this process's outbound traffic (and the replies it awaits). */
  | { kind: 'network', rule: NetworkRule }
  /** Network partition between groups of process ids (target `*`: the whole job). */
  | { kind: 'partition', groups: string[][] }
  /** Replace the gradients this worker reports by an attack of `@phalanx/aggregate`. */
  | { kind: 'byzantine', attack: Record<string, unknown>, seed: number }
  /** Train on flipped labels y → C − 1 − y. */
  | { kind: 'label-flip', classes: number }
  /** Disk fault on this process's checkpoint storage. */
  | { kind: 'disk', rule: DiskRule }
  /** Skew this process's clock. */
  | { kind: 'clock-skew', skew: ClockSkew }

/** Every fault kind a scenario can name. */
export type FaultKind = 'kill' | 'hang' | 'join' | InProcessFault['kind']

/** Undoes an applied fault (a network rule removed, a partition healed, a skew reset). Idempotent. */
export interface InjectionHandle {
  revert(options?: AbortOptions): Promise<void>
}

/** The job a scenario runs. */
export interface JobSpec {
  /** Workers started at once. */
  workers: number
  /** Steps to train. */
  steps: number
  /** Fewest workers of a quorum. */
  minWorkers: number
  /** Most workers of a quorum. */
  maxWorkers: number
  /** Bit-reproducible reduction. */
  deterministic: boolean
  /** Seed of the job (data order, initialisation). */
  seed: number
  /** False disables recovery (no failure detection): the must-fail control of the invariant checker. */
  recovery: boolean
  /** Further configuration overrides (merged over the preset by a launcher). */
  config: Record<string, unknown>
}

/** What the job looks like now. */
export interface DriverJobStatus {
  phase: 'starting' | 'running' | 'done' | 'failed' | 'stopped'
  committed: number
  epoch: number
  /** Member ids in rank order. */
  members: string[]
  /** Loss of the last committed step, when known. */
  loss?: number
}

/** One recovery, as the coordinator measured it (ms). */
export interface DriverRecovery {
  reason: string
  peers: string[]
  step: number
  detectMs: number
  quorumMs: number
  firstCommitMs: number
  totalMs: number
  healMs?: number
}

/** The end of a job. */
export interface JobOutcome {
  committed: number
  epoch: number
  /** Final training loss (evaluated on the final weights), when known. */
  loss?: number
  /** CRC-32C of the final weights of each worker that trained every step. */
  checksums: number[]
}

/** Runs a job and lets a scenario runner hurt it. */
export interface JobDriver {
  /** Informational name (`in-process`, `launch`). */
  readonly name: string
  /**
   * The log the driver's decorators append effects to (dropped messages, attacked steps), when it
   * has one in this process; the runner appends its actions to the same log so a report counts both.
   */
  readonly log?: ChaosLog
  /** True when the driver can inject this kind of fault. */
  supports(kind: FaultKind): boolean
  /** Starts the job. */
  start(job: JobSpec, options?: AbortOptions): Promise<void>
  /** Every process started so far (alive or not). */
  processes(): ProcessInfo[]
  /** Delivers a signal to a process. */
  signal(id: string, signal: ProcessSignal, options?: AbortOptions): Promise<void>
  /** Applies an in-process fault to process `id` (`*`: the whole job, for partitions). */
  inject(id: string, fault: InProcessFault, options?: AbortOptions): Promise<InjectionHandle>
  /** Starts a new worker (a replacement or a joiner). */
  spawn(options?: { id?: string } & AbortOptions): Promise<ProcessInfo>
  /** The job's state now. */
  status(): DriverJobStatus
  /** Subscribes to committed steps (`step` is the index of the committed step: committed = step + 1). */
  onCommit(listener: (event: { step: number, epoch: number, loss?: number }) => void): () => void
  /** Recoveries so far. */
  recoveries(): DriverRecovery[]
  /** Resolves when the job trained all its steps; rejects when it failed or the signal fired. */
  finished(options?: AbortOptions): Promise<JobOutcome>
  /** Stops everything it started. Idempotent. */
  stop(options?: AbortOptions): Promise<void>
  /** Ids of processes (or in-process components) still running after `stop`: must be empty. */
  leaks(): Promise<string[]>
}
