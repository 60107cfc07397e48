import { afterEach, describe, expect, it } from 'vitest'
import { stateDictsBitEqual, type Endpoint } from '@phalanx/core'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { createCheckpointStore, restoreBest } from '../src/index.js'
import {
  chooseScheme, compileRseModule, createErasureL1Source, createErasureMember, createWasmRsCodec, decodeSnapshot, encodeSnapshot,
  type ErasureMember, type ExchangeGroup
} from '../src/erasure/index.js'
import { makeState, tempDir } from './helpers.js'

const rse = compileRseModule()

interface Cluster { group: ExchangeGroup, endpoints: Endpoint[], members: ErasureMember[], network: ReturnType<typeof createMemoryNetwork> }

async function cluster (size: number, options: { forceWasm?: boolean } = {}): Promise<Cluster> {
  const network = createMemoryNetwork()
  const transport = memoryTransport({ network })
  const ids = Array.from({ length: size }, (_, i) => `holder-${i}`)
  const group: ExchangeGroup = { members: ids, scheme: chooseScheme(size) }
  const endpoints = await Promise.all(ids.map(async (id) => await transport.open({ id, job: 'ec', requestTimeoutMs: 2000 })))
  for (const e of endpoints) for (const o of endpoints) if (e !== o) e.connect(o.id, o.address)
  const members = endpoints.map((endpoint) => createErasureMember({ group, self: endpoint.id, prepareTimeoutMs: 2000 }, options.forceWasm === true ? { endpoint, loader: () => { throw new Error('simulated failed build') } } : { endpoint }))
  for (const mbr of members) await mbr.start()
  return { group, endpoints, members, network }
}

const sizesOf = (host: number): number[] => [300 + host * 17, 64, 1025 + host]

describe('erasure shard exchange and recovery (memory transport)', () => {
  const cleanups: Array<() => Promise<void>> = []
  afterEach(async () => { for (const f of cleanups.splice(0).reverse()) await f() })

  const start = async (size: number, options: { forceWasm?: boolean } = {}): Promise<Cluster> => {
    const c = await cluster(size, options)
    cleanups.push(async () => {
      for (const mbr of c.members) await mbr.stop()
      for (const e of c.endpoints) await e.close()
    })
    return c
  }

  it('commits versions in two phases, keeps the last two, and rebuilds two lost hosts of RS(4,2) bit-exact', async () => {
    const c = await start(6)
    for (const version of [1, 2, 3]) {
      const outcomes = await Promise.all(c.members.map(async (mbr, h) => await mbr.snapshot(version, encodeSnapshot(makeState(version * 10 + h, sizesOf(h))))))
      expect(outcomes.every((o) => o.committed)).toBe(true)
    }
    expect(c.members.every((mbr) => mbr.committed().join() === '3,2')).toBe(true)
    const metrics = c.members[0]?.metrics()
    expect(metrics?.snapshotsCommitted).toBe(3)
    expect(metrics?.versionsHeld).toBe(2)
    expect(metrics?.parityBytes).toBeGreaterThan(0)
    expect(metrics?.encodeBytes).toBeGreaterThan(0)

    // Hosts 1 and 4 die; a replacement rebuilds each from the four survivors.
    await c.endpoints[1]?.close()
    await c.endpoints[4]?.close()
    const transport = memoryTransport({ network: c.network })
    const repl = await transport.open({ id: 'replacement', job: 'ec', requestTimeoutMs: 2000 })
    cleanups.push(async () => { await repl.close() })
    for (const e of c.endpoints) repl.connect(e.id, e.address)
    for (const lost of [1, 4]) {
      const l1 = createErasureL1Source({ group: c.group, owner: `holder-${lost}`, probeTimeoutMs: 300 }, { endpoint: repl })
      expect(await l1.latestStep()).toBe(3)
      const report = await l1.recover()
      expect(report.version).toBe(3)
      expect(report.alive).toHaveLength(4)
      expect(stateDictsBitEqual(decodeSnapshot(report.bytes), makeState(30 + lost, sizesOf(lost)))).toBe(true)
    }
  })

  it('skips a snapshot while one is in flight, and one whose peer is gone, counting both', async () => {
    const c = await start(3)
    const first = c.members.map(async (mbr, h) => await mbr.snapshot(1, encodeSnapshot(makeState(h))))
    const skipped = await c.members[0]?.snapshot(2, encodeSnapshot(makeState(9)))
    expect(skipped).toMatchObject({ committed: false, reason: 'previous snapshot still in flight' })
    expect((await Promise.all(first)).every((o) => o.committed)).toBe(true)
    await c.endpoints[2]?.close()
    const lonely = await Promise.all([c.members[0]?.snapshot(2, encodeSnapshot(makeState(1))), c.members[1]?.snapshot(2, encodeSnapshot(makeState(2)))])
    expect(lonely.every((o) => o?.committed === false)).toBe(true)
    expect(c.members[0]?.metrics().snapshotsSkipped).toBe(2)
    expect(c.members[0]?.committed()).toEqual([1])
  })

  it('falls back to L2 with a typed error when more than m hosts are lost', async () => {
    const c = await start(4) // XOR(3,1)
    const { dir, cleanup } = await tempDir()
    cleanups.push(cleanup)
    const store = createCheckpointStore({ dir })
    await store.save(makeState(500))
    await Promise.all(c.members.map(async (mbr, h) => await mbr.snapshot(7, encodeSnapshot(makeState(700 + h)))))
    await c.endpoints[1]?.close()
    await c.endpoints[2]?.close()
    const l1 = createErasureL1Source({ group: c.group, owner: 'holder-1', probeTimeoutMs: 300 }, { endpoint: c.endpoints[0] as Endpoint })
    await expect(l1.recover()).rejects.toMatchObject({ name: 'InsufficientShardsError' })
    const best = await restoreBest({ l1, store })
    expect(best.tier).toBe('L2')
    expect(best.skipped.some((s) => s.tier === 'L1' && s.error.startsWith('InsufficientShardsError'))).toBe(true)
    expect(stateDictsBitEqual(best.state, makeState(500))).toBe(true)
  })

  it('refuses shards of another codec with CodecMismatchError', async () => {
    const c = await start(6, { forceWasm: true })
    await Promise.all(c.members.map(async (mbr, h) => await mbr.snapshot(1, encodeSnapshot(makeState(h)))))
    const wasm = createWasmRsCodec({ k: 4, m: 2, module: rse })
    cleanups.push(async () => { wasm.close() })
    // Same k and m, another parity layout (as the native codec's would be): not interchangeable.
    const other = { ...wasm, id: 'rs-cauchy-gf256/other' }
    const l1 = createErasureL1Source({ group: c.group, owner: 'holder-0', probeTimeoutMs: 300 }, { endpoint: c.endpoints[1] as Endpoint, codec: other })
    await expect(l1.recover()).rejects.toMatchObject({ name: 'CodecMismatchError' })
    const same = createErasureL1Source({ group: c.group, owner: 'holder-0', probeTimeoutMs: 300 }, { endpoint: c.endpoints[1] as Endpoint, codec: wasm })
    expect(stateDictsBitEqual(decodeSnapshot((await same.recover()).bytes), makeState(0))).toBe(true)
  })
})
