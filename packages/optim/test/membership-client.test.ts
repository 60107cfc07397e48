import { ReplicaMessage, createFakeClock, replicaHeartbeatBodySchema, type Endpoint, type ReplicaHeartbeatBody, type ReplicaHeartbeatReply, type ReplicaViewBody } from '@phalanx/core'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { afterEach, describe, expect, it } from 'vitest'
import { createMembershipClient, createOuterOptimizer, type MembershipClient, type OuterOptimizer } from '../src/index.js'

const cleanup: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c()
})

const member = (id: string): { id: string, address: string } => ({ id, address: id })

/** The test plays the coordinator: it records heartbeats and answers with `reply`. */
async function setup (reply: (hb: ReplicaHeartbeatBody) => ReplicaHeartbeatReply = () => ({ member: true, version: 0 })) {
  const clock = createFakeClock()
  const transport = memoryTransport({ network: createMemoryNetwork() })
  const coord = await transport.open({ id: 'coord', job: 'j' })
  const ep = await transport.open({ id: 'a', job: 'j' })
  const impostor = await transport.open({ id: 'b', job: 'j' })
  cleanup.push(async () => { await coord.close(); await ep.close(); await impostor.close() })
  coord.connect('a', 'a')
  impostor.connect('a', 'a')
  const heartbeats: ReplicaHeartbeatBody[] = []
  const leaves: unknown[] = []
  let onBeat: (() => void) | undefined
  coord.handle(ReplicaMessage.heartbeat, (env) => {
    const hb = replicaHeartbeatBodySchema.parse(env.header.body)
    heartbeats.push(hb)
    onBeat?.()
    return { type: 'replica-heartbeat-reply', body: reply(hb) }
  })
  coord.handle(ReplicaMessage.leave, (env) => { leaves.push(env.header.body) })
  const outer: OuterOptimizer = createOuterOptimizer({ spec: { preset: 'noloco', interval: 1 }, initial: new Float32Array(4), self: 'a' }, { endpoint: ep, clock })
  outer.start()
  cleanup.push(async () => { await outer.stop() })
  const client: MembershipClient = createMembershipClient({ coordinator: 'coord', coordinatorAddress: 'coord', heartbeatIntervalMs: 100 }, { endpoint: ep, outer, clock })
  cleanup.push(async () => { await client.stop() })
  /** Resolves once the coordinator has seen `n` heartbeats in all. */
  const beats = async (n: number): Promise<void> => {
    if (heartbeats.length >= n) return
    await new Promise<void>((resolve) => { onBeat = () => { if (heartbeats.length >= n) { onBeat = undefined; resolve() } } })
  }
  const sendView = async (from: Endpoint, view: unknown): Promise<void> => { await from.send('a', { type: ReplicaMessage.view, body: view }) }
  return { clock, coord, impostor, ep, outer, client, heartbeats, leaves, beats, sendView }
}

