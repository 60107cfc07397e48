import { describe, expect, it } from 'vitest'
import { expandSchedule, parseScenario, parseScenarioText } from '../src/index.js'

describe('schedules', () => {
  it('expands step, every-k-steps, every-T-ms and Poisson schedules, bounded and seeded', () => {
    const init = { seed: 4, key: 'f0', steps: 20 }
    expect(expandSchedule({ step: 3 }, init)).toEqual([{ step: 3 }])
    expect(expandSchedule({ everySteps: 6 }, init)).toEqual([{ step: 6 }, { step: 12 }, { step: 18 }])
    expect(expandSchedule({ everySteps: 5, fromStep: 1, count: 2 }, init)).toEqual([{ step: 1 }, { step: 6 }])
    expect(expandSchedule({ everyMs: 100, count: 3 }, init)).toEqual([{ atMs: 100 }, { atMs: 200 }, { atMs: 300 }])
    const p = expandSchedule({ poisson: { ratePerSec: 10, count: 500 } }, init)
    expect(p).toHaveLength(500)
    expect(p).toEqual(expandSchedule({ poisson: { ratePerSec: 10, count: 500 } }, init))
    expect(p).not.toEqual(expandSchedule({ poisson: { ratePerSec: 10, count: 500 } }, { ...init, seed: 5 }))
    const last = p[p.length - 1]?.atMs as number
    // 500 arrivals at 10/s take about 50 s.
    expect(last).toBeGreaterThan(40_000)
    expect(last).toBeLessThan(60_000)
    expect(expandSchedule({ poisson: { ratePerSec: 10, count: 500, endMs: 1000 } }, init).length).toBeLessThan(30)
    expect(() => expandSchedule({ everyMs: 10 }, init)).toThrow(/needs a count/)
  })
})

describe('scenario schema', () => {
  it('fills defaults', () => {
    const s = parseScenario({ name: 'x' })
    expect(s).toMatchObject({ seed: 0, expect: 'pass', faults: [], job: { workers: 3, steps: 30, recovery: true }, invariants: { finishes: true, timeoutMs: 60_000 } })
  })

  it('reports every problem with its path', () => {
    const text = `
name: bad name
job: { workers: 2, steps: 10, minWorkers: 3 }
faults:
  - kind: kill
    at: { step: 1, everySteps: 2 }
  - kind: explode
    at: { step: 1 }
  - kind: hang
    at: { step: 2 }
  - kind: network
    at: { step: 1 }
    drop: 2
    target: { rank: -1 }
invariants: { mttr: { p99Ms: 0 } }
`
    let err: unknown
    try { parseScenarioText(text, 'bad.yaml') } catch (e) { err = e }
    expect(err).toMatchObject({ name: 'InvalidConfigError' })
    const issues = (err as { details: { issues: string[] } }).details.issues
    expect(issues).toEqual(expect.arrayContaining([
      expect.stringMatching(/^name: only letters/),
      expect.stringMatching(/^faults\.0\.at: exactly one of step, steps, everySteps, everyMs, poisson \(got step, everySteps\)/),
      expect.stringMatching(/^faults\.1(\.kind)?: /),
      expect.stringMatching(/^faults\.2\.durationMs: /),
      expect.stringMatching(/^faults\.3\.drop: /),
      expect.stringMatching(/^faults\.3\.target\.rank: /),
      expect.stringMatching(/^invariants\.mttr\.p99Ms: /)
    ]))
    expect((err as Error).message).toMatch(/^Invalid bad.yaml:/)
  })

  it('checks the scenario against its job', () => {
    expect(() => parseScenario({ name: 'x', job: { workers: 2, minWorkers: 3, steps: 10 } })).toThrow(/job.minWorkers: 3 exceeds job.workers \(2\)/)
    expect(() => parseScenario({ name: 'x', job: { steps: 10 }, faults: [{ kind: 'kill', at: { step: 10 } }] })).toThrow(/faults\.0\.at: step 10 is not before the job's last step/)
    expect(() => parseScenario({ name: 'x', job: { deterministic: false }, invariants: { bitIdentical: true } })).toThrow(/bitIdentical: needs job.deterministic/)
    expect(() => parseScenarioText('name: [unclosed', 'x.yaml')).toThrow(/x.yaml is not valid YAML/)
  })
})
