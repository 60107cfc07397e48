// Erasure-coded in-memory snapshots in one process: six holders (RS(4,2)) on the in-memory
// transport snapshot their state, two are lost, and a replacement rebuilds both bit-exact.
// Run: npx tsx examples/erasure-basic.ts
import { createStateDict, stateDictsBitEqual, type StateDict } from '@phalanx/core'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import {
  chooseScheme, createErasureL1Source, createErasureMember, createRsCodec, decodeStripe, encodeSnapshot, encodeStripe
} from '@phalanx/checkpoint/erasure'

const stateOf = (host: number, step: number): StateDict => createStateDict([
  { name: 'dense/kernel', shape: [256, 64], dtype: 'float32', data: Float32Array.from({ length: 256 * 64 }, (_, i) => Math.sin(i + host * 7 + step)) },
  { name: 'dense/bias', shape: [64], dtype: 'float32', data: new Float32Array(64).fill(host + step / 10) }
], { step, epoch: 0 })

// 1. A codec on its own: encode a buffer as an RS(4,2) stripe, lose two shards, decode.
const codec = createRsCodec({ k: 4, m: 2 })
const bytes = encodeSnapshot(stateOf(0, 1))
const { header, shards } = await encodeStripe(codec, bytes)
const { pieces } = await decodeStripe(codec, header, shards.map((b, index) => ({ index, bytes: b })).filter((s) => s.index !== 0 && s.index !== 3))
console.log(`codec ${codec.id}: ${bytes.byteLength} bytes, shard ${header.shardSize} B, rebuilt from 4 of 6: ${Buffer.compare(Buffer.concat(pieces), Buffer.from(bytes)) === 0}`)
codec.close()

// 2. A group of six holders: each cuts its own snapshot into 4 data + 2 parity pieces and stores 5 of
//    them on the other five, with a two-phase commit per snapshot version.
const network = createMemoryNetwork()
const transport = memoryTransport({ network })
const ids = Array.from({ length: 6 }, (_, i) => `host-${i}`)
const group = { members: ids, scheme: chooseScheme(ids.length) }
const endpoints = await Promise.all(ids.map(async (id) => await transport.open({ id, job: 'example' })))
const addresses = Object.fromEntries(endpoints.map((e) => [e.id, e.address]))
const members = endpoints.map((endpoint) => createErasureMember({ group, self: endpoint.id, addresses }, { endpoint }))
for (const m of members) await m.start()
for (const step of [1, 2, 3]) {
  const outcomes = await Promise.all(members.map(async (m, h) => await m.snapshot(step, encodeSnapshot(stateOf(h, step)))))
  console.log(`step ${step}: committed by ${outcomes.filter((o) => o.committed).length}/6`)
}
console.log('metrics of host-0:', members[0]?.metrics())

// 3. Hosts 2 and 5 die; a replacement rebuilds their state from the pieces the survivors hold.
await members[2]?.stop(); await endpoints[2]?.close()
await members[5]?.stop(); await endpoints[5]?.close()
const replacement = await transport.open({ id: 'replacement', job: 'example' })
for (const lost of [2, 5]) {
  const l1 = createErasureL1Source({ group, owner: `host-${lost}`, addresses, lost: [`host-${lost}`, lost === 2 ? 'host-5' : 'host-2'] }, { endpoint: replacement })
  const report = await l1.recover()
  const { step, state } = await l1.restore()
  console.log(`host-${lost} rebuilt at step ${step} (${report.bytesFetched} bytes fetched, ${report.chunksRebuilt} chunks decoded), bit-exact: ${stateDictsBitEqual(state, stateOf(lost, step))}`)
}
await replacement.close()
for (const m of members) await m.stop()
for (const e of endpoints) await e.close()
