/**
 * End-to-end: `phalanx launch --snapshots` starts a snapshot holder process; a worker killed with
 * SIGKILL and restarted with the same id restores its state from the holder (instead of healing
 * from its peer) and the run still ends bit-identical to the single-process reference.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createHolderClient } from '@phalanx/checkpoint'
import { freePort } from '@phalanx/cli'
import { zmqTransport } from '@phalanx/transport/zmq'
import { BIN, JOB, JOB_FLAGS, ROOT, createHarness, referenceChecksum, waitForStatus } from './cli-harness.js'

const harness = createHarness()
const started: ChildProcess[] = []
let reference = 0

beforeAll(() => { reference = referenceChecksum() })
afterEach(() => {
  for (const p of started.splice(0)) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL')
  harness.cleanup()
})

/** The pid of a launched process, from the first line of its JSON log. */
function pidOf (log: string): number {
  const first = readFileSync(log, 'utf8').split('\n')[0] as string
  return (JSON.parse(first) as { pid: number }).pid
}

describe('snapshot holder (multi-process)', () => {
  it('a worker killed with -9 and restarted with the same id restores from the holder; weights stay bit-identical', async () => {
    const port = await freePort()
    // worker-1 is stopped at step 30 for 3 s: the job stalls, worker-2 waits at its step boundary
    // with that state snapshotted in the holder, and is killed there by this test.
    const { runDir, done } = harness.launch([...JOB_FLAGS, '--workers', '2', '--min-workers', '2', '--snapshots', '--port', String(port), '--stop', 'worker-1@30:3000'])
    const holderAddress = `ipc://${join(runDir, 'holder.sock')}`
    const probe = await zmqTransport().open({ id: 'e2e-probe', job: 'phalanx', listen: 'tcp://127.0.0.1:0' })
    try {
      const client = createHolderClient({ owner: 'worker-2', address: holderAddress, requestTimeoutMs: 2000 }, { endpoint: probe })
      const stalled = await waitForStatus(runDir, (s) => s.committed >= 30)
      // Wait (bounded) until the holder has worker-2's snapshot of the step the job is stalled at.
      let held: number | undefined
      for (let i = 0; i < 100 && held !== stalled.committed; i++) {
        const now = await waitForStatus(runDir, () => true)
        held = (await client.latest())?.step
        if (held !== now.committed) await new Promise((resolve) => setTimeout(resolve, 20))
        stalled.committed = now.committed
      }
      expect(held).toBe(stalled.committed)
      process.kill(pidOf(join(runDir, 'worker-2.log')), 'SIGKILL')
    } finally {
      await probe.close({ lingerMs: 0 })
    }
    const out = join(runDir, 'worker-2-restarted.result.json')
    const again = spawn(process.execPath, [BIN, 'worker', '--config', join(runDir, 'config.json'), '--coordinator', `tcp://127.0.0.1:${port}`, '--id', 'worker-2', '--job', 'linear', '--job-opt', 'stepDelayMs=3', '--out', out, '--log-file', join(runDir, 'worker-2-restarted.log')], {
      cwd: ROOT, stdio: 'ignore', env: { ...process.env, PHALANX_HOLDER: holderAddress }
    })
    started.push(again)
    const exited = new Promise<number | null>((resolve) => { again.once('exit', resolve) })
    const { summary } = await done
    expect(await exited).toBe(0)
    expect(summary?.committed).toBe(JOB.steps)
    expect(summary?.workers.find((w) => w.id === 'worker-1')?.checksum).toBe(reference)
    expect(existsSync(out)).toBe(true)
    expect((JSON.parse(readFileSync(out, 'utf8')) as { checksum: number }).checksum).toBe(reference)
    const log = readFileSync(join(runDir, 'worker-2-restarted.log'), 'utf8')
    expect(log).toContain('restored from the local snapshot')
    expect(log).not.toContain('healed from peers')
    // Well under a second (17 ms measured for the linear job on 2 shared cores).
    const restored = log.split('\n').filter((l) => l.includes('restored from the local snapshot')).map((l) => JSON.parse(l) as { ms: number })
    expect(restored[0]?.ms).toBeLessThan(1000)
  })
})
