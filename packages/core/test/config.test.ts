import { describe, expect, it } from 'vitest'
import { PRESETS, mergeConfig, resolveConfig } from '../src/index.js'

describe('config', () => {
  it('resolves presets with user layers on top', () => {
    const c = resolveConfig({ preset: 'lan' }, { job: { id: 'mnist', minWorkers: 2 } }, { job: { steps: 7 } })
    expect(c.timeouts).toEqual(PRESETS.lan.timeouts)
    expect(c.job).toMatchObject({ id: 'mnist', minWorkers: 2, steps: 7, globalBatch: 256 })
    expect(resolveConfig().preset).toBe('local')
  })

  it('every preset is itself consistent', () => {
    for (const p of Object.values(PRESETS)) expect(resolveConfig({ preset: p.preset })).toEqual(p)
  })

  it('rejects an inconsistent timeout hierarchy with a clear message', () => {
    const bad = () => resolveConfig({ timeouts: { heartbeatIntervalMs: 400, suspectAfterMs: 500 } })
    expect(bad).toThrow(expect.objectContaining({ name: 'InvalidConfigError' }))
    expect(bad).toThrow(/suspectAfterMs: 500 ms must be at least 3 × heartbeatIntervalMs \(1200 ms\)/)
    expect(() => resolveConfig({ timeouts: { stepTimeoutMs: 400 } })).toThrow(/stepTimeoutMs: 400 ms must exceed suspectAfterMs/)
  })

  it('reports every problem at once', () => {
    try {
      resolveConfig({ job: { minWorkers: 9, maxWorkers: 4, globalBatch: 100, microBatch: 32 } })
      expect.unreachable('should have thrown')
    } catch (err) {
      const issues = (err as { details: { issues: string[] } }).details.issues
      expect(issues.some((i) => i.startsWith('job.minWorkers'))).toBe(true)
      expect(issues.some((i) => i.startsWith('job.globalBatch'))).toBe(true)
    }
  })

  it('rejects unknown keys, wrong types and unknown presets', () => {
    expect(() => resolveConfig({ job: { id: 'x', nope: 1 } })).toThrow(/Unrecognized key/)
    expect(() => resolveConfig({ job: { steps: 'ten' } })).toThrow(/job.steps/)
    expect(() => resolveConfig({ preset: 'moon' })).toThrow(/Unknown preset "moon"/)
  })

  it('defaults the aggregator to the mean and keeps the parameters of a chosen rule', () => {
    for (const p of Object.values(PRESETS)) expect(p.aggregator).toEqual({ name: 'Average' })
    expect(resolveConfig({}).aggregator).toEqual({ name: 'Average' })
    expect(resolveConfig({ aggregator: { name: 'Krum', f: 1, neighbours: 'n-f-2' } }).aggregator).toEqual({ name: 'Krum', f: 1, neighbours: 'n-f-2' })
    expect(() => resolveConfig({ aggregator: { name: 7 } })).toThrow(/aggregator\.name/)
  })

  it('merges without touching its inputs', () => {
    const base = { a: { b: 1, c: 2 } }
    const merged = mergeConfig(base, { a: { c: 3 } })
    expect(merged).toEqual({ a: { b: 1, c: 3 } })
    expect(base.a.c).toBe(2)
  })
})
