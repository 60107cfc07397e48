import { afterEach, describe, expect, it } from 'vitest'
import { stateDictsBitEqual, type Endpoint, type Envelope } from '@phalanx/core'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { createCheckpointStore, restoreBest } from '../src/index.js'
import {
  ERASURE_MESSAGES, chooseScheme, compileRseModule, createErasureL1Source, createErasureMember, createRsCodec, createWasmRsCodec, decodeSnapshot,
  encodeOwnPieces, encodeSnapshot, parsePieceLayout, pieceBytes, type ErasureMember, type ExchangeGroup
} from '../src/erasure/index.js'
import { makeState, tempDir } from './helpers.js'

const rse = compileRseModule()

interface Cluster { group: ExchangeGroup, endpoints: Endpoint[], members: ErasureMember[], network: ReturnType<typeof createMemoryNetwork> }

async function cluster (size: number, options: { forceWasm?: boolean, chunkBytes?: number } = {}): Promise<Cluster> {
  const network = createMemoryNetwork()
  const transport = memoryTransport({ network })
  const ids = Array.from({ length: size }, (_, i) => `holder-${i}`)
  const group: ExchangeGroup = { members: ids, scheme: chooseScheme(size) }
  const endpoints = await Promise.all(ids.map(async (id) => await transport.open({ id, job: 'ec', requestTimeoutMs: 2000 })))
  for (const e of endpoints) for (const o of endpoints) if (e !== o) e.connect(o.id, o.address)
  const members = endpoints.map((endpoint) => createErasureMember({ group, self: endpoint.id, prepareTimeoutMs: 2000, ...(options.chunkBytes === undefined ? {} : { chunkBytes: options.chunkBytes }) }, options.forceWasm === true ? { endpoint, loader: () => { throw new Error('simulated failed build') } } : { endpoint }))
  for (const mbr of members) await mbr.start()
  return { group, endpoints, members, network }
}

const sizesOf = (host: number): number[] => [300 + host * 17, 64, 1025 + host]

