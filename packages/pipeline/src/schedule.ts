/**
 * Micro-batch routes and schedules.
 *
 * A micro-batch's **route** is the list of hops its forward pass makes: in order, stage 0 runs the
 * embedding and its blocks, each later stage its blocks, the last stage its blocks and the head.
 * With CheckFree+ out-of-order execution, odd micro-batches swap the first two and the last two
 * block stages: `embed(0) → blocks(1) → blocks(0) → blocks(2) … blocks(S-1) → blocks(S-2) → head(S-1)`.
 * The backward pass retraces the route in reverse.
 *
 * A **schedule** fixes, for every executor (a replica of a stage), the order in which it runs its
 * forward (F) and backward (B) hops in one step. {@link planSchedule} derives it by simulating the
 * pipeline tick by tick under the policy of GPipe (all forwards, then all backwards) or 1F1B
 * (backward first whenever one is ready; at most `S - s` micro-batches in flight at stage `s`).
 * Executors then follow their lists strictly: because the lists come from one feasible execution,
 * following them can never deadlock, and the order of every floating-point accumulation is fixed,
 * so a step is bit-reproducible.
 *
 * @module
 */
import { InvalidParametersError } from '@phalanx/core'
import type { Segment } from './model.js'

/** The two schedules. */
export type ScheduleKind = 'gpipe' | '1f1b'

/** One hop of a micro-batch's forward route. */
export interface Hop {
  readonly stage: number
  readonly parts: readonly Segment[]
}

/** One operation of an executor: forward or backward of hop `hop` of micro-batch `microBatch`. */
export interface PipelineOp {
  readonly kind: 'F' | 'B'
  readonly microBatch: number
  readonly hop: number
}

/** Tunables of {@link planSchedule} and {@link routeOf}. */
export interface ScheduleInit {
  /** `gpipe` or `1f1b`. @default '1f1b' */
  kind?: ScheduleKind
  /** Number of stages S. */
  stages: number
  /** Micro-batches per step M. */
  microBatches: number
  /** Replicas per stage (micro-batch m runs on replica `m mod replicas[s]`). @default one each */
  replicas?: readonly number[]
  /** CheckFree+ out-of-order execution of odd micro-batches (needs S ≥ 4). @default false */
  outOfOrder?: boolean
}

/** The in-order route through `stages` stages. */
export function inOrderRoute (stages: number): Hop[] {
  if (!Number.isInteger(stages) || stages < 1) throw new InvalidParametersError(`stages must be a positive integer, got ${stages}`)
  if (stages === 1) return [{ stage: 0, parts: ['embed', 'blocks', 'head'] }]
  const hops: Hop[] = [{ stage: 0, parts: ['embed', 'blocks'] }]
  for (let s = 1; s < stages - 1; s++) hops.push({ stage: s, parts: ['blocks'] })
  hops.push({ stage: stages - 1, parts: ['blocks', 'head'] })
  return hops
}

/** The CheckFree+ swapped route: block stages run in the order 1, 0, 2, …, S-3, S-1, S-2. */
export function swappedRoute (stages: number): Hop[] {
  if (!Number.isInteger(stages) || stages < 4) throw new InvalidParametersError(`Out-of-order execution needs at least 4 stages, got ${stages}`)
  const order = [1, 0]
  for (let s = 2; s < stages - 2; s++) order.push(s)
  order.push(stages - 1, stages - 2)
  return [
    { stage: 0, parts: ['embed'] },
    ...order.map((stage): Hop => ({ stage, parts: ['blocks'] })),
    { stage: stages - 1, parts: ['head'] }
  ]
}

/** The route of micro-batch `microBatch`: swapped for odd micro-batches when `outOfOrder`. */
export function routeOf (init: Pick<ScheduleInit, 'stages' | 'outOfOrder'>, microBatch: number): Hop[] {
  return init.outOfOrder === true && microBatch % 2 === 1 ? swappedRoute(init.stages) : inOrderRoute(init.stages)
}

/** The replica of `stage` that runs micro-batch `microBatch`. */
export function replicaOf (replicas: readonly number[] | undefined, stage: number, microBatch: number): number {
  const r = replicas?.[stage] ?? 1
  return microBatch % r
}

