import { ReplicaMessage, createFakeClock, replicaViewBodySchema, type Endpoint, type FakeClock, type ReplicaHeartbeatReply, type ReplicaViewBody } from '@phalanx/core'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { afterEach, describe, expect, it } from 'vitest'
import { createReplicaMembership, type ReplicaChange, type ReplicaMembership, type ReplicaMembershipInit } from '../src/index.js'

const cleanup: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c()
})

interface Replica {
  ep: Endpoint
  incarnation: string
  /** Views received as `replica-view` messages. */
  views: ReplicaViewBody[]
  beat: (round: number, view: number, extra?: Record<string, unknown>) => Promise<ReplicaHeartbeatReply>
}

interface Harness {
  clock: FakeClock
  membership: ReplicaMembership
  replicas: Map<string, Replica>
  open: (id: string, incarnation?: string) => Promise<Replica>
  /** Resolves with the next published view. */
  nextView: () => Promise<ReplicaChange>
}

async function setup (init: ReplicaMembershipInit): Promise<Harness> {
  const clock = createFakeClock(1_000)
  const transport = memoryTransport({ network: createMemoryNetwork() })
  const coord = await transport.open({ id: 'coord', job: 'j' })
  cleanup.push(async () => { await coord.close() })
  const membership = createReplicaMembership(init, { endpoint: coord, clock })
  await membership.start()
  cleanup.push(async () => { await membership.stop() })
  const replicas = new Map<string, Replica>()
  const open = async (id: string, incarnation = `${id}-1`): Promise<Replica> => {
    const ep = await transport.open({ id, job: 'j', listen: `${id}-${incarnation}` })
    cleanup.push(async () => { await ep.close() })
    ep.connect('coord', 'coord')
    const views: ReplicaViewBody[] = []
    ep.handle(ReplicaMessage.view, (env) => { views.push(replicaViewBodySchema.parse(env.header.body)) })
    const replica: Replica = {
      ep,
      incarnation,
      views,
      beat: async (round, view, extra = {}) => {
        const reply = await ep.request('coord', { type: ReplicaMessage.heartbeat, body: { id, address: ep.address, incarnation, round, view, ...extra } })
        return reply.header.body as ReplicaHeartbeatReply
      }
    }
    replicas.set(id, replica)
    return replica
  }
  const nextView = async (): Promise<ReplicaChange> => await new Promise((resolve) => {
    const off = membership.on('view', (c) => { off(); resolve(c) })
  })
  return { clock, membership, replicas, open, nextView }
}

/** Four replicas through the rendezvous (view 1 from round 0), then a heartbeat each at `rounds` after 500 ms. */
async function rendezvous (h: Harness, rounds: number[]): Promise<Replica[]> {
  const rs = await Promise.all(['r0', 'r1', 'r2', 'r3'].map(async (id) => await h.open(id)))
  for (const r of rs.slice(0, 3)) expect(await r.beat(0, 0)).toEqual({ member: true, version: 0 })
  expect(h.membership.view()).toBeUndefined()
  const first = h.nextView()
  // The fourth joiner completes the rendezvous; its reply carries the view at once.
  const reply = await (rs[3] as Replica).beat(0, 0)
  const { view } = await first
  expect(view).toEqual({ version: 1, round: 0, members: rs.map((r) => ({ id: r.ep.id, address: r.ep.address })) })
  expect(reply).toEqual({ member: true, version: 1, view })
  h.clock.advance(500)
  for (const [i, r] of rs.entries()) expect(await r.beat(rounds[i] as number, 1)).toEqual({ member: true, version: 1 })
  // Every member got view 1 as a message too.
  for (const r of rs) expect(r.views.map((v) => v.version)).toEqual([1])
  return rs
}

