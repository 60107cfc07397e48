/**
 * Helpers of the multi-process end-to-end tests: run `phalanx launch` from the built CLI in its own
 * process group (so a test can kill everything it started at once), and the in-process reference
 * run every faulted run must reproduce bit for bit.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { resolveConfig } from '@phalanx/core'
import { referenceLinearRun, stateChecksum, type LaunchSummary } from '@phalanx/cli'

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
export const BIN = join(ROOT, 'packages', 'cli', 'bin', 'phalanx.js')

/** The job every scenario trains: long enough (~150 steps of ≥ 10 ms) for faults to land mid-run. */
export const JOB = { steps: 150, globalBatch: 64, microBatch: 8, seed: 7 }
export const JOB_FLAGS = [
  '--steps', String(JOB.steps), '--global-batch', String(JOB.globalBatch), '--micro-batch', String(JOB.microBatch), '--seed', String(JOB.seed),
  '--job', 'linear', '--job-opt', 'stepDelayMs=3', '--last-call-ms', '1500'
]

/** CRC-32C of the final state of the fault-free, single-process reference run. */
export function referenceChecksum (): number {
  const config = resolveConfig({ job: JOB })
  const model = referenceLinearRun(config)
  return stateChecksum({ tensors: [
    { name: 'linear/w', shape: [model.size], dtype: 'float32', data: model.w },
    { name: 'sgd/momentum/linear/w', shape: [model.size], dtype: 'float32', data: model.v }
  ], meta: { step: JOB.steps, epoch: 0 } })
}

/** A running `phalanx launch`. */
export interface Launched {
  proc: ChildProcess
  runDir: string
  /** Resolves with the summary once the launcher exited. */
  done: Promise<{ code: number | null, summary: LaunchSummary | undefined, stdout: string, stderr: string }>
}

/** Tracks launched process groups so afterEach can kill whatever is left. */
export function createHarness (): { launch: (args: string[]) => Launched, cleanup: () => void } {
  const groups = new Set<ChildProcess>()
  const dirs: string[] = []
  return {
    launch (args) {
      const base = mkdtempSync(join(tmpdir(), 'phalanx-e2e-'))
      dirs.push(base)
      const runDir = join(base, 'run')
      const summaryFile = join(base, 'summary.json')
      const proc = spawn(process.execPath, [BIN, 'launch', '--run-dir', runDir, '--summary-json', summaryFile, '--timeout-ms', '90000', ...args], {
        cwd: ROOT, detached: true, stdio: ['ignore', 'pipe', 'pipe']
      })
      groups.add(proc)
      let stdout = ''
      let stderr = ''
      proc.stdout?.on('data', (d: Buffer) => { stdout += d.toString() })
      proc.stderr?.on('data', (d: Buffer) => { stderr += d.toString() })
      const done = new Promise<{ code: number | null, summary: LaunchSummary | undefined, stdout: string, stderr: string }>((resolve) => {
        proc.once('exit', (code) => {
          groups.delete(proc)
          const summary = existsSync(summaryFile) ? JSON.parse(readFileSync(summaryFile, 'utf8')) as LaunchSummary : undefined
          resolve({ code, summary, stdout, stderr })
        })
      })
      return { proc, runDir, done }
    },
    cleanup () {
      for (const p of groups) {
        // The launcher's children share its process group: one signal reaches them all.
        try { process.kill(-(p.pid as number), 'SIGKILL') } catch { /* already gone */ }
      }
      groups.clear()
      for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
    }
  }
}

/** Polls the coordinator's `GET /status` (found through the run directory) until `check` passes. */
export async function waitForStatus (runDir: string, check: (status: { committed: number, epoch: number }) => boolean, timeoutMs = 30_000): Promise<{ committed: number, epoch: number }> {
  const deadline = Date.now() + timeoutMs
  const file = join(runDir, 'coordinator.status-url')
  for (let i = 0; Date.now() < deadline && i < 10_000; i++) {
    if (existsSync(file)) {
      try {
        const res = await fetch(readFileSync(file, 'utf8').trim() + '/status')
        const status = await res.json() as { committed: number, epoch: number }
        if (check(status)) return status
      } catch { /* the coordinator is not listening yet */ }
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error(`status condition not met within ${timeoutMs} ms`)
}
