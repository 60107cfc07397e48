/**
 * End-to-end on a real (single-node) Slurm cluster started by scripts/ci-services.sh:
 * `phalanx launch --slurm` submits a 3-worker linear job with `sbatch`; once it trains, one worker's
 * `srun` step is killed with `scancel --signal=KILL <job>.<step>`; the job must finish with the two
 * surviving workers' weights bit-identical to the fault-free reference.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { freePort } from '@phalanx/cli'
import { BIN, JOB, ROOT, referenceChecksum, waitForStatus } from './cli-harness.js'
import { workerResult } from './ops-harness.js'

const hasSbatch = spawnSync('sh', ['-c', 'command -v sbatch'], { encoding: 'utf8' }).status === 0

describe.skipIf(!hasSbatch)('phalanx launch --slurm (skipped: sbatch is not on PATH; run bash scripts/ci-services.sh)', () => {
  let dir: string | undefined
  let jobId: string | undefined
  let reference = 0
  beforeAll(() => { reference = referenceChecksum() })
  afterEach(() => {
    if (jobId !== undefined) spawnSync('scancel', [jobId])
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
    dir = undefined; jobId = undefined
  })

  it('runs a 3-worker job through sbatch and survives scancel --signal=KILL of one worker step', async () => {
    dir = mkdtempSync(join(tmpdir(), 'phalanx-slurm-'))
    const runDir = join(dir, 'run')
    const port = await freePort()
    const proc = spawn(process.execPath, [BIN, 'launch', '--slurm', '--workers', '3', '--run-dir', runDir, '--port', String(port),
      '--steps', String(JOB.steps), '--global-batch', String(JOB.globalBatch), '--micro-batch', String(JOB.microBatch), '--seed', String(JOB.seed),
      '--job', 'linear', '--job-opt', 'stepDelayMs=3'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    proc.stdout.on('data', (d: Buffer) => { out += d.toString() })
    proc.stderr.on('data', (d: Buffer) => { out += d.toString() })
    const exited = new Promise<number | null>((resolve) => proc.once('exit', resolve))
    await waitForStatus(runDir, (s) => s.committed >= 30, 60_000)
    jobId = /submitted slurm job (\d+)/.exec(out)?.[1]
    expect(jobId).toBeDefined()
    const steps = execFileSync('squeue', ['-s', '-j', jobId as string, '-h', '-o', '%i %j'], { encoding: 'utf8' })
    const victim = steps.split('\n').map((l) => l.trim().split(/\s+/)).find(([, name]) => name === 'worker-2')?.[0]
    expect(victim, steps).toMatch(/^\d+\.\d+$/)
    execFileSync('scancel', ['--signal=KILL', victim as string])
    expect(await exited, out).toBe(0)
    jobId = undefined
    expect(workerResult(runDir, 'worker-2')).toBeUndefined()
    expect(workerResult(runDir, 'worker-1')).toEqual({ steps: JOB.steps, checksum: reference })
    expect(workerResult(runDir, 'worker-3')).toEqual({ steps: JOB.steps, checksum: reference })
  })
})
