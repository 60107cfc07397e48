/**
 * Starts a snapshot holder as its own process (bench/lib/holder-process.ts), as `phalanx launch`
 * runs it: slots in a fresh tmpfs directory (the holder's default medium, so snapshots cost RAM
 * bandwidth, not disk), reached over ZeroMQ ipc. Shared by the benchmarks that snapshot to a holder.
 */
import { fork } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** A running holder process. */
export interface HolderProcess {
  /** Its ipc address, for `createHolderClient({ address })`. */
  readonly address: string
  /** Stops the process (SIGTERM, waits for the exit) and removes its slot directory. Idempotent. */
  stop(): Promise<void>
}

/** Starts a holder process for `job`; resolves once it listens. */
export async function startHolderProcess (job: string): Promise<HolderProcess> {
  const dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), `phalanx-bench-holder-${job}-`))
  const child = fork(join(dirname(fileURLToPath(import.meta.url)), 'holder-process.ts'), [job, dir], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => { child.once('exit', resolve) })
      child.kill('SIGTERM')
      await exited
    }
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    const address = await new Promise<string>((resolve, reject) => {
      child.once('message', (m) => { resolve((m as { address: string }).address) })
      child.once('exit', (code) => { reject(new Error(`holder exited with ${code}`)) })
    })
    return { address, stop }
  } catch (err) {
    await stop()
    throw err
  }
}