describe('erasure shard exchange and recovery (memory transport)', () => {
  const cleanups: Array<() => Promise<void>> = []
  afterEach(async () => { for (const f of cleanups.splice(0).reverse()) await f() })

  const start = async (size: number, options: { forceWasm?: boolean, chunkBytes?: number } = {}): Promise<Cluster> => {
    const c = await cluster(size, options)
    cleanups.push(async () => {
      for (const mbr of c.members) await mbr.stop()
      for (const e of c.endpoints) await e.close()
    })
    return c
  }

  it('commits versions in two phases, keeps the last two, and rebuilds two lost hosts of RS(4,2) bit-exact', async () => {
    // 256-byte chunks: every piece spans several chunks, so fetches and decoding work column by column.
    const c = await start(6, { chunkBytes: 256 })
    for (const version of [1, 2, 3]) {
      const outcomes = await Promise.all(c.members.map(async (mbr, h) => await mbr.snapshot(version, encodeSnapshot(makeState(version * 10 + h, sizesOf(h))))))
      expect(outcomes.every((o) => o.committed)).toBe(true)
    }
    expect(c.members.every((mbr) => mbr.committed().join() === '3,2')).toBe(true)
    const metrics = c.members[0]?.metrics()
    expect(metrics?.snapshotsCommitted).toBe(3)
    expect(metrics?.versionsHeld).toBe(2)
    // One piece (a quarter) of each of the 5 others per version; one of the five is parity.
    expect(metrics?.pieceBytes).toBeGreaterThan(metrics?.snapshotBytes ?? Infinity)
    expect((metrics?.parityBytes ?? 0) * 5).toBeGreaterThan((metrics?.pieceBytes ?? 0) * 0.9)
    expect(metrics?.encodeBytes).toBeGreaterThan(0)

    // Host 1 dies alone: its four data pieces survive on hosts 2..5 and nothing is decoded.
    await c.endpoints[1]?.close()
    const transport = memoryTransport({ network: c.network })
    const repl = await transport.open({ id: 'replacement', job: 'ec', requestTimeoutMs: 2000 })
    cleanups.push(async () => { await repl.close() })
    for (const e of c.endpoints) repl.connect(e.id, e.address)
    const alone = await createErasureL1Source({ group: c.group, owner: 'holder-1', lost: ['holder-1'], probeTimeoutMs: 300 }, { endpoint: repl }).recover()
    expect(alone.chunksRebuilt).toBe(0)
    expect(alone.chunksFetched).toBeGreaterThan(4)
    expect(alone.bytesFetched).toBeLessThan(encodeSnapshot(makeState(31, sizesOf(1))).byteLength + 4 * 256)
    expect(stateDictsBitEqual(decodeSnapshot(alone.bytes), makeState(31, sizesOf(1)))).toBe(true)

    // Host 4 dies too; each lost host's data piece held by the other is decoded from parity.
    await c.endpoints[4]?.close()
    for (const lost of [1, 4]) {
      const l1 = createErasureL1Source({ group: c.group, owner: `holder-${lost}`, probeTimeoutMs: 300 }, { endpoint: repl })
      expect(await l1.latestStep()).toBe(3)
      const report = await l1.recover()
      expect(report.version).toBe(3)
      expect(report.alive).toHaveLength(4)
      expect(report.chunksRebuilt).toBeGreaterThan(1)
      expect(stateDictsBitEqual(decodeSnapshot(report.bytes), makeState(30 + lost, sizesOf(lost)))).toBe(true)
      const { state } = await l1.restore()
      expect(stateDictsBitEqual(state, makeState(30 + lost, sizesOf(lost)))).toBe(true)
    }
  })

  it('treats a chunk corrupted in transit as missing and rebuilds it from parity', async () => {
    const c = await start(6, { chunkBytes: 512 })
    await Promise.all(c.members.map(async (mbr, h) => await mbr.snapshot(1, encodeSnapshot(makeState(h, sizesOf(h))))))
    const inner = await memoryTransport({ network: c.network }).open({ id: 'replacement', job: 'ec', requestTimeoutMs: 2000 })
    cleanups.push(async () => { await inner.close() })
    for (const e of c.endpoints) inner.connect(e.id, e.address)
    let flipped = 0
    // Flip one byte of every reply carrying chunk 1 of data piece 0 (held by holder-3 for owner 2).
    const corrupting: Endpoint = Object.assign(Object.create(inner) as Endpoint, {
      request: async (to: string, message: Parameters<Endpoint['request']>[1], options?: Parameters<Endpoint['request']>[2]): Promise<Envelope> => {
        const env = await inner.request(to, message, options)
        const body = env.header.body as { piece?: number, chunk?: number } | undefined
        if (message.type !== ERASURE_MESSAGES.fetch || body?.piece !== 0 || body.chunk !== 1) return env
        flipped++
        const frame = Uint8Array.from(env.frames[0] as Uint8Array)
        frame[7] = (frame[7] as number) ^ 0x40
        return { ...env, frames: [frame] }
      }
    })
    await c.endpoints[2]?.close()
    const report = await createErasureL1Source({ group: c.group, owner: 'holder-2', lost: ['holder-2'], probeTimeoutMs: 300 }, { endpoint: corrupting }).recover()
    expect(flipped).toBe(1)
    expect(report.chunksCorrupt).toBe(1)
    expect(report.chunksRebuilt).toBe(1)
    expect(stateDictsBitEqual(decodeSnapshot(report.bytes), makeState(2, sizesOf(2)))).toBe(true)
  })

  it('encodes a snapshot into pieces whose layout checks itself', async () => {
    const codec = createRsCodec({ k: 4, m: 2 })
    cleanups.push(async () => { codec.close() })
    const bytes = Uint8Array.from({ length: 10_001 }, (_, i) => (i * 31) & 0xff)
    const enc = await encodeOwnPieces(codec, bytes, { chunkBytes: 1024 })
    expect(enc.layout).toMatchObject({ codec: codec.id, k: 4, m: 2, length: 10_001, pieceSize: 2504, chunkBytes: 1024 })
    expect(enc.layout.crcs).toHaveLength(5)
    expect(enc.layout.crcs.every((c) => c.length === 3)).toBe(true)
    expect(Buffer.compare(Buffer.from(enc.padded.subarray(0, bytes.byteLength)), Buffer.from(bytes))).toBe(0)
    // The stored parity piece rebuilds a lost data piece.
    const shards: Array<Uint8Array | undefined> = [pieceBytes(enc, 0), undefined, pieceBytes(enc, 2), pieceBytes(enc, 3), pieceBytes(enc, 4), undefined]
    await codec.reconstruct(shards, [true, false, true, true, true, false])
    expect(Buffer.compare(Buffer.from(shards[1] as Uint8Array), Buffer.from(pieceBytes(enc, 1)))).toBe(0)
    expect(parsePieceLayout(JSON.parse(JSON.stringify(enc.layout)))).toEqual(enc.layout)
    expect(() => parsePieceLayout({ ...enc.layout, crcs: enc.layout.crcs.slice(1) })).toThrow(expect.objectContaining({ name: 'MalformedMessageError' }) as unknown as Error)
    await expect(encodeOwnPieces(codec, bytes, { chunkBytes: 1001 })).rejects.toMatchObject({ name: 'InvalidParametersError' })
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
