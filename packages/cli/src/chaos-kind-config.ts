/**
 * What the in-process chaos drivers (pipeline, NoLoCo, erasure) share: reading their scenario's
 * validated `job.config`, the deterministic values they build synthetic state from, and the runner's
 * commit listeners.
 *
 * @module
 */
import { InvalidParametersError, type JsonValue } from '@phalanx/core'
import type { JobSpec } from '@phalanx/chaos'
import type { z } from 'zod'

/**
 * `spec.config` parsed by the scenario kind's schema (defaults filled in); throws
 * `InvalidParametersError` naming the first problems when the job is not of that kind.
 */
export function kindConfig<S extends z.ZodType> (schema: S, kind: string, spec: JobSpec): z.infer<S> {
  const r = schema.safeParse(spec.config)
  if (!r.success) {
    const issues: JsonValue = r.error.issues.slice(0, 3).map((i) => `${i.path.join('.')}: ${i.message}`)
    throw new InvalidParametersError(`The ${kind} driver needs a job.kind: ${kind} scenario (job.config failed validation)`, { details: { issues } })
  }
  return r.data
}

/** A deterministic value in [-1, 1) for (index, salt): a hash, so any element is computed alone. */
export function noise (index: number, salt: number): number {
  let h = Math.imul(index ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(salt + 1, 0xc2b2ae35)
  h ^= h >>> 15
  h = Math.imul(h, 0x27d4eb2d)
  h ^= h >>> 13
  return (h >>> 0) / 2147483648 - 1
}

/** A commit as a driver reports it to the runner. */
export interface DriverCommit { step: number, epoch: number, loss?: number }

/** The runner's commit listeners of one driver: `on` is the driver's `onCommit`, `emit` tells them all. */
export interface CommitFeed {
  on(listener: (event: DriverCommit) => void): () => void
  emit(event: DriverCommit): void
}

/** Creates a {@link CommitFeed}. */
export function createCommitFeed (): CommitFeed {
  const listeners = new Set<(event: DriverCommit) => void>()
  return {
    on (listener) {
      listeners.add(listener)
      return () => { listeners.delete(listener) }
    },
    emit (event) { for (const l of listeners) l(event) }
  }
}
