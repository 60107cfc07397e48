/**
 * Events a coordinator or worker process sends to the launcher that spawned it, over the Node IPC
 * channel (`process.send`). They are how `phalanx launch` learns progress at once (a fault
 * scheduled at step N fires on the commit of step N, not on the next poll). Processes started by
 * hand have no channel; `phalanx status` reads the coordinator's `GET /status` instead.
 *
 * @module
 */
import type { RecoveryRecord } from '@phalanx/coordinator'
import type { JobStatus } from './coordinator-process.js'

/** Coordinator process events. */
export type CoordinatorProcessEvent =
  | { type: 'ready', address: string, statusUrl?: string }
  | { type: 'quorum', epoch: number, step: number, active: boolean, members: string[], reason: string }
  | { type: 'commit', step: number, epoch: number }
  | { type: 'suspect', peers: string[], reason: string, epoch: number }
  | { type: 'recovery', record: RecoveryRecord }
  | { type: 'done', committed: number, epoch: number, status: JobStatus }
  /** The job failed for good (e.g. `QuorumLostError` naming the committed step that was lost). */
  | { type: 'failed', error: { name: string, message: string } }

/** Worker process events. */
export type WorkerProcessEvent =
  | { type: 'worker-ready', id: string, address: string }
  | { type: 'progress', id: string, step: number, loss?: number, accuracy?: number }
  | { type: 'heal', id: string, step: number, bytes: number, ms: number, sources: string[] }
  | { type: 'result', id: string, steps: number, checksum: number, loss?: number, accuracy?: number }

/** Any process event. */
export type ProcessEvent = CoordinatorProcessEvent | WorkerProcessEvent

/** True when `value` looks like a {@link ProcessEvent} (IPC input is checked before use). */
export function isProcessEvent (value: unknown): value is ProcessEvent {
  return typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string'
}
