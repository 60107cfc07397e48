/**
 * Chaos on real processes: the `process-mixed` scenario (kill + restart, SIGSTOP hang, crash from
 * inside, join, event-loop stall, lossy network) run by `phalanx chaos`'s launch driver on a
 * coordinator and 4 worker processes over loopback ZeroMQ, after its fault-free baseline.
 * Needs a build (`npx tsc -b`): the children run `packages/cli/bin/phalanx.js`.
 *
 *   npx tsx examples/chaos-processes.ts
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { formatReport, loadScenario } from '@phalanx/chaos'
import { runChaosScenario } from '@phalanx/cli'

const scenario = await loadScenario(fileURLToPath(new URL('../packages/chaos/scenarios/process/process-mixed.yaml', import.meta.url)))
const runDir = mkdtempSync(join(tmpdir(), 'phalanx-chaos-example-'))
try {
  const report = await runChaosScenario({
    scenario,
    runDir,
    bin: fileURLToPath(new URL('../packages/cli/bin/phalanx.js', import.meta.url)),
    progress: (line) => { process.stderr.write(line + '\n') }
  })
  console.log(formatReport(report))
  for (const r of report.recoveries) console.log(`  recovery ${r.reason} ${r.peers.join(',')}: detect ${r.detectMs.toFixed(0)} ms, quorum ${r.quorumMs.toFixed(0)} ms, first commit ${r.firstCommitMs.toFixed(0)} ms`)
  process.exitCode = report.verdict === 'pass' ? 0 : 1
} finally {
  rmSync(runDir, { recursive: true, force: true })
}
