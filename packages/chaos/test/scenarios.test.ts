import { readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { formatReport, loadScenario, replayScenario, runBaseline, runScenario, type JobDriver, type ScenarioReport } from '../src/index.js'
import { expectScenarioPasses } from '../src/vitest.js'
import { createInProcessDriver } from './in-process-driver.js'

const DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'scenarios')
const FILES = readdirSync(DIR).filter((f) => f.endsWith('.yaml')).sort()

/** Every driver a test creates is stopped, whatever happened (the runner stops it too; stop is idempotent). */
async function withDriver<T> (fn: (driver: JobDriver) => Promise<T>): Promise<T> {
  const driver = createInProcessDriver()
  try {
    return await fn(driver)
  } finally {
    await driver.stop()
  }
}

const injectedOf = (r: ScenarioReport): unknown[] => r.injected.map((i) => ({ fault: i.fault, kind: i.kind, targets: i.targets, step: i.step }))

describe('scenario library over the in-process driver', () => {
  it('ships the elastic core scenarios and a must-fail control', () => {
    expect(FILES).toEqual(expect.arrayContaining(['worker-kill.yaml', 'worker-hang.yaml', 'worker-join.yaml', 'double-crash.yaml', 'network-delay-drop.yaml', 'partition.yaml', 'byzantine-trmean.yaml', 'no-recovery-must-fail.yaml']))
  })

  for (const file of FILES) {
    it(`${file} ends with its expected verdict`, async () => {
      const scenario = await loadScenario(join(DIR, file))
      const baseline = await withDriver(async (driver) => await runBaseline(scenario, { driver }))
      const report = await withDriver(async (driver) => await expectScenarioPasses(scenario, { driver, baseline }))
      expect(report.injected.filter((i) => i.skipped === undefined).length).toBeGreaterThan(0)
      if (scenario.expect === 'fail') {
        expect(report.reasons.join('\n')).toMatch(/finishes: job did not finish within 1500 ms/)
        expect(report.reasons.join('\n')).toMatch(/allStepsCommitted: committed \d+ of 24/)
      } else if (scenario.invariants.bitIdentical) {
        expect(report.bitIdentical).toBe(true)
      }
    })
  }

  it('is deterministic: two runs of a scenario inject the same faults at the same steps on the same targets', async () => {
    const scenario = { ...await loadScenario(join(DIR, 'double-crash.yaml')), invariants: { minRecoveries: 1, timeoutMs: 20_000 } }
    const a = await withDriver(async (driver) => await runScenario(scenario, { driver }))
    const b = await withDriver(async (driver) => await runScenario(scenario, { driver }))
    expect(a.verdict, formatReport(a)).toBe('pass')
    expect(injectedOf(a)).toEqual(injectedOf(b))
    expect(injectedOf(a)).toHaveLength(2)
    // A different seed draws different targets for the random-worker faults.
    const others = await Promise.all([19, 23, 29].map(async (seed) => await withDriver(async (driver) => await runScenario({ ...scenario, seed }, { driver }))))
    expect(others.some((r) => JSON.stringify(injectedOf(r)) !== JSON.stringify(injectedOf(a)))).toBe(true)
  })

  it('replays a recording: the same faults at the same steps on the same processes', async () => {
    const scenario = await loadScenario(join(DIR, 'worker-kill.yaml'))
    const first = await withDriver(async (driver) => await runScenario({
      ...scenario, job: { ...scenario.job, workers: 4, minWorkers: 1 }, invariants: { minRecoveries: 2, timeoutMs: 20_000 }, faults: [{ kind: 'kill', at: { everySteps: 9, count: 2 } }]
    }, { driver }))
    const replay = await withDriver(async (driver) => await replayScenario(first.recording, driver))
    expect(first.injected).toHaveLength(2)
    expect(first.verdict, formatReport(first)).toBe('pass')
    expect(injectedOf(replay)).toEqual(injectedOf(first))
    expect(replay.verdict, formatReport(replay)).toBe(first.verdict)
  })

  it('refuses a scenario with a fault the driver cannot inject', async () => {
    await withDriver(async (driver) => {
      await expect(runScenario({ name: 'disk', faults: [{ kind: 'disk', fault: 'enospc', at: { step: 1 } }] }, { driver }))
        .rejects.toMatchObject({ name: 'InvalidParametersError', message: expect.stringMatching(/cannot inject: disk/) })
    })
  })
})
