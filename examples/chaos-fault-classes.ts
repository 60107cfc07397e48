/**
 * Fault classes on real processes: shipped scenarios of `packages/chaos/scenarios/process/` run by
 * `phalanx chaos`'s launch driver, each after its fault-free baseline. By default
 * `process-state-loss` (every worker killed at once; they restore the committed step from the
 * per-host snapshot holder) and `process-byzantine` (a worker sends Gaussian noise; a trimmed mean
 * contains it). Name others to run them instead: `process-disk`, `process-clock-skew`,
 * `process-label-flip`, `process-byzantine-mean-must-fail`, ...
 * Needs a build (`npx tsc -b`): the children run `packages/cli/bin/phalanx.js`.
 *
 *   npx tsx examples/chaos-fault-classes.ts [scenario ...]
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { formatReport, loadScenario } from '@phalanx/chaos'
import { runChaosScenario } from '@phalanx/cli'

const names = process.argv.length > 2 ? process.argv.slice(2) : ['process-state-loss', 'process-byzantine']
const runDir = mkdtempSync(join(tmpdir(), 'phalanx-chaos-classes-'))
let failed = 0
try {
  for (const name of names) {
    const scenario = await loadScenario(fileURLToPath(new URL(`../packages/chaos/scenarios/process/${name}.yaml`, import.meta.url)))
    const report = await runChaosScenario({
      scenario,
      runDir: join(runDir, name),
      bin: fileURLToPath(new URL('../packages/cli/bin/phalanx.js', import.meta.url)),
      progress: (line) => { process.stderr.write(line + '\n') }
    })
    console.log(formatReport(report))
    // A control scenario passes when it fails as it is meant to.
    if (report.verdict !== report.expected) failed++
  }
  process.exitCode = failed === 0 ? 0 : 1
} finally {
  rmSync(runDir, { recursive: true, force: true })
}
