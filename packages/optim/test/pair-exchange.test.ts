import { createFakeClock, type Endpoint, type MessageHandler } from '@phalanx/core'
import { afterEach, describe, expect, it } from 'vitest'
import { applyOuterStep, createOuterOptimizer, pairFor, type OuterOptimizer, type OuterSpecInput } from '../src/index.js'
import { openMesh, rand } from './helpers.js'

/** Wraps an endpoint so the test learns when a handler of `type` has run (the event to act on). */
function tapHandler (ep: Endpoint, onHandled: () => void): Endpoint {
  return new Proxy(ep, {
    get (target, key) {
      if (key === 'handle') {
        return (type: string, handler: MessageHandler) => target.handle(type, async (env, o) => {
          const out = await handler(env, o)
          onHandled()
          return out
        })
      }
      const v: unknown = Reflect.get(target, key, target)
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
    }
  })
}

const cleanup: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c()
})

const SIZE = 64
const SEED = 11

interface Cluster {
  ids: string[]
  endpoints: Endpoint[]
  opts: OuterOptimizer[]
}

async function cluster (n: number, spec: OuterSpecInput, initial: Float32Array, wrap: (i: number, ep: Endpoint) => Endpoint = (_i, ep) => ep,
  clock = createFakeClock(), exchangeTimeoutMs = 10_000): Promise<Cluster> {
  const { ids, endpoints } = await openMesh(n, 'optim-test', cleanup)
  const opts = endpoints.map((ep, i) => {
    const o = createOuterOptimizer({ spec, initial, members: ids, seed: SEED, exchangeTimeoutMs }, { endpoint: wrap(i, ep), clock })
    o.start()
    cleanup.push(async () => { await o.stop() })
    return o
  })
  return { ids, endpoints, opts }
}

