/**
 * The chaos event log: every fault a decorator, agent or scenario runner injects is appended here,
 * in order, with what was done to whom. It is the evidence in a scenario report and the input of
 * `replayScenario`.
 *
 * @module
 */
import type { JsonValue } from '@phalanx/core'

/** The fault classes. */
export type FaultClass = 'process' | 'network' | 'byzantine' | 'disk' | 'clock'

/** One injected fault. */
export interface ChaosEvent {
  /** Position in the log (0, 1, 2, ...). */
  index: number
  /** Milliseconds since the log was created, on its clock (informational: differs between runs). */
  atMs: number
  class: FaultClass
  /** What was done: `kill`, `hang`, `drop`, `delay`, `corrupt`, `enospc`, `skew`, ... */
  kind: string
  /** Whom it was done to: a process id, a link `a->b`, a file path. */
  target: string
  /** Committed step when it was injected, when known. */
  step?: number
  /** Small JSON-able parameters (delay, bits flipped, message type and sequence number, ...). */
  details?: Record<string, JsonValue>
}

/** What is appended (the log fills in `index` and `atMs`). */
export type ChaosEventInput = Omit<ChaosEvent, 'index' | 'atMs'>

/** An append-only, bounded log of {@link ChaosEvent}s. */
export interface ChaosLog {
  /** Appends an event and returns it. Past {@link ChaosLogInit.maxEvents} only the counters grow. */
  append(event: ChaosEventInput): ChaosEvent
  /** The kept events, in order. */
  events(): readonly ChaosEvent[]
  /** Events counted by `class:kind` (all of them, also those past the cap). */
  counts(): Record<string, number>
  /** Number of events not kept because of the cap. */
  readonly overflow: number
  /** Subscribes to appended events; returns the unsubscribe function. */
  on(listener: (event: ChaosEvent) => void): () => void
}

/** Options of {@link createChaosLog}. */
export interface ChaosLogInit {
  /**
   * Most events kept in memory (counters keep counting after).
   * @default 100000
   */
  maxEvents?: number
  /** Time source of `atMs`. @default `performance.now` */
  now?: () => number
}

/** Creates an empty {@link ChaosLog}. */
export function createChaosLog (init: ChaosLogInit = {}): ChaosLog {
  const max = init.maxEvents ?? 100_000
  const now = init.now ?? (() => performance.now())
  const start = now()
  const kept: ChaosEvent[] = []
  const counts: Record<string, number> = {}
  const listeners = new Set<(event: ChaosEvent) => void>()
  let total = 0
  return {
    append (input) {
      const event: ChaosEvent = { index: total++, atMs: Math.round((now() - start) * 1000) / 1000, ...input }
      const key = `${event.class}:${event.kind}`
      counts[key] = (counts[key] ?? 0) + 1
      if (kept.length < max) kept.push(event)
      for (const l of listeners) l(event)
      return event
    },
    events: () => kept,
    counts: () => ({ ...counts }),
    get overflow () { return total - kept.length },
    on (listener) {
      listeners.add(listener)
      return () => { listeners.delete(listener) }
    }
  }
}

/**
 * The part of an event that must be the same in two runs with the same seed: everything but the
 * wall time. Compare `log.events().map(comparableEvent)` across runs.
 */
export function comparableEvent (event: ChaosEvent): Omit<ChaosEvent, 'atMs'> {
  const { atMs: _atMs, ...rest } = event
  return rest
}
