/**
 * When faults fire: at given steps, every k steps, every T ms, or as a Poisson process, all expanded
 * ahead of time from the seed so a run's plan is known before it starts and is the same every time.
 *
 * @module
 */
import { InvalidParametersError } from '@phalanx/core'
import { createChaosRng } from './rng.js'

/** A schedule: exactly one of the fields. */
export interface ScheduleSpec {
  /** Once, when `step` steps are committed (0: at the start). */
  step?: number
  /** At each of these committed-step counts. */
  steps?: number[]
  /** Every `everySteps` committed steps, from `fromStep` (@default everySteps), at most `count` times. */
  everySteps?: number
  /** Every `everyMs` ms from `startMs` (@default everyMs), `count` times. */
  everyMs?: number
  /** Poisson arrivals at `ratePerSec` from `startMs` (@default 0), `count` times (and before `endMs`). */
  poisson?: { ratePerSec: number, count: number, startMs?: number, endMs?: number }
  fromStep?: number
  startMs?: number
  /** Bound on firings of `everySteps` / `everyMs`. */
  count?: number
}

/** One planned firing: at a committed-step count or at a time since the start. */
export type Trigger = { step: number, atMs?: undefined } | { atMs: number, step?: undefined }

/** Most firings one schedule may expand to. */
export const MAX_TRIGGERS = 10_000

/**
 * Expands a schedule into its firings, sorted. `key` separates the random streams of different
 * faults; `steps` bounds step schedules by the job's length.
 */
export function expandSchedule (spec: ScheduleSpec, init: { seed: number, key: string, steps: number }): Trigger[] {
  const out: Trigger[] = []
  const count = Math.min(spec.count ?? MAX_TRIGGERS, MAX_TRIGGERS)
  if (spec.step !== undefined) out.push({ step: spec.step })
  if (spec.steps !== undefined) for (const s of spec.steps) out.push({ step: s })
  if (spec.everySteps !== undefined) {
    if (!(Number.isInteger(spec.everySteps) && spec.everySteps >= 1)) throw new InvalidParametersError('everySteps must be a positive integer')
    for (let s = spec.fromStep ?? spec.everySteps, n = 0; s < init.steps && n < count; s += spec.everySteps, n++) out.push({ step: s })
  }
  if (spec.everyMs !== undefined) {
    if (!(spec.everyMs > 0)) throw new InvalidParametersError('everyMs must be positive')
    if (spec.count === undefined) throw new InvalidParametersError('everyMs needs a count')
    for (let k = 0; k < count; k++) out.push({ atMs: (spec.startMs ?? spec.everyMs) + k * spec.everyMs })
  }
  if (spec.poisson !== undefined) {
    const p = spec.poisson
    if (!(p.ratePerSec > 0)) throw new InvalidParametersError('poisson.ratePerSec must be positive')
    const rng = createChaosRng(init.seed, 'poisson', init.key)
    let t = p.startMs ?? 0
    for (let k = 0; k < Math.min(p.count, MAX_TRIGGERS); k++) {
      t += rng.exponential(p.ratePerSec) * 1000
      if (p.endMs !== undefined && t >= p.endMs) break
      out.push({ atMs: Math.round(t * 1000) / 1000 })
    }
  }
  return out.sort((a, b) => (a.step ?? Infinity) - (b.step ?? Infinity) || (a.atMs ?? 0) - (b.atMs ?? 0))
}