describe('membership client (replica side)', () => {
  it('heartbeats with the outer round and held view, installs views round-tied, ignores older versions', async () => {
    const s = await setup()
    await s.client.start()
    await s.beats(1)
    expect(s.heartbeats[0]).toMatchObject({ id: 'a', address: 'a', round: 0, view: 0 })
    const ready = s.client.ready()
    await s.sendView(s.coord, { version: 1, round: 0, members: [member('a'), member('b')] })
    expect(await ready).toMatchObject({ version: 1, round: 0 })
    expect(s.outer.view(0)).toEqual({ version: 1, round: 0, members: ['a', 'b'] })
    // The replica moves on to round 2 (healed from a peer here: the round is what matters).
    const state = s.outer.exportState()
    s.outer.importState({ tensors: state.tensors, meta: { ...state.meta, outerRound: 2 } })
    s.clock.advance(100)
    await s.beats(2)
    expect(s.heartbeats[1]).toMatchObject({ round: 2, view: 1 })
    // A view from round 5 keeps rounds before it on view 1.
    await s.sendView(s.coord, { version: 2, round: 5, members: [member('a'), member('c')] })
    await expect.poll(() => s.client.metrics().views, { interval: 1, timeout: 2000 }).toBe(2)
    expect(s.outer.view(4)).toMatchObject({ version: 1, members: ['a', 'b'] })
    expect(s.outer.view(5)).toMatchObject({ version: 2, members: ['a', 'c'] })
    // A repeated or older version changes nothing.
    await s.sendView(s.coord, { version: 2, round: 9, members: [member('a')] })
    await s.sendView(s.coord, { version: 1, round: 9, members: [member('a')] })
    await expect.poll(() => s.client.metrics().staleViews, { interval: 1, timeout: 2000 }).toBe(2)
    expect(s.outer.view(9)).toMatchObject({ version: 2, members: ['a', 'c'] })
    expect(s.client.view()).toMatchObject({ version: 2, round: 5 })
    expect(s.outer.metrics().lateViews).toBe(0)
  })

  it('refuses malformed views and views not sent by the coordinator', async () => {
    const s = await setup()
    await s.client.start()
    await s.sendView(s.impostor, { version: 3, round: 0, members: [member('a')] })
    await s.sendView(s.coord, { version: 3, round: -1, members: [member('a')] })
    await s.sendView(s.coord, { version: 3, round: 0, members: [member('a'), member('a')] })
    await s.sendView(s.coord, { version: 3, round: 0, members: [member('a')], extra: true })
    await expect.poll(() => s.client.metrics().rejected, { interval: 1, timeout: 2000 }).toBe(4)
    expect(s.client.view()).toBeUndefined()
    expect(s.outer.view()).toMatchObject({ version: 0, members: [] })
    // Still listening: a valid view is installed.
    await s.sendView(s.coord, { version: 3, round: 0, members: [member('a')] })
    expect(await s.client.ready()).toMatchObject({ version: 3 })
  })

  it('installs a view carried by a heartbeat reply; a joiner pairs by it from its current round; stop announces leaving', async () => {
    const view: ReplicaViewBody = { version: 4, round: 7, members: [member('a'), member('b')] }
    const s = await setup((hb) => (hb.view < view.version ? { member: true, version: 4, view } : { member: true, version: 4 }))
    await s.client.start()
    expect(await s.client.ready()).toEqual(view)
    // Not a member of the view in force for round 0 (none yet): the new list applies from round 0.
    expect(s.outer.view(0)).toEqual({ version: 4, round: 0, members: ['a', 'b'] })
    await s.client.heartbeat()
    expect(s.heartbeats.at(-1)).toMatchObject({ view: 4 })
    expect(s.client.metrics()).toMatchObject({ views: 1, heartbeats: 2, heartbeatFailures: 0 })
    const incarnation = s.heartbeats[0]?.incarnation
    await s.client.stop()
    await s.client.stop()
    await expect.poll(() => s.leaves, { interval: 1, timeout: 2000 }).toEqual([{ id: 'a', incarnation }])
    expect(s.clock.pending()).toBe(0)
    await expect(s.client.ready({})).resolves.toEqual(view)
    await expect(s.client.heartbeat()).rejects.toMatchObject({ name: 'ClosedError' })
  })

  it('counts failed heartbeats and rejects ready() when stopped', async () => {
    const s = await setup()
    await s.coord.close()
    await s.client.start()
    const ready = s.client.ready()
    await expect.poll(() => s.client.metrics().heartbeatFailures, { interval: 1, timeout: 2000 }).toBe(1)
    await s.client.stop()
    await expect(ready).rejects.toMatchObject({ name: 'ClosedError' })
    const aborted = new AbortController()
    aborted.abort()
    await s.client.start()
    await expect(s.client.ready({ signal: aborted.signal })).rejects.toMatchObject({ name: 'AbortError' })
  })
})