describe('pair exchange over the memory transport', () => {
  it('NoLoCo: 8 replicas each step towards their pair mean from their own anchor, one round, P floats sent', async () => {
    const n = 8
    const initial = rand(SIZE, 1)
    const { opts } = await cluster(n, { preset: 'noloco', interval: 1 }, initial)
    const anchors = Array.from({ length: n }, () => initial.slice())
    const momenta = Array.from({ length: n }, () => new Float32Array(SIZE))
    for (let r = 0; r < 3; r++) {
      const thetas = Array.from({ length: n }, (_, i) => rand(SIZE, 1000 * r + i + 7))
      const { partners } = pairFor(r, SEED, n)
      for (let i = 0; i < n; i++) {
        applyOuterStep({ alpha: 0.7, momentum: 0.5, kind: 'heavy-ball' }, anchors[i] as Float32Array, momenta[i] as Float32Array,
          thetas[i] as Float32Array, thetas[partners[i] as number] as Float32Array)
      }
      const work = thetas.map((t) => t.slice())
      const reports = await Promise.all(opts.map(async (o, i) => await o.sync(work[i] as Float32Array)))
      for (let i = 0; i < n; i++) {
        expect(reports[i]).toMatchObject({ round: r, mode: 'group', partner: `r${partners[i] as number}`, rounds: 1, bytesSent: SIZE * 4 })
        expect(work[i]).toEqual(anchors[i])
      }
    }
    for (const o of opts) expect(o.metrics()).toMatchObject({ syncs: 3, fallbacks: 0, rounds: 3, bytesSent: 3 * SIZE * 4, bytesReceived: 3 * SIZE * 4 })
    // Per-replica anchors: after pair steps the replicas are not all identical.
    expect(opts[0]?.exportState().tensors[0]?.data).not.toEqual(opts[1]?.exportState().tensors[0]?.data)
  })

  it('gossip (alpha 1, mu 0) makes both partners exactly equal to their average', async () => {
    const n = 4
    const { opts } = await cluster(n, { preset: 'gossip', interval: 1 }, new Float32Array(SIZE))
    const thetas = Array.from({ length: n }, (_, i) => rand(SIZE, i + 3))
    const work = thetas.map((t) => t.slice())
    await Promise.all(opts.map(async (o, i) => await o.sync(work[i] as Float32Array)))
    for (const [a, b] of pairFor(0, SEED, n).pairs) {
      const mean = new Float32Array(SIZE)
      for (let k = 0; k < SIZE; k++) mean[k] = ((thetas[a] as Float32Array)[k] as number + ((thetas[b] as Float32Array)[k] as number)) / 2
      expect(work[a]).toEqual(mean)
      expect(work[b]).toEqual(mean)
    }
  })

  it('a replica closed mid-exchange does not block the others: its partner falls back, the rest continue', async () => {
    const n = 8
    const victim = 5
    const partner = pairFor(0, SEED, n).partners[victim] as number
    let victimGotWeights!: () => void
    const received = new Promise<void>((resolve) => { victimGotWeights = resolve })
    const initial = rand(SIZE, 2)
    const { ids, endpoints, opts } = await cluster(n, { preset: 'noloco', interval: 1 }, initial,
      (i, ep) => i === victim ? tapHandler(ep, () => { victimGotWeights() }) : ep)
    const work = Array.from({ length: n }, (_, i) => rand(SIZE, i + 20))
    // Everyone but the victim enters the exchange; the victim receives its partner's weights, then dies.
    const syncs = opts.map(async (o, i) => i === victim ? undefined : await o.sync(work[i] as Float32Array))
    await received
    await (endpoints[victim] as Endpoint).close({ lingerMs: 0 })
    const reports = await Promise.all(syncs)
    for (let i = 0; i < n; i++) {
      if (i === victim) continue
      if (i === partner) expect(reports[i]).toMatchObject({ mode: 'fallback', reason: 'PeerUnreachableError' })
      else expect(reports[i]).toMatchObject({ mode: 'group' })
    }
    expect(opts[partner]?.metrics().fallbacks).toBe(1)
    // The fallback is a local outer step: towards the replica's own weights.
    const expected = initial.slice()
    applyOuterStep({ alpha: 0.7, momentum: 0.5, kind: 'heavy-ball' }, expected, new Float32Array(SIZE), rand(SIZE, partner + 20))
    expect(work[partner]).toEqual(expected)

    // The coordinator drops the victim; the 7 survivors keep going (one sits out each round).
    const survivors = ids.filter((_, i) => i !== victim)
    const alive = opts.filter((_, i) => i !== victim)
    await opts[victim]?.stop()
    for (const o of alive) {
      expect(o.round).toBe(1)
      o.setMembers(survivors)
    }
    const next = await Promise.all(alive.map(async (o, i) => await o.sync(rand(SIZE, i + 40))))
    expect(next.filter((r) => r.mode === 'local')).toHaveLength(1)
    expect(next.filter((r) => r.mode === 'group')).toHaveLength(6)
    expect(alive.reduce((s, o) => s + o.metrics().sitOuts, 0)).toBe(1)
  })

  it('a stalled partner costs at most the exchange deadline, then a local step', async () => {
    const clock = createFakeClock()
    const { opts } = await cluster(2, { preset: 'noloco', interval: 1 }, new Float32Array(SIZE), undefined, clock, 500)
    const pending = (opts[0] as OuterOptimizer).sync(rand(SIZE, 1))
    // Wait (bounded) until the exchange armed its deadline, then let it pass; the partner never syncs.
    for (let i = 0; i < 1000 && clock.pending() === 0; i++) await new Promise((resolve) => { setImmediate(resolve) })
    expect(clock.pending()).toBe(1)
    clock.advance(500)
    await expect(pending).resolves.toMatchObject({ mode: 'fallback', reason: 'TimeoutError', bytesSent: SIZE * 4 })
  })

  it('a partner that died before the round fails fast, without waiting for the deadline', async () => {
    const clock = createFakeClock()
    const { endpoints, opts } = await cluster(2, { preset: 'gossip', interval: 1 }, new Float32Array(SIZE), undefined, clock, 60_000)
    await opts[1]?.stop()
    await (endpoints[1] as Endpoint).close({ lingerMs: 0 })
    const theta = rand(SIZE, 3)
    const expected = theta.slice()
    // The fake clock is never advanced: only the failed send can end this exchange.
    await expect((opts[0] as OuterOptimizer).sync(theta)).resolves.toMatchObject({ mode: 'fallback', reason: 'PeerUnreachableError', bytesSent: 0, rounds: 0 })
    expect(theta).toEqual(expected)
    // The disconnect was remembered: no send was even tried.
    expect(opts[0]?.metrics()).toMatchObject({ fallbacks: 1, syncs: 1, partnerDown: 1, bytesSent: 0 })
    // A new view that lists the peer again (the coordinator vouches for it) forgets the mark.
    opts[0]?.setMembers(['r0', 'r1'])
    const next = (opts[0] as OuterOptimizer).sync(rand(SIZE, 4))
    await expect(next).resolves.toMatchObject({ mode: 'fallback', reason: 'PeerUnreachableError' })
    expect(opts[0]?.metrics().partnerDown).toBe(1)
  })

  it('stop() aborts an exchange in flight', async () => {
    const clock = createFakeClock()
    const { opts } = await cluster(2, { preset: 'noloco', interval: 1 }, new Float32Array(SIZE), undefined, clock, 60_000)
    const pending = (opts[0] as OuterOptimizer).sync(rand(SIZE, 1))
    await opts[0]?.stop()
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' })
    expect(clock.pending()).toBe(0)
  })

  it('refuses weights from a replica that is not this round\'s partner, or of the wrong size', async () => {
    const n = 4
    const { endpoints, opts } = await cluster(n, { preset: 'noloco', interval: 1 }, new Float32Array(SIZE))
    const partners = pairFor(0, SEED, n).partners
    const stranger = [1, 2, 3].find((j) => partners[0] !== j) as number
    const message = { type: 'outer-exchange', step: 0, body: { view: 0 }, tensors: [{ name: 'theta', shape: [SIZE], dtype: 'float32' as const, data: new Float32Array(SIZE) }] }
    await expect((endpoints[0] as Endpoint).request(`r${stranger}`, message)).rejects.toMatchObject({ name: 'InvalidParametersError' })
    const wrongSize = { ...message, tensors: [{ name: 'theta', shape: [3], dtype: 'float32' as const, data: new Float32Array(3) }] }
    await expect((endpoints[0] as Endpoint).request(`r${partners[0] as number}`, wrongSize))
      .rejects.toMatchObject({ name: 'LayoutMismatchError' })
    expect(opts[stranger]?.metrics().rejected).toBe(1)
  })

  it('a replica that fell behind catches up to its partner\'s round instead of failing every exchange', async () => {
    const clock = createFakeClock()
    const { opts } = await cluster(2, { preset: 'noloco', interval: 1 }, new Float32Array(SIZE), undefined, clock, 500)
    const [slow, fast] = opts as [OuterOptimizer, OuterOptimizer]
    // The fast replica runs three rounds alone: its partner never answers, so each is a fallback.
    for (let r = 0; r < 3; r++) {
      const pending = fast.sync(rand(SIZE, 10 + r))
      for (let i = 0; i < 1000 && clock.pending() === 0; i++) await new Promise((resolve) => { setImmediate(resolve) })
      clock.advance(500)
      await expect(pending).resolves.toMatchObject({ round: r, mode: 'fallback' })
    }
    expect(fast.round).toBe(3)
    // The slow one uses what the fast one left for round 0, then learns it is behind and skips ahead.
    await expect(slow.sync(rand(SIZE, 20))).resolves.toMatchObject({ round: 0, mode: 'group' })
    await expect(slow.sync(rand(SIZE, 21))).resolves.toMatchObject({ round: 1, mode: 'fallback', reason: 'StaleEpochError', resyncedTo: 3 })
    expect(slow.round).toBe(3)
    expect(slow.metrics().skippedRounds).toBe(1)
    // Aligned again: the next round is a real exchange on both sides.
    const [a, b] = await Promise.all([slow.sync(rand(SIZE, 23)), fast.sync(rand(SIZE, 24))])
    expect(a).toMatchObject({ round: 3, mode: 'group' })
    expect(b).toMatchObject({ round: 3, mode: 'group' })
  })

  it('a view tied to a future round: earlier rounds pair by the old members, later ones by the new, on every replica', async () => {
    const n = 4
    const { ids, opts } = await cluster(n, { preset: 'gossip', interval: 1 }, new Float32Array(SIZE))
    const survivors = ids.filter((id) => id !== 'r2')
    // Delivered at different moments (before round 0 on some, after it on others): same outcome.
    for (const o of opts.slice(0, 2)) o.setMembers(survivors, { version: 1, round: 1 })
    const first = await Promise.all(opts.map(async (o, i) => await o.sync(rand(SIZE, i))))
    for (let i = 0; i < n; i++) expect(first[i]).toMatchObject({ round: 0, view: 0, mode: 'group', partner: `r${pairFor(0, SEED, n).partners[i] as number}` })
    for (const o of opts.slice(2)) o.setMembers(survivors, { version: 1, round: 1 })
    const alive = opts.filter((_, i) => i !== 2)
    const second = await Promise.all(alive.map(async (o, i) => await o.sync(rand(SIZE, 10 + i))))
    const pairing = pairFor(1, SEED, 3)
    second.forEach((rep, i) => {
      const p = pairing.partners[i] as number
      expect(rep).toMatchObject(p < 0 ? { round: 1, view: 1, mode: 'local' } : { round: 1, view: 1, mode: 'group', partner: survivors[p] })
    })
    for (const o of opts) expect(o.metrics()).toMatchObject({ viewMismatches: 0, lateViews: 0, fallbacks: 0 })
    expect(opts[0]?.view(0)).toMatchObject({ version: 1, round: 1 })
    expect(opts[0]?.view()).toEqual({ version: 1, round: 1, members: survivors })
  })

  it('replicas on different views refuse each other\'s weights (counted) instead of pairing by different lists', async () => {
    const { opts } = await cluster(2, { preset: 'gossip', interval: 1 }, new Float32Array(SIZE))
    const [a, b] = opts as [OuterOptimizer, OuterOptimizer]
    // Only `a` learned of view 1 (same two members): its round 0 is paired by another version.
    a.setMembers(['r0', 'r1'], { version: 1, round: 0 })
    const ta = rand(SIZE, 1)
    const tb = rand(SIZE, 2)
    const [ra, rb] = await Promise.all([a.sync(ta.slice()), b.sync(tb.slice())])
    expect(ra).toMatchObject({ round: 0, view: 1, mode: 'fallback' })
    expect(rb).toMatchObject({ round: 0, view: 0, mode: 'fallback' })
    expect([ra.reason, rb.reason].sort()).toEqual(['InvalidParametersError', 'StaleEpochError'])
    // Each refused the other's weights and had its own refused.
    expect(a.metrics()).toMatchObject({ viewMismatches: 2, rejected: 1, fallbacks: 1 })
    expect(b.metrics()).toMatchObject({ viewMismatches: 2, rejected: 1, fallbacks: 1 })
    // Once both hold view 1 they pair again.
    b.setMembers(['r0', 'r1'], { version: 1 })
    const [na, nb] = await Promise.all([a.sync(rand(SIZE, 3)), b.sync(rand(SIZE, 4))])
    expect(na).toMatchObject({ round: 1, view: 1, mode: 'group' })
    expect(nb).toMatchObject({ round: 1, view: 1, mode: 'group' })
  })

  it('a view that arrives after its round applies from the next sync (counted); one that is not newer is ignored', async () => {
    const { opts } = await cluster(2, { preset: 'gossip', interval: 1 }, new Float32Array(SIZE))
    const [a, b] = opts as [OuterOptimizer, OuterOptimizer]
    for (let r = 0; r < 2; r++) await Promise.all([a.sync(rand(SIZE, r)), b.sync(rand(SIZE, r + 5))])
    a.setMembers(['r0', 'r1'], { version: 3, round: 1 })
    expect(a.view()).toEqual({ version: 3, round: 2, members: ['r0', 'r1'] })
    expect(a.metrics().lateViews).toBe(1)
    a.setMembers(['r0'], { version: 3, round: 5 })
    a.setMembers(['r0'], { version: 2, round: 5 })
    expect(a.view(9)).toEqual({ version: 3, round: 2, members: ['r0', 'r1'] })
    expect(() => { a.setMembers(['r0'], { version: 4, round: -1 }) }).toThrow(expect.objectContaining({ name: 'InvalidParametersError' }))
  })
})
