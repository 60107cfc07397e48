/**
 * `phalanx launch` from a program: a coordinator and three worker processes over loopback ZeroMQ
 * train the built-in `linear` job; worker-2 is killed with SIGKILL at step 40, a new worker joins at
 * step 60 and heals from its peers, and the coordinator itself is killed at step 100 and restarted
 * from its write-ahead log. The final weights are checked against the single-process reference.
 * Run: `npx tsx examples/launch-linear.ts` (needs the packages built: `npm run build`).
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { resolveConfig } from '@phalanx/core'
import { launch, parseFaults, referenceLinearRun, stateChecksum } from '@phalanx/cli'

const config = resolveConfig({ job: { id: 'example', steps: 200, globalBatch: 64, microBatch: 8, seed: 11 } })
const runDir = mkdtempSync(join(tmpdir(), 'phalanx-launch-'))
const bin = join(import.meta.dirname, '..', 'packages', 'cli', 'bin', 'phalanx.js')

try {
  const summary = await launch({
    config,
    job: 'linear',
    jobOptions: { stepDelayMs: 3 },
    workers: 3,
    faults: parseFaults({ kill: ['worker-2@40', 'coordinator@100'], join: ['@60'] }),
    runDir,
    bin,
    lastCallMs: 1500
  }, {
    progress: { write: (text) => { process.stderr.write(text) }, isTTY: process.stderr.isTTY },
    summary: (text) => { process.stdout.write(text + '\n') }
  })
  const reference = referenceLinearRun(config)
  const expected = stateChecksum(await reference.state.get())
  process.stdout.write(`single-process reference crc32c ${expected.toString(16).padStart(8, '0')}: ` +
    `${summary.checksums.length === 1 && summary.checksums[0] === expected ? 'identical' : 'DIFFERENT'}\n`)
  process.exitCode = summary.ok ? 0 : 1
} finally {
  rmSync(runDir, { recursive: true, force: true })
}