describe('replica membership (coordinator side)', () => {
  it('publishes the survivors when a replica disconnects, from a round past every member\'s predicted round', async () => {
    const h = await setup({ minReplicas: 4, leadRounds: 2, suspectAfterMs: 1000 })
    const rs = await rendezvous(h, [5, 7, 5, 5])
    expect(h.membership.highestRound()).toBe(7)
    // 150 ms later r1 (7 rounds in 500 ms, ~71 ms a round) is predicted in round 9: the view starts at 11.
    h.clock.advance(150)
    const next = h.nextView()
    await (rs[2] as Replica).ep.close()
    const { view, kinds } = await next
    expect(kinds).toEqual([{ kind: 'lost', id: 'r2', reason: 'disconnect' }])
    expect(view).toMatchObject({ version: 2, round: 11 })
    expect(view.members.map((m) => m.id)).toEqual(['r0', 'r1', 'r3'])
    expect(h.membership.metrics()).toMatchObject({ views: 2, joins: 4, losses: 1, sendFailures: 0 })
    // Delivered to the survivors as a message (fire-and-forget: wait for the arrival).
    await expect.poll(() => (rs[0] as Replica).views.map((v) => v.version), { interval: 1, timeout: 2000 }).toEqual([1, 2])
    // A survivor still holding view 1 gets view 2 in its heartbeat reply.
    expect(await (rs[3] as Replica).beat(8, 1)).toEqual({ member: true, version: 2, view })
  })

  it('loses a silent replica through the failure detector on the injected clock', async () => {
    const h = await setup({ minReplicas: 4, suspectAfterMs: 1000, checkIntervalMs: 100, leadRounds: 3 })
    const rs = await rendezvous(h, [5, 5, 5, 5])
    const next = h.nextView()
    let published = false
    void next.then(() => { published = true })
    // r3 goes quiet; the others heartbeat every 200 ms (one round each time).
    for (let k = 1; k <= 4; k++) {
      h.clock.advance(200)
      for (const r of rs.slice(0, 3)) await r.beat(5 + k, 1)
    }
    expect(published).toBe(false)
    h.clock.advance(200)
    const { view, kinds } = await next
    expect(kinds).toEqual([{ kind: 'lost', id: 'r3', reason: 'silence' }])
    // Furthest reported round 9, heard 200 ms ago at 200 ms a round -> predicted 10, plus 3.
    expect(view).toMatchObject({ version: 2, round: 13 })
    expect(view.members.map((m) => m.id)).toEqual(['r0', 'r1', 'r2'])
  })

  it('publishes a view with a joiner; the joiner\'s reply carries it; a graceful leave publishes another', async () => {
    const h = await setup({ minReplicas: 4, leadRounds: 2 })
    await rendezvous(h, [4, 4, 4, 4])
    const joiner = await h.open('r9')
    const next = h.nextView()
    const reply = await joiner.beat(0, 0)
    const { view, kinds } = await next
    expect(kinds).toEqual([{ kind: 'join', id: 'r9' }])
    expect(view).toMatchObject({ version: 2, round: 6 })
    expect(view.members.map((m) => m.id)).toEqual(['r0', 'r1', 'r2', 'r3', 'r9'])
    expect(reply).toEqual({ member: true, version: 2, view })
    const leave = h.nextView()
    await joiner.ep.send('coord', { type: ReplicaMessage.leave, body: { id: 'r9', incarnation: joiner.incarnation } })
    const left = await leave
    expect(left.kinds).toEqual([{ kind: 'left', id: 'r9', reason: 'leave' }])
    expect(left.view.members.map((m) => m.id)).toEqual(['r0', 'r1', 'r2', 'r3'])
    expect(h.membership.metrics()).toMatchObject({ joins: 5, leaves: 1, views: 3 })
  })

  it('refuses stale and malformed heartbeats with typed errors and keeps working', async () => {
    const h = await setup({ minReplicas: 2, leadRounds: 2 })
    const a = await h.open('a')
    const b = await h.open('b')
    await a.beat(0, 0)
    await b.beat(0, 0)
    h.clock.advance(100)
    await a.beat(6, 1)
    // Reordered heartbeat of the same incarnation reporting an older round.
    await expect(a.beat(5, 1)).rejects.toMatchObject({ name: 'StaleEpochError' })
    // Malformed bodies: a missing field, an unknown key, a negative round, not an object at all.
    await expect(a.ep.request('coord', { type: ReplicaMessage.heartbeat, body: { id: 'a', round: 1 } })).rejects.toMatchObject({ name: 'MalformedMessageError' })
    await expect(a.beat(7, 1, { extra: 1 })).rejects.toMatchObject({ name: 'MalformedMessageError' })
    await expect(a.beat(-1, 1)).rejects.toMatchObject({ name: 'MalformedMessageError' })
    await expect(a.ep.request('coord', { type: ReplicaMessage.heartbeat, body: 'hello' })).rejects.toMatchObject({ name: 'MalformedMessageError' })
    // A heartbeat naming another replica than its sender.
    await expect(a.beat(7, 1, { id: 'b' })).rejects.toMatchObject({ name: 'InvalidParametersError' })
    // A leave from an incarnation that is not the member's.
    await a.ep.send('coord', { type: ReplicaMessage.leave, body: { id: 'a', incarnation: 'someone-else' } })
    await expect.poll(() => h.membership.metrics().rejected.StaleEpochError, { interval: 1, timeout: 2000 }).toBe(2)
    expect(h.membership.metrics().rejected).toEqual({ StaleEpochError: 2, MalformedMessageError: 4, InvalidParametersError: 1 })
    expect(h.membership.members().map((m) => m.id)).toEqual(['a', 'b'])
    // Still serving: a valid heartbeat is accepted.
    expect(await a.beat(7, 1)).toEqual({ member: true, version: 1 })

    // A restarted "a" (new incarnation) replaces the old one with a new view; the old process is refused.
    const next = h.nextView()
    const a2 = await h.open('a', 'a-2')
    await a2.beat(3, 0)
    const { kinds, view } = await next
    expect(kinds).toEqual([{ kind: 'restart', id: 'a' }])
    expect(view).toMatchObject({ version: 2, members: [{ id: 'a', address: a2.ep.address }, { id: 'b' }] })
    await expect(a.beat(8, 1)).rejects.toMatchObject({ name: 'StaleEpochError' })
    expect(h.membership.metrics()).toMatchObject({ restarts: 1 })
  })

  it('continues above the view versions replicas hold (a restarted coordinator) and is idempotent to start and stop', async () => {
    const h = await setup({ minReplicas: 1 })
    await h.membership.start()
    const r = await h.open('x')
    const next = h.nextView()
    const reply = await r.beat(12, 7)
    const { view } = await next
    expect(view).toMatchObject({ version: 8, round: 14, members: [{ id: 'x' }] })
    expect(reply.view).toEqual(view)
    await h.membership.stop()
    await h.membership.stop()
    await expect(r.beat(13, 8)).rejects.toMatchObject({ name: 'UnhandledMessageError' })
    expect(() => createReplicaMembership({ leadRounds: 0 }, { endpoint: r.ep })).toThrow(/leadRounds/)
  })
})
