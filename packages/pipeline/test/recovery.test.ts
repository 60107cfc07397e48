import { describe, expect, it } from 'vitest'
import { DEFAULT_RECOVERY_POLICY, checkfreeWeights, planRecovery, weightedAverage, type RecoveryPolicy } from '@phalanx/pipeline'

const policy = (p: Partial<RecoveryPolicy> = {}): RecoveryPolicy => ({ ...DEFAULT_RECOVERY_POLICY, ...p })
const base = { stages: 6, survivors: 0, gradNorms: [1, 0.2, 0.6, 0.9, 0.4, 1], outOfOrder: false, edgeReplicas: false }

describe('CheckFree rule', () => {
  it('weighs each neighbour by its own clipped gradient norm + 1e-4 (reference formula)', () => {
    const [wPrev, wNext] = checkfreeWeights(0.3, 0.9, 'gradNorm')
    const a = 0.9 + 1e-4
    const b = 0.3 + 1e-4
    expect(wNext).toBeCloseTo(a / (a + b), 12)
    expect(wPrev).toBeCloseTo(b / (a + b), 12)
    expect(checkfreeWeights(0.3, 0.9, 'uniform')).toEqual([0.5, 0.5])
  })

  it('averages interior stages with the neighbours\' weights', () => {
    const plan = planRecovery({ ...base, stage: 3, policy: policy({ strategy: 'checkfree' }) })
    expect(plan.kind).toBe('average')
    const a = 0.4 + 1e-4
    const b = 0.6 + 1e-4
    expect(plan.sources.map((s) => s.stage)).toEqual([2, 4])
    expect(plan.sources[0]?.weight).toBeCloseTo(b / (a + b), 12)
    expect(plan.sources[1]?.weight).toBeCloseTo(a / (a + b), 12)
  })

  it('copies the neighbour for edge stages, with the embedding/head copy when kept', () => {
    expect(planRecovery({ ...base, stage: 0, policy: policy({ strategy: 'checkfree' }) })).toEqual({ kind: 'copy', stage: 0, sources: [{ stage: 1, part: 'blocks', weight: 1 }] })
    expect(planRecovery({ ...base, edgeReplicas: true, stage: 5, policy: policy() }).sources)
      .toEqual([{ stage: 4, part: 'blocks', weight: 1 }, { stage: 4, part: 'edge', weight: 1 }])
  })

  it('copies swap partners only when training out of order', () => {
    expect(planRecovery({ ...base, outOfOrder: true, stage: 1, policy: policy() })).toMatchObject({ kind: 'copy', sources: [{ stage: 0 }] })
    expect(planRecovery({ ...base, outOfOrder: true, stage: 4, policy: policy() })).toMatchObject({ kind: 'copy', sources: [{ stage: 5 }] })
    expect(planRecovery({ ...base, outOfOrder: false, stage: 1, policy: policy() }).kind).toBe('average')
  })

  it('prefers an exact copy from a surviving replica, and honours the baselines', () => {
    expect(planRecovery({ ...base, survivors: 1, stage: 3, policy: policy() }).kind).toBe('replica-copy')
    expect(planRecovery({ ...base, survivors: 1, stage: 3, policy: policy({ preferReplica: false, strategy: 'random' }) }).kind).toBe('random')
    expect(planRecovery({ ...base, stage: 3, policy: policy({ strategy: 'rollback' }) }).kind).toBe('rollback')
    expect(() => planRecovery({ ...base, stage: 6, policy: policy() })).toThrow(/not in/)
  })

  it('weightedAverage computes the weighted sum element-wise', () => {
    const out = weightedAverage([Float32Array.of(1, 2, 4), Float32Array.of(3, 6, 0)], [0.25, 0.75])
    expect([...out]).toEqual([2.5, 5, 1])
    expect(() => weightedAverage([Float32Array.of(1)], [1, 2])).toThrow()
  })
})
