/**
 * Vitest helpers: run a scenario and fail the test with the report's reasons when its verdict is
 * not the expected one. Imported from `@phalanx/chaos/vitest` so the main entry never loads vitest.
 *
 * @module
 */
import { expect } from 'vitest'
import { formatReport, runScenario, type RunScenarioOptions, type ScenarioReport } from './runner.js'
import { parseScenario, type Scenario, type ScenarioInput } from './scenario.js'

/**
 * Runs `scenario` and asserts its verdict is what the scenario's `expect` says (`pass` unless it
 * is a control scenario). Returns the report for further assertions.
 *
 * @example
 * ```ts
 * it('survives a worker kill', async () => {
 *   const report = await expectScenarioPasses(await loadScenario('scenarios/worker-kill.yaml'), { driver })
 *   expect(report.mttr.count).toBeGreaterThan(0)
 * })
 * ```
 */
export async function expectScenarioPasses (scenario: Scenario | ScenarioInput, options: RunScenarioOptions): Promise<ScenarioReport> {
  const s = parseScenario(scenario)
  const report = await runScenario(s, options)
  expect(report.verdict, formatReport(report)).toBe(s.expect)
  return report
}
