/**
 * The pipeline, NoLoCo and erasure scenarios of the library, each run through the scenario runner with its
 * fault-free baseline on the in-process driver of its `job.kind`, and the schema's kind checks.
 */
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { loadScenario, parseScenario, runBaseline, runScenario, type JobDriver, type Scenario, type ScenarioReport } from '@phalanx/chaos'
import { createErasureDriver, createNolocoDriver, createPipelineDriver, type PipelineRecovery } from '@phalanx/cli'

const DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'chaos', 'scenarios')
const drivers: JobDriver[] = []

afterEach(async () => {
  for (const d of drivers.splice(0)) await d.stop()
})

function driverOf (s: Scenario): JobDriver {
  const d = s.job.kind === 'pipeline'
    ? createPipelineDriver({ seed: s.seed })
    : s.job.kind === 'erasure' ? createErasureDriver({ seed: s.seed }) : createNolocoDriver({ seed: s.seed })
  drivers.push(d)
  return d
}

async function run (file: string): Promise<ScenarioReport> {
  const scenario = await loadScenario(join(DIR, file))
  const baseline = await runBaseline(scenario, { driver: driverOf(scenario) })
  const report = await runScenario(scenario, { driver: driverOf(scenario), baseline })
  expect(report.injected.filter((i) => i.skipped === undefined).length).toBeGreaterThan(0)
  expect(report.leaks).toEqual([])
  return report
}

const strategies = (r: ScenarioReport): string[] => r.recoveries.map((x) => (x as PipelineRecovery).strategy)

describe('job.kind in the scenario schema', () => {
  it('defaults to elastic and fills in the kind config', () => {
    expect(parseScenario({ name: 'x' }).job.kind).toBe('elastic')
    const s = parseScenario({ name: 'p', job: { kind: 'pipeline', steps: 4, config: { stages: 3 } } })
    expect(s.job.config).toMatchObject({ stages: 3, recovery: 'checkfree-plus', schedule: '1f1b', microBatches: 4 })
    expect(parseScenario({ name: 'n', job: { kind: 'noloco', config: {} } }).job.config).toMatchObject({ replicas: 8, interval: 5, preset: 'noloco' })
  })

  it('reports bad kind config with its path', () => {
    expect(() => parseScenario({ name: 'p', job: { kind: 'pipeline', config: { stages: 3, replicas: [1, 2] } } }))
      .toThrow(/job\.config\.replicas: needs one entry per stage \(3\), got 2 \(job\.kind pipeline\)/)
    expect(() => parseScenario({ name: 'p', job: { kind: 'pipeline', config: { recovery: 'magic' } } })).toThrow(/job\.config\.recovery: .*\(job\.kind pipeline\)/)
    expect(() => parseScenario({ name: 'n', job: { kind: 'noloco', config: { H: 3 } } })).toThrow(/job\.config: .*H/)
    expect(() => parseScenario({ name: 'k', job: { kind: 'tensor' } })).toThrow(/job\.kind/)
    expect(() => parseScenario({ name: 'e', job: { kind: 'erasure', config: { hosts: 6, scheme: { kind: 'rs', k: 4, m: 1 } } } }))
      .toThrow(/job\.config\.scheme: k \+ m must equal hosts \(6\), got 5 \(job\.kind erasure\)/)
  })

  it('fills in the erasure defaults', () => {
    expect(parseScenario({ name: 'e', job: { kind: 'erasure', config: {} } }).job.config).toMatchObject({ hosts: 6, racks: 3, stateFloats: 65_536 })
  })
})

describe('pipeline scenarios', () => {
  it('pipeline-interior-stage-loss: CheckFree averages the lost stage and the run stays within the loss bound', async () => {
    const r = await run('pipeline/pipeline-interior-stage-loss.yaml')
    expect(r.reasons).toEqual([])
    expect(r.verdict).toBe('pass')
    expect(strategies(r)).toEqual(['average'])
    expect(r.committed).toBe(12)
  }, 30_000)

  it('pipeline-replica-loss: the exact replica copy ends bit-identical to the baseline', async () => {
    const r = await run('pipeline/pipeline-replica-loss.yaml')
    expect(r.reasons).toEqual([])
    expect(strategies(r)).toEqual(['replica-copy'])
    expect(r.bitIdentical).toBe(true)
  }, 30_000)

  it('pipeline-edge-stage-loss: CheckFree+ copies the first stage from its neighbour', async () => {
    const r = await run('pipeline/pipeline-edge-stage-loss.yaml')
    expect(r.reasons).toEqual([])
    expect(strategies(r)).toEqual(['copy'])
  }, 30_000)

  it('pipeline-no-recovery-must-fail: the checker names the broken invariants', async () => {
    const r = await run('pipeline/pipeline-no-recovery-must-fail.yaml')
    expect(r.expected).toBe('fail')
    expect(r.verdict).toBe('fail')
    expect(r.reasons.join('\n')).toMatch(/finishes: StepAbortedError: Step 4 failed 1 times/)
    expect(r.reasons.join('\n')).toMatch(/allStepsCommitted: committed 4 of 12/)
  }, 30_000)
})

describe('noloco scenarios', () => {
  it('noloco-replica-kill: survivors finish every round over 50 ms links after a replica dies', async () => {
    const r = await run('noloco/noloco-replica-kill.yaml')
    expect(r.reasons).toEqual([])
    expect(r.verdict).toBe('pass')
    expect(r.recoveries.map((x) => x.peers)).toEqual([['replica-3']])
    expect(r.faultsByClass).toMatchObject({ 'network:network-start': 1, 'process:kill': 1 })
    expect(r.durationMs).toBeGreaterThan(16 * 50)
  }, 40_000)
})

describe('erasure scenarios', () => {
  it('erasure-two-hosts-lost: a whole rack of RS(4,2) is rebuilt from memory, bit-identical to the baseline', async () => {
    const r = await run('erasure/erasure-two-hosts-lost.yaml')
    expect(r.reasons).toEqual([])
    expect(r.verdict).toBe('pass')
    expect(r.bitIdentical).toBe(true)
    expect(r.committed).toBe(8)
    expect(r.recoveries.map((x) => x.peers)).toEqual([['host-1', 'host-4']])
    expect(r.faultsByClass).toMatchObject({ 'process:kill': 2 })
  }, 30_000)

  it('erasure-three-hosts-lost-must-fail: one loss past m fails the run and names the L2 fallback', async () => {
    const r = await run('erasure/erasure-three-hosts-lost-must-fail.yaml')
    expect(r.expected).toBe('fail')
    expect(r.verdict).toBe('fail')
    expect(r.reasons.join('\n')).toMatch(/finishes: InsufficientShardsError: 3 of 6 members .*tolerates 2.*restore from L2/)
    expect(r.reasons.join('\n')).toMatch(/allStepsCommitted: committed 4 of 8/)
  }, 30_000)

  it('without a fault the group commits every step and ends on the baseline checksum', async () => {
    const s = parseScenario({ name: 'e', job: { kind: 'erasure', steps: 3, config: { hosts: 4, stateFloats: 1024 } } })
    const a = await runBaseline(s, { driver: driverOf(s) })
    const b = await runBaseline(s, { driver: driverOf(s) })
    expect(a.committed).toBe(3)
    expect(a.checksums).toHaveLength(1)
    expect(b.checksums).toEqual(a.checksums)
  }, 30_000)
})
