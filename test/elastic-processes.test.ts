/**
 * End-to-end: real coordinator and worker processes over loopback ZeroMQ, started by
 * `phalanx launch`, with crashes, hangs, joins and a coordinator restart. Every run must end with
 * final weights bit-identical to the fault-free single-process reference.
 */
import { execFileSync } from 'node:child_process'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import * as zmq from 'zeromq'
import { resolveConfig } from '@phalanx/core'
import { zmqTransport } from '@phalanx/transport/zmq'
import { freePort } from '@phalanx/cli'
import { BIN, JOB, JOB_FLAGS, createHarness, referenceChecksum, waitForStatus } from './cli-harness.js'

const harness = createHarness()
let reference = 0

beforeAll(() => { reference = referenceChecksum() })
afterEach(() => { harness.cleanup() })

function finishers (summary: { workers: Array<{ id: string, steps?: number, checksum?: number }> }): Record<string, number | undefined> {
  return Object.fromEntries(summary.workers.filter((w) => w.steps === JOB.steps).map((w) => [w.id, w.checksum]))
}

describe('phalanx launch (multi-process, loopback zmq)', () => {
  it('trains without faults to the reference weights', async () => {
    const { done } = harness.launch([...JOB_FLAGS, '--workers', '3'])
    const { code, summary, stdout } = await done
    expect(code).toBe(0)
    expect(summary?.ok).toBe(true)
    expect(summary?.committed).toBe(JOB.steps)
    expect(summary?.checksums).toEqual([reference])
    expect(Object.keys(finishers(summary!)).sort()).toEqual(['worker-1', 'worker-2', 'worker-3'])
    expect(summary?.recoveries).toEqual([])
    expect(stdout).toContain('bit-identical')
  })

  it('survives kill -9 of a worker mid-step', async () => {
    const { done } = harness.launch([...JOB_FLAGS, '--workers', '3', '--kill', 'worker-2@40'])
    const { code, summary } = await done
    expect(code).toBe(0)
    expect(summary?.checksums).toEqual([reference])
    expect(summary?.faults[0]?.firedAtStep).toBeGreaterThanOrEqual(40)
    expect(summary?.faults[0]?.nextCommitMs).toBeDefined()
    expect(summary?.recoveries.some((r) => r.peers.includes('worker-2'))).toBe(true)
    expect(summary?.workers.find((w) => w.id === 'worker-2')?.killed).toBe(true)
  })

  it('fences a hung worker (SIGSTOP), which rejoins after SIGCONT and heals', async () => {
    const { done } = harness.launch([...JOB_FLAGS, '--workers', '3', '--stop', 'worker-1@30:1200'])
    const { code, summary } = await done
    expect(code).toBe(0)
    expect(summary?.recoveries.some((r) => r.peers.includes('worker-1') && (r.reason === 'silent' || r.reason === 'hang'))).toBe(true)
    expect(summary?.heals.some((h) => h.id === 'worker-1')).toBe(true)
    // The returning worker trained to the end, on the same weights as everyone else.
    expect(finishers(summary!)['worker-1']).toBe(reference)
    expect(summary?.checksums).toEqual([reference])
  })

  it('admits a worker joining mid-run, which heals from its peers', async () => {
    const { done } = harness.launch([...JOB_FLAGS, '--workers', '2', '--join', '@20'])
    const { code, summary } = await done
    expect(code).toBe(0)
    const joined = summary?.faults[0]?.joined
    expect(joined).toBe('worker-3')
    expect(summary?.heals.some((h) => h.id === 'worker-3' && h.sources.length >= 1)).toBe(true)
    expect(finishers(summary!)['worker-3']).toBe(reference)
    expect(summary?.checksums).toEqual([reference])
  })

  it('survives two simultaneous crashes', async () => {
    const { done } = harness.launch([...JOB_FLAGS, '--workers', '4', '--kill', 'worker-2@40', '--kill', 'worker-3@40'])
    const { code, summary } = await done
    expect(code).toBe(0)
    const lost = new Set(summary?.recoveries.flatMap((r) => r.peers))
    expect(lost.has('worker-2') && lost.has('worker-3')).toBe(true)
    expect(Object.keys(finishers(summary!)).sort()).toEqual(['worker-1', 'worker-4'])
    expect(summary?.checksums).toEqual([reference])
  })

  it('restarts a kill -9ed coordinator from its WAL; workers reconnect without restarting', async () => {
    const { done } = harness.launch([...JOB_FLAGS, '--workers', '3', '--kill', 'coordinator@50'])
    const { code, summary } = await done
    expect(code).toBe(0)
    expect(summary?.faults[0]?.nextCommitMs).toBeDefined()
    // The same three worker processes (none killed, none added) trained every step.
    expect(summary?.workers.map((w) => w.id).sort()).toEqual(['worker-1', 'worker-2', 'worker-3'])
    expect(Object.keys(finishers(summary!)).sort()).toEqual(['worker-1', 'worker-2', 'worker-3'])
    expect(summary?.checksums).toEqual([reference])
  })

  it('rejects garbage frames and stale-epoch messages at the coordinator port without effect', async () => {
    const port = await freePort()
    const { runDir, done } = harness.launch([...JOB_FLAGS, '--workers', '3', '--port', String(port)])
    await waitForStatus(runDir, (s) => s.committed >= 10)
    const address = `tcp://127.0.0.1:${port}`
    // Raw garbage: not msgpack, not a header, absurd frame counts.
    const dealer = new zmq.Dealer({ routingId: 'intruder-raw', linger: 0 })
    const config = resolveConfig({ job: { id: 'phalanx' } })
    const endpoint = await zmqTransport().open({ id: 'intruder', job: config.job.id, listen: 'tcp://127.0.0.1:0' })
    try {
      dealer.connect(address)
      await dealer.send([Buffer.from('garbage')])
      await dealer.send([Buffer.from([0xc1, 0xff, 0x00]), Buffer.alloc(3)])
      await dealer.send([Buffer.alloc(0)])
      // Well-formed messages of an epoch long gone: a vote and a commit-worthy checksum.
      endpoint.connect('coordinator', address)
      for (let i = 0; i < 5; i++) await endpoint.send('coordinator', { type: 'ready', epoch: 0, step: 3, body: { checksum: 1, computeMs: 1, microBatches: 1 } })
      const status = execFileSync(process.execPath, [BIN, 'status', runDir], { encoding: 'utf8' })
      expect(status).toMatch(/members \(3\)/)
      const after = await waitForStatus(runDir, (s) => {
        const t = (s as unknown as { transport: { rejected: Record<string, number> }, staleDropped: number })
        return (t.transport.rejected.MalformedMessageError ?? 0) >= 2 && (t.transport.rejected.StaleEpochError ?? 0) >= 5
      })
      expect(after.epoch).toBeGreaterThanOrEqual(1)
    } finally {
      dealer.close()
      await endpoint.close({ lingerMs: 0 })
    }
    const { code, summary } = await done
    expect(code).toBe(0)
    expect(summary?.checksums).toEqual([reference])
    expect(summary?.recoveries).toEqual([])
    expect(summary?.coordinator?.transport.rejected.MalformedMessageError).toBeGreaterThanOrEqual(2)
    expect(summary?.coordinator?.transport.rejected.StaleEpochError).toBeGreaterThanOrEqual(5)
    const log = readFileSync(join(runDir, 'coordinator.log'), 'utf8')
    expect(log).toContain('MalformedMessageError')
  })

  it('reports bad usage with exit code 2 and a clear message', () => {
    const run = (args: string[]): { status: number | null, stderr: string } => {
      try {
        execFileSync(process.execPath, [BIN, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
        return { status: 0, stderr: '' }
      } catch (err) {
        const e = err as { status: number | null, stderr: string }
        return { status: e.status, stderr: e.stderr }
      }
    }
    expect(run(['launch', '--kill', 'worker-2'])).toMatchObject({ status: 2, stderr: expect.stringContaining('--kill worker-2: expected <id>@<step>') })
    expect(run(['launch', '--set', 'timeouts.suspectAfterMs=10'])).toMatchObject({ status: 2, stderr: expect.stringContaining('suspectAfterMs') })
    expect(run(['worker'])).toMatchObject({ status: 2, stderr: expect.stringContaining('--coordinator') })
    expect(run(['frobnicate'])).toMatchObject({ status: 2, stderr: expect.stringContaining('unknown command') })
    expect(run(['launch', '--bogus'])).toMatchObject({ status: 2, stderr: expect.stringContaining("Unknown option '--bogus'") })
  })
})
