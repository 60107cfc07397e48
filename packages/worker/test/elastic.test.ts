import { ElasticMessage, stateDictsBitEqual, type Endpoint } from '@phalanx/core'
import { createWalStateStore } from '@phalanx/coordinator'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { createTestCluster, JOB, type Node, type TestCluster } from './helpers.js'

let cluster: TestCluster | undefined
const dirs: string[] = []
afterEach(async () => {
  await cluster?.close()
  cluster = undefined
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
})

async function expectBitIdentical (c: TestCluster, nodes: readonly Node[]): Promise<void> {
  await expect(c.coordinator.finished()).resolves.toMatchObject({ committed: JOB.steps })
  await Promise.all(nodes.map(async (n) => await n.loop))
  const ref = c.reference()
  for (const n of nodes) expect(stateDictsBitEqual(n.trainer.state(), ref.state())).toBe(true)
}

/** Resolves once the coordinator committed `step` steps. */
async function committedAt (c: TestCluster, step: number): Promise<void> {
  if (c.coordinator.status().committed >= step) return
  await new Promise<void>((resolve) => {
    const off = c.coordinator.on('commit', (e) => { if (e.step + 1 >= step) { off(); resolve() } })
  })
}

describe('elastic training (memory transport)', () => {
  it('fault-free run with 3 workers is bit-identical to the single-process reference', async () => {
    cluster = await createTestCluster({ minWorkers: 3 })
    const nodes = await Promise.all(['w1', 'w2', 'w3'].map(async (id) => await cluster!.addWorker(id)))
    await expectBitIdentical(cluster, nodes)
    for (const n of nodes) await expect(n.loop).resolves.toMatchObject({ committed: JOB.steps })
  })

  it('a worker crashing mid-step aborts the step everywhere; it is retried and the run stays bit-identical', async () => {
    cluster = await createTestCluster({ minWorkers: 2 })
    const c = cluster
    let crashed = false
    const w1 = await c.addWorker('w1')
    const w2 = await c.addWorker('w2')
    await c.addWorker('w3', {
      beforeReduce: async (step) => {
        if (step.step === 8 && !crashed) { crashed = true; void c.crash('w3') ; await new Promise<never>(() => {}) }
      }
    })
    const recovery = new Promise((resolve) => { c.coordinator.on('recovery', resolve) })
    await expectBitIdentical(c, [w1, w2])
    await expect(recovery).resolves.toMatchObject({ peers: ['w3'] })
    expect(c.coordinator.recoveries()[0]?.firstCommitMs).toBeGreaterThanOrEqual(0)
    expect(await c.coordinator.metricsText()).toMatch(/phalanx_coordinator_recoveries_total 1/)
  })

  it('two simultaneous crashes: survivors finish bit-identical', async () => {
    cluster = await createTestCluster({ minWorkers: 1 })
    const c = cluster
    const w1 = await c.addWorker('w1')
    const w2 = await c.addWorker('w2')
    await c.addWorker('w3')
    await c.addWorker('w4')
    await committedAt(c, 5)
    await Promise.all([c.crash('w3'), c.crash('w4')])
    await expectBitIdentical(c, [w1, w2])
    expect(c.coordinator.status().members.map((m) => m.id)).toEqual(['w1', 'w2'])
  })

  it('a hung worker (stalled step, heartbeats alive) is fenced by the step-time detector and rejoins later with healing', async () => {
    cluster = await createTestCluster({ minWorkers: 2, hangFloorMs: 300 })
    const c = cluster
    let stalled = false
    const w1 = await c.addWorker('w1')
    const w2 = await c.addWorker('w2')
    const heals: unknown[] = []
    const w3 = await c.addWorker('w3', {
      beforeReduce: async (step) => {
        if (step.step === 6 && !stalled) {
          stalled = true
          // Stuck until the cluster has fenced it off (its step is aborted by the epoch change).
          await new Promise<void>((resolve) => { step.signal.addEventListener('abort', () => { resolve() }, { once: true }) })
        }
      }
    })
    w3.worker.on('heal', (e) => heals.push(e))
    const suspect = new Promise((resolve) => { c.coordinator.on('suspect', resolve) })
    await expect(suspect).resolves.toMatchObject({ peers: ['w3'], reason: 'hang' })
    await expectBitIdentical(c, [w1, w2, w3])
    expect(heals.length).toBeGreaterThanOrEqual(1)
  })

  it('a worker joining mid-run heals from several peers and ends bit-identical', async () => {
    cluster = await createTestCluster({ minWorkers: 2 })
    const c = cluster
    const w1 = await c.addWorker('w1')
    const w2 = await c.addWorker('w2')
    await committedAt(c, 10)
    const w3 = await c.addWorker('w3')
    const heal = new Promise<{ sources: string[], chunks: number }>((resolve) => { w3.worker.on('heal', resolve) })
    await expect(heal).resolves.toMatchObject({ sources: ['w1', 'w2'] })
    await expectBitIdentical(c, [w1, w2, w3])
  })

  it('a corrupted heal chunk is detected by CRC32C and re-fetched from another peer', async () => {
    cluster = await createTestCluster({ minWorkers: 2 })
    const c = cluster
    let corrupted = 0
    // w1 corrupts every heal chunk it serves.
    const corrupt = (e: Endpoint): Endpoint => new Proxy(e, {
      get (target, prop, receiver) {
        if (prop === 'handle') {
          return (type: string, handler: Parameters<Endpoint['handle']>[1]) => target.handle(type, async (env, opts) => {
            const out = await handler(env, opts)
            if (type !== ElasticMessage.healChunk || out == null) return out
            corrupted++
            const tensors = (out.tensors ?? []).map((t) => { const d = t.data.slice(); d[0] = (d[0] ?? 0) + 1; return { ...t, data: d } })
            return { ...out, tensors }
          })
        }
        const v = Reflect.get(target, prop, receiver) as unknown
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
      }
    })
    const w1 = await c.addWorker('w1', { wrap: corrupt })
    const w2 = await c.addWorker('w2')
    await committedAt(c, 5)
    const w3 = await c.addWorker('w3')
    const heal = new Promise<{ refetched: number }>((resolve) => { w3.worker.on('heal', resolve) })
    const h = await heal
    expect(corrupted).toBeGreaterThan(0)
    expect(h.refetched).toBe(corrupted)
    await expectBitIdentical(c, [w1, w2, w3])
  })

  it('a coordinator restarted from its WAL resumes the job without losing a committed step', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'phalanx-wal-'))
    dirs.push(dir)
    cluster = await createTestCluster({ minWorkers: 2, store: () => createWalStateStore({ path: join(dir, 'wal.log') }) })
    const c = cluster
    const w1 = await c.addWorker('w1')
    const w2 = await c.addWorker('w2')
    await committedAt(c, 12)
    const before = c.coordinator.status().committed
    await c.restartCoordinator()
    expect(c.coordinator.status().committed).toBeGreaterThanOrEqual(before)
    await expectBitIdentical(c, [w1, w2])
  })
})
