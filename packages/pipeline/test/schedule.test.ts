import { describe, expect, it } from 'vitest'
import { inOrderRoute, planSchedule, routeOf, swappedRoute, type PipelineOp } from '@phalanx/pipeline'

const stagesOf = (route: ReturnType<typeof inOrderRoute>): number[] => route.map((h) => h.stage)

function checkComplete (plan: PipelineOp[][][], microBatches: number, stages: number, outOfOrder: boolean): void {
  const seen = new Map<string, number>()
  plan.forEach((rows, s) => rows.forEach((ops) => {
    for (const op of ops) {
      const route = routeOf({ stages, outOfOrder }, op.microBatch)
      expect(route[op.hop]?.stage).toBe(s)
      const key = `${op.kind}:${op.microBatch}:${op.hop}`
      seen.set(key, (seen.get(key) ?? 0) + 1)
    }
  }))
  let expected = 0
  for (let m = 0; m < microBatches; m++) expected += 2 * routeOf({ stages, outOfOrder }, m).length
  expect(seen.size).toBe(expected)
  for (const n of seen.values()) expect(n).toBe(1)
}

describe('routes', () => {
  it('runs stages in order, with embedding on the first and head on the last', () => {
    const r = inOrderRoute(4)
    expect(stagesOf(r)).toEqual([0, 1, 2, 3])
    expect(r[0]?.parts).toEqual(['embed', 'blocks'])
    expect(r[3]?.parts).toEqual(['blocks', 'head'])
  })

  it('swaps the first two and the last two block stages (CheckFree+)', () => {
    const r = swappedRoute(6)
    expect(stagesOf(r)).toEqual([0, 1, 0, 2, 3, 5, 4, 5])
    expect(r.map((h) => h.parts.join('+'))).toEqual(['embed', 'blocks', 'blocks', 'blocks', 'blocks', 'blocks', 'blocks', 'head'])
    expect(() => swappedRoute(3)).toThrow(/at least 4/)
  })

  it('swaps only odd micro-batches', () => {
    for (let m = 0; m < 6; m++) {
      expect(stagesOf(routeOf({ stages: 4, outOfOrder: true }, m))).toEqual(m % 2 === 1 ? [0, 1, 0, 3, 2, 3] : [0, 1, 2, 3])
      expect(stagesOf(routeOf({ stages: 4, outOfOrder: false }, m))).toEqual([0, 1, 2, 3])
    }
  })
})

describe('planSchedule', () => {
  it('GPipe runs every forward of a stage before any backward', () => {
    const plan = planSchedule({ kind: 'gpipe', stages: 4, microBatches: 6 })
    checkComplete(plan, 6, 4, false)
    for (const [ops] of plan) {
      const firstB = ops?.findIndex((o) => o.kind === 'B') ?? -1
      expect(firstB).toBe(6)
      expect(ops?.slice(firstB).every((o) => o.kind === 'B')).toBe(true)
    }
  })

  it('1F1B keeps at most S - s micro-batches in flight and alternates on the last stage', () => {
    const S = 4
    const plan = planSchedule({ kind: '1f1b', stages: S, microBatches: 8 })
    checkComplete(plan, 8, S, false)
    plan.forEach(([ops], s) => {
      let inFlight = 0
      let peak = 0
      for (const o of ops ?? []) { inFlight += o.kind === 'F' ? 1 : -1; peak = Math.max(peak, inFlight) }
      expect(peak).toBe(S - s)
    })
    expect(plan[S - 1]?.[0]?.map((o) => o.kind).join('')).toBe('FB'.repeat(8))
  })

  it('plans out-of-order routes and data-parallel replicas completely', () => {
    for (const kind of ['gpipe', '1f1b'] as const) {
      const plan = planSchedule({ kind, stages: 6, microBatches: 4, outOfOrder: true, replicas: [1, 2, 1, 1, 1, 2] })
      checkComplete(plan, 4, 6, true)
      expect(plan[1]?.[1]?.every((o) => o.microBatch % 2 === 1)).toBe(true)
    }
  })
})
