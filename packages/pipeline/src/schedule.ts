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
import { InvalidParametersError, type StageGraph } from '@phalanx/core'
import { createRng, deriveSeed } from '@phalanx/tfjs'
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
  /** Replicas per stage. @default one each */
  replicas?: readonly number[]
  /**
   * `owners[s][m]`: the replica of stage `s` that runs micro-batch `m` ({@link routeReplicas}).
   * @default `m mod replicas[s]` (fixed routing)
   */
  owners?: ReadonlyArray<readonly number[]>
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

/** The replica of `stage` that runs micro-batch `microBatch` under fixed routing. */
export function replicaOf (replicas: readonly number[] | undefined, stage: number, microBatch: number): number {
  const r = replicas?.[stage] ?? 1
  return microBatch % r
}

/**
 * How micro-batches are spread over the data-parallel replicas of each stage:
 * - `fixed`: micro-batch m runs on replica `m mod R_s` of every stage (replica r of every stage
 *   sees the same micro-batches);
 * - `random`: NoLoCo's random pipeline routing: every micro-batch's activations go to a random
 *   replica of the next stage, drawn from a seeded permutation, so replicas of consecutive stages
 *   are mixed every step and no replica trains on a fixed slice of the data.
 */
export type RoutingKind = 'fixed' | 'random'

/** Inputs of {@link routeReplicas}. */
export interface RoutingInit {
  /** @default 'fixed' */
  routing?: RoutingKind
  /** Seeds random routing (every stage of a pipeline must use the same seed). @default 0 */
  seed?: number
  /** The step being routed. */
  step: number
  /** Replicas per stage. */
  replicas: readonly number[]
  /** Micro-batches per step. */
  microBatches: number
}

/**
 * `owners[s][m]`: the replica of stage `s` that runs micro-batch `m` in step `step`.
 *
 * Random routing: micro-batches are taken in waves of `R_s` consecutive indices; wave `w` of stage
 * `s` is dealt to the replicas by a permutation drawn from `(seed, step, s, w)`. It is a pure
 * function of its inputs, so every stage computes the same routing without talking to anyone
 * (NoLoCo seeds its permutations the same way, by sample counter and stage boundary), and each
 * wave gives every replica exactly one micro-batch: replicas of a stage run `⌊M/R⌋` or `⌈M/R⌉`
 * micro-batches per step. Backward retraces the forward route, so gradients go back to the replica
 * that sent the activation.
 */
export function routeReplicas (init: RoutingInit): number[][] {
  const { step, replicas, microBatches } = init
  const seed = init.seed ?? 0
  if (!Number.isInteger(microBatches) || microBatches < 1) throw new InvalidParametersError(`microBatches must be a positive integer, got ${microBatches}`)
  if (replicas.some((r) => !Number.isInteger(r) || r < 1)) throw new InvalidParametersError('Every stage needs at least one replica')
  return replicas.map((r, s) => {
    if (init.routing !== 'random' || r === 1) return Array.from({ length: microBatches }, (_, m) => m % r)
    const owners = new Array<number>(microBatches)
    for (let w = 0; w * r < microBatches; w++) {
      const perm = Array.from({ length: r }, (_, i) => i)
      const rng = createRng(deriveSeed(seed, 0x2077e, step, s, w))
      for (let i = r - 1; i > 0; i--) {
        const j = rng.int(i + 1)
        const t = perm[i] as number
        perm[i] = perm[j] as number
        perm[j] = t
      }
      for (let k = 0; k < r && w * r + k < microBatches; k++) owners[w * r + k] = perm[k] as number
    }
    return owners
  })
}

/**
 * The stage graph of a pipeline: the in-order route, plus the swapped route when training out of
 * order (what `@phalanx/coordinator`'s stage registry is created with).
 */
export function pipelineGraph (init: Pick<ScheduleInit, 'stages' | 'outOfOrder'>): StageGraph {
  const routes = [inOrderRoute(init.stages).map((h) => h.stage)]
  if (init.outOfOrder === true) routes.push(swappedRoute(init.stages).map((h) => h.stage))
  return { stages: init.stages, routes }
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
  const owner = (s: number, m: number): number => {
    const o = init.owners?.[s]?.[m] ?? replicaOf(replicas, s, m)
    if (!Number.isInteger(o) || o < 0 || o >= (replicas[s] as number)) throw new InvalidParametersError(`Micro-batch ${m} routed to replica ${o} of stage ${s}, which has ${replicas[s]}`)
    return o
  }
  const routes = Array.from({ length: microBatches }, (_, m) => routeOf(init, m))
  const plan: PipelineOp[][][] = replicas.map((r) => Array.from({ length: r }, () => []))
  const fwd = routes.map((r) => new Array<boolean>(r.length).fill(false))
  const bwd = routes.map((r) => new Array<boolean>(r.length).fill(false))
  // Hops each executor owns, in (micro-batch, hop) order.
  const owned = replicas.map((r) => Array.from({ length: r }, () => [] as Array<{ m: number, h: number }>))
  routes.forEach((route, m) => route.forEach((hop, h) => { owned[hop.stage]?.[owner(hop.stage, m)]?.push({ m, h }) }))
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
