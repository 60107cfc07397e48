/**
 * End-to-end chaos on real processes: `@phalanx/chaos` scenarios run by the launch driver of
 * `@phalanx/cli` (coordinator + workers over loopback ZeroMQ, faults through signals and the
 * children's chaos agents). A short mixed soak passes, the must-fail control fails with a clear
 * report (through the `phalanx chaos run` binary), and the same seed gives the same fault schedule.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadScenario, runBaseline, type JobOutcome, type Scenario, type ScenarioReport } from '@phalanx/chaos'
import { createLaunchDriver, runChaosScenario, type ChaosRunReport } from '@phalanx/cli'
import { BIN, ROOT } from './cli-harness.js'

const SCENARIOS = join(ROOT, 'packages', 'chaos', 'scenarios', 'process')
const base = mkdtempSync(join(tmpdir(), 'phalanx-chaos-e2e-'))
let mixed: Scenario
let baseline: JobOutcome
let first: ChaosRunReport | undefined

const schedule = (r: ScenarioReport): unknown[] => r.injected.map((i) => ({ fault: i.fault, kind: i.kind, targets: i.targets, trigger: i.trigger, skipped: i.skipped }))

beforeAll(async () => {
  mixed = await loadScenario(join(SCENARIOS, 'process-mixed.yaml'))
  const driver = createLaunchDriver({ bin: BIN, runDir: join(base, 'baseline'), seed: mixed.seed })
  try {
    baseline = await runBaseline(mixed, { driver, signal: AbortSignal.timeout(60_000) })
  } finally {
    await driver.stop()
  }
}, 70_000)

afterAll(() => { rmSync(base, { recursive: true, force: true }) })

describe('phalanx chaos on real processes', () => {
  it('a short mixed soak (kill + restart, hang, crash, join, stall, lossy network) passes', async () => {
    const report = await runChaosScenario({ scenario: mixed, runDir: join(base, 'mixed-1'), bin: BIN, baselineOutcome: baseline })
    first = report
    expect(report.reasons).toEqual([])
    expect(report.verdict).toBe('pass')
    expect(report.committed).toBe(mixed.job.steps)
    expect(report.bitIdentical).toBe(true)
    expect(report.leaks).toEqual([])
    expect(report.recoveries.length).toBeGreaterThanOrEqual(3)
    expect(new Set(report.injected.filter((i) => i.skipped === undefined).map((i) => i.kind))).toEqual(new Set(['kill', 'hang', 'crash', 'join', 'stall', 'network']))
    for (const k of ['process:kill', 'process:restart', 'process:hang', 'process:crash', 'process:join', 'process:stall', 'network:network-start']) expect(report.faultsByClass[k]).toBeGreaterThan(0)
  })

  it('two runs with the same seed inject the same faults at the same steps on the same processes', async () => {
    expect(first).toBeDefined()
    const again = await runChaosScenario({ scenario: mixed, runDir: join(base, 'mixed-2'), bin: BIN, baselineOutcome: baseline })
    expect(again.verdict).toBe('pass')
    expect(schedule(again)).toEqual(schedule(first as ChaosRunReport))
    expect(again.recording.actions.map((a) => ({ fault: a.fault, targets: a.targets }))).toEqual((first as ChaosRunReport).recording.actions.map((a) => ({ fault: a.fault, targets: a.targets })))
  })

  it('the no-recovery control fails with a clear report and exit code 1 (phalanx chaos run)', async () => {
    const reportFile = join(base, 'must-fail.json')
    const proc = spawn(process.execPath, [BIN, 'chaos', 'run', join(SCENARIOS, 'process-no-recovery-must-fail.yaml'), '--no-baseline', '--report', reportFile, '--run-dir', join(base, 'must-fail')], {
      cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe']
    })
    let stdout = ''
    proc.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
    const code = await new Promise<number | null>((resolve) => { proc.once('exit', (c) => { resolve(c) }) })
    expect(code).toBe(1)
    expect(stdout).toContain('FAIL (expected to fail)')
    expect(stdout).toMatch(/FAIL finishes: job did not finish within 20000 ms \(committed \d+ of 100\)/)
    const report = JSON.parse(readFileSync(reportFile, 'utf8')) as ChaosRunReport
    expect(report.verdict).toBe('fail')
    expect(report.expected).toBe('fail')
    expect(report.injected.filter((i) => i.kind === 'kill' && i.skipped === undefined)).toHaveLength(1)
    expect(report.committed).toBeGreaterThanOrEqual(10)
    expect(report.committed).toBeLessThan(100)
    expect(report.leaks).toEqual([])
  })
})
