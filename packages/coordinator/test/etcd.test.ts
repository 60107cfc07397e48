import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createEtcdElection, createEtcdStateStore, recoverState, type EtcdElection, type LeaderInfo } from '../src/index.js'
import { hasEtcd, startEtcd, type EtcdServer } from './etcd-server.js'

describe.skipIf(!hasEtcd)('etcd high availability (needs the etcd binary: bash scripts/ci-services.sh)', () => {
  let server: EtcdServer
  const open: EtcdElection[] = []
  let n = 0
  const prefix = (): string => `/phalanx-test/job${++n}`
  const election = (p: string): EtcdElection => {
    const e = createEtcdElection({ hosts: [server.url], prefix: p, ttlSeconds: 1 })
    open.push(e)
    return e
  }

  beforeAll(async () => { server = await startEtcd() }, 30_000)
  afterAll(async () => { await server?.stop() })
  afterEach(async () => { for (const e of open.splice(0)) await e.close() })

  it('appends, replays and compacts records through a leadership', async () => {
    const p = prefix()
    const a = election(p)
    const lead = await a.campaign('tcp://127.0.0.1:1')
    const store = createEtcdStateStore({ election: a, leadership: lead })
    expect(await store.replay()).toEqual([])
    await store.append({ type: 'epoch', epoch: 1, members: [{ id: 'w0', address: 'tcp://x:1' }] }, { sync: true })
    for (let s = 0; s < 12; s++) await store.append({ type: 'commit', step: s, epoch: 1, cursor: (s + 1) * 8 }, { sync: true })
    expect(recoverState(await store.replay())).toEqual({ epoch: 1, committed: 12, cursor: 96, members: [{ id: 'w0', address: 'tcp://x:1' }] })
    await store.compact({ type: 'snapshot', epoch: 1, committed: 12, cursor: 96, members: [] })
    await store.append({ type: 'commit', step: 12, epoch: 1, cursor: 104 }, { sync: true })
    const records = await store.replay()
    expect(records.map((r) => r.type)).toEqual(['snapshot', 'commit'])
    expect(recoverState(records).committed).toBe(13)
    await lead.resign()
  })

  it('elects one leader; a standby takes over when it resigns and replays its records', async () => {
    const p = prefix()
    const a = election(p)
    const b = election(p)
    const seen: Array<LeaderInfo | undefined> = []
    const stopFollowing = await b.follow((l) => { seen.push(l) })
    const leadA = await a.campaign('addr-a')
    const storeA = createEtcdStateStore({ election: a, leadership: leadA })
    await storeA.replay()
    await storeA.append({ type: 'commit', step: 0, epoch: 3, cursor: 8 }, { sync: true })
    expect(await b.leader()).toEqual({ address: 'addr-a', term: leadA.term })
    const ctl = new AbortController()
    const campaignB = b.campaign('addr-b', { signal: ctl.signal })
    let bWon = false
    void campaignB.then(() => { bWon = true }, () => undefined)
    // B stands by while A leads: its campaign is still pending after A's next write round-trip.
    await storeA.append({ type: 'commit', step: 1, epoch: 3, cursor: 16 }, { sync: true })
    expect(bWon).toBe(false)
    await leadA.resign()
    expect(leadA.signal.aborted).toBe(true)
    const leadB = await campaignB
    expect(BigInt(leadB.term)).toBeGreaterThan(BigInt(leadA.term))
    const storeB = createEtcdStateStore({ election: b, leadership: leadB })
    expect(recoverState(await storeB.replay())).toMatchObject({ epoch: 3, committed: 2, cursor: 16 })
    await storeB.append({ type: 'commit', step: 2, epoch: 4, cursor: 24 }, { sync: true })
    expect(recoverState(await storeB.replay()).committed).toBe(3)
    expect(seen.filter((l) => l !== undefined).map((l) => l?.address)).toEqual(['addr-a', 'addr-b'])
    await stopFollowing()
    await leadB.resign()
  })

  it('fences a deposed leader: its append is rejected with FencedError and writes nothing', async () => {
    const p = prefix()
    const a = election(p)
    const b = election(p)
    const leadA = await a.campaign('addr-a')
    const storeA = createEtcdStateStore({ election: a, leadership: leadA })
    await storeA.replay()
    await storeA.append({ type: 'commit', step: 0, epoch: 1, cursor: 8 }, { sync: true })
    // Depose A behind its back (as an expired lease would), and let B win before A notices.
    await b.client.delete().key(`${p}/leader`)
    const leadB = await b.campaign('addr-b')
    await expect(storeA.append({ type: 'commit', step: 1, epoch: 1, cursor: 16 }, { sync: true })).rejects.toMatchObject({ name: 'FencedError' })
    await expect(storeA.compact({ type: 'snapshot', epoch: 9, committed: 9, cursor: 9, members: [] })).rejects.toMatchObject({ name: 'FencedError' })
    expect(leadA.signal.aborted).toBe(true)
    const storeB = createEtcdStateStore({ election: b, leadership: leadB })
    expect(recoverState(await storeB.replay())).toMatchObject({ committed: 1, cursor: 8 })
    await leadB.resign()
  })

  it('replaces a leader that stops renewing its lease (a crash) within the lease TTL', async () => {
    const p = prefix()
    const a = election(p)
    const b = election(p)
    const leadA = await a.campaign('addr-a')
    await a.close() // stops keep-alives without revoking: the lease must expire on its own
    const t0 = performance.now()
    const leadB = await b.campaign('addr-b')
    const ms = performance.now() - t0
    expect(ms).toBeLessThan(4000)
    expect(leadB.term).not.toBe(leadA.term)
    expect((await b.leader())?.address).toBe('addr-b')
    await b.markDone(leadB, { committed: 5, epoch: 2 })
    expect(await b.done()).toEqual({ committed: 5, epoch: 2 })
    await leadB.resign()
  })
})
