import { createEpochFence, createFakeClock, ElasticMessage, ELASTIC_FENCE_EXEMPT, type Endpoint } from '@phalanx/core'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { afterEach, describe, expect, it } from 'vitest'
import { createCoordinator, type Coordinator } from '../src/index.js'

const opened: Array<{ close: () => Promise<void> }> = []
afterEach(async () => { for (const o of opened.splice(0).reverse()) await o.close() })

async function setup (): Promise<{ clock: ReturnType<typeof createFakeClock>, coordinator: Coordinator, workers: Endpoint[] }> {
  const clock = createFakeClock(0)
  const transport = memoryTransport({ network: createMemoryNetwork() })
  const fence = createEpochFence({ exempt: ELASTIC_FENCE_EXEMPT })
  const endpoint = await transport.open({ id: 'coordinator', job: 't', fence })
  opened.push(endpoint)
  const coordinator = createCoordinator({
    jobId: 't', minWorkers: 2, maxWorkers: 3, globalBatch: 8, microBatch: 2, steps: 10, deterministic: true,
    heartbeatIntervalMs: 100, suspectAfterMs: 500, stepTimeoutMs: 60_000, rendezvousTimeoutMs: 60_000, rebalanceEvery: 0
  }, { endpoint, clock, fence })
  opened.push({ close: async () => { await coordinator.stop() } })
  await coordinator.start()
  const workers: Endpoint[] = []
  for (const id of ['w1', 'w2', 'w3']) {
    const member = id !== 'w3'
    const w = await transport.open({ id, job: 't' })
    opened.push(w)
    w.connect('coordinator', 'coordinator')
    w.handle(ElasticMessage.quorum, () => undefined)
    w.handle(ElasticMessage.commit, () => undefined)
    workers.push(w)
    if (member) {
      const reply = await w.request('coordinator', { type: ElasticMessage.join, body: { id, address: id, incarnation: `${id}-1`, size: 6, committed: 0 } })
      expect(reply.header.body).toMatchObject({ role: id === 'w1' ? 'pending' : 'member' })
    }
  }
  return { clock, coordinator, workers }
}

const beat = async (w: Endpoint, epoch: number): Promise<unknown> =>
  (await w.request('coordinator', { type: ElasticMessage.heartbeat, body: { incarnation: `${w.id}-1`, epoch, step: 0, committed: 0, phase: 'compute' } })).header.body

describe('coordinator', () => {
  it('rendezvous waits for minWorkers, then later joiners are admitted at the next step boundary', async () => {
    const { coordinator, workers } = await setup()
    const st = coordinator.status()
    expect(st.phase).toBe('running')
    expect(st.members.map((m) => [m.id, m.rank])).toEqual([['w1', 0], ['w2', 1]])
    expect(st.members.reduce((a, m) => a + m.microBatches, 0)).toBe(4)
    const w3 = workers[2]!
    const reply = await w3.request('coordinator', { type: ElasticMessage.join, body: { id: 'w3', address: 'w3', incarnation: 'w3-1', size: 6, committed: 0 } })
    expect(reply.header.body).toMatchObject({ role: 'pending' })
    expect(coordinator.status().waiting).toEqual(['w3'])
    const quorum = new Promise((resolve) => { coordinator.on('quorum', resolve) })
    for (const w of workers.slice(0, 2)) await w.send('coordinator', { type: ElasticMessage.ready, epoch: st.epoch, step: 0, body: { checksum: 7, computeMs: 5, microBatches: 2 } })
    await expect(quorum).resolves.toMatchObject({ reason: 'join', epoch: st.epoch + 1, step: 1, members: ['w1', 'w2', 'w3'] })
  })

  it('evicts a member whose heartbeats stop and bumps the epoch (fake clock)', async () => {
    const { clock, coordinator, workers } = await setup()
    const epoch = coordinator.status().epoch
    const suspected = new Promise((resolve) => { coordinator.on('suspect', resolve) })
    for (let t = 0; t < 6; t++) {
      await beat(workers[0]!, epoch)
      clock.advance(100)
    }
    await expect(suspected).resolves.toMatchObject({ peers: ['w2'], reason: 'silent' })
    expect(coordinator.status().epoch).toBe(epoch + 1)
    // One member left is below minWorkers: the quorum goes inactive until someone joins.
    expect(coordinator.status()).toMatchObject({ phase: 'rendezvous', members: [{ id: 'w1' }] })
    await expect(beat(workers[1]!, epoch)).resolves.toMatchObject({ known: false })
  })

  it('stale-epoch votes and garbage messages change nothing', async () => {
    const { coordinator, workers } = await setup()
    const before = coordinator.status()
    const w = workers[0]!
    const w3 = workers[2]!
    await w3.request('coordinator', { type: ElasticMessage.join, body: { id: 'w3', address: 'w3', incarnation: 'w3-1', size: 6, committed: 0 } })
    await coordinator.evict('w2')
    const after = coordinator.status()
    expect(after.members.map((m) => m.id)).toEqual(['w1', 'w3'])
    expect(after.epoch).toBe(before.epoch + 1)
    // Votes from the old epoch are fenced off; votes of all members at the old epoch would otherwise commit.
    for (const x of [workers[0]!, w3]) await x.send('coordinator', { type: ElasticMessage.ready, epoch: before.epoch, step: 0, body: { checksum: 1, computeMs: 1, microBatches: 1 } })
    await expect(w.request('coordinator', { type: ElasticMessage.join, body: { nonsense: true } })).rejects.toMatchObject({ name: 'MalformedMessageError' })
    await expect(w.request('coordinator', { type: ElasticMessage.heartbeat, body: 'garbage' })).rejects.toMatchObject({ name: 'MalformedMessageError' })
    await w.send('coordinator', { type: ElasticMessage.ready, epoch: after.epoch, step: 0, body: { checksum: -5 } })
    await beat(w, after.epoch)
    expect(coordinator.status()).toMatchObject({ epoch: after.epoch, committed: 0 })
    expect(await coordinator.metricsText()).toMatch(/phalanx_coordinator_stale_messages [1-9]/)
  })

  it('commits only when every member voted the same checksum', async () => {
    const { coordinator, workers } = await setup()
    const { epoch } = coordinator.status()
    const committed = new Promise((resolve) => { coordinator.on('commit', resolve) })
    for (const w of workers.slice(0, 2)) await w.send('coordinator', { type: ElasticMessage.ready, epoch, step: 0, body: { checksum: 42, computeMs: 5, microBatches: 1 } })
    await expect(committed).resolves.toMatchObject({ step: 0, epoch, cursor: 8 })
    const quorum = new Promise((resolve) => { coordinator.on('quorum', resolve) })
    for (const [i, w] of workers.slice(0, 2).entries()) await w.send('coordinator', { type: ElasticMessage.ready, epoch, step: 1, body: { checksum: i, computeMs: 5, microBatches: 1 } })
    await expect(quorum).resolves.toMatchObject({ reason: 'checksum-mismatch', epoch: epoch + 1 })
    expect(coordinator.status().committed).toBe(1)
  })
})