/**
 * Per-executor op lists: `plan[stage][replica]` is the ordered list of ops that replica runs in
 * one step.
 *
 * @throws InvalidParametersError on impossible settings.
 */
export function planSchedule (init: ScheduleInit): PipelineOp[][][] {
  const kind = init.kind ?? '1f1b'
  const { stages, microBatches } = init
  if (!Number.isInteger(microBatches) || microBatches < 1) throw new InvalidParametersError(`microBatches must be a positive integer, got ${microBatches}`)
  const replicas = Array.from({ length: stages }, (_, s) => init.replicas?.[s] ?? 1)
  if (replicas.some((r) => !Number.isInteger(r) || r < 1)) throw new InvalidParametersError('Every stage needs at least one replica')
  const routes = Array.from({ length: microBatches }, (_, m) => routeOf(init, m))
  const plan: PipelineOp[][][] = replicas.map((r) => Array.from({ length: r }, () => []))
  const fwd = routes.map((r) => new Array<boolean>(r.length).fill(false))
  const bwd = routes.map((r) => new Array<boolean>(r.length).fill(false))
  // Hops each executor owns, in (micro-batch, hop) order.
  const owned = replicas.map((r) => Array.from({ length: r }, () => [] as Array<{ m: number, h: number }>))
  routes.forEach((route, m) => route.forEach((hop, h) => { owned[hop.stage]?.[replicaOf(replicas, hop.stage, m)]?.push({ m, h }) }))
  let remaining = routes.reduce((n, r) => n + 2 * r.length, 0)
  const limit = 4 * remaining + 16
  for (let tick = 0; remaining > 0; tick++) {
    if (tick > limit) throw new InvalidParametersError('Schedule simulation did not finish (deadlock)')
    const doneF: Array<{ m: number, h: number }> = []
    const doneB: Array<{ m: number, h: number }> = []
    for (let s = 0; s < stages; s++) {
      for (let r = 0; r < (replicas[s] as number); r++) {
        const mine = owned[s]?.[r] as Array<{ m: number, h: number }>
        const readyF = mine.filter(({ m, h }) => !(fwd[m]?.[h] ?? true) && (h === 0 || fwd[m]?.[h - 1] === true))
        const readyB = mine.filter(({ m, h }) => fwd[m]?.[h] === true && bwd[m]?.[h] === false &&
          (h === (routes[m] as Hop[]).length - 1 || bwd[m]?.[h + 1] === true))
        let pick: { kind: 'F' | 'B', m: number, h: number } | undefined
        if (kind === 'gpipe') {
          const allForwardsDone = mine.every(({ m, h }) => fwd[m]?.[h] === true)
          if (readyF.length > 0) pick = { kind: 'F', ...(readyF[0] as { m: number, h: number }) }
          else if (allForwardsDone && readyB.length > 0) pick = { kind: 'B', ...(readyB[readyB.length - 1] as { m: number, h: number }) }
        } else {
          if (readyB.length > 0) pick = { kind: 'B', ...(readyB[0] as { m: number, h: number }) }
          else {
            // A micro-batch is in flight here from its first forward hop until its last backward hop.
            const inFlight = new Set<number>()
            for (const { m, h } of mine) if (fwd[m]?.[h] === true) inFlight.add(m)
            for (const m of [...inFlight]) if (mine.every((o) => o.m !== m || bwd[o.m]?.[o.h] === true)) inFlight.delete(m)
            const cap = stages - s
            const allowed = readyF.filter(({ m }) => inFlight.has(m) || inFlight.size < cap)
            if (allowed.length > 0) pick = { kind: 'F', ...(allowed[0] as { m: number, h: number }) }
          }
        }
        if (pick === undefined) continue
        plan[s]?.[r]?.push({ kind: pick.kind, microBatch: pick.m, hop: pick.h })
        if (pick.kind === 'F') doneF.push(pick)
        else doneB.push(pick)
      }
    }
    // Results become visible at the next tick: an op never depends on one run in the same tick.
    for (const { m, h } of doneF) (fwd[m] as boolean[])[h] = true
    for (const { m, h } of doneB) (bwd[m] as boolean[])[h] = true
    remaining -= doneF.length + doneB.length
  }
  return plan
}
