/**
 * Erasure benchmark. (1) Encode and reconstruct throughput of RS(4,2), RS(8,2) (native and wasm)
 * and XOR(4,1), streaming 64 MiB of data as 1 MiB stripes, each as a ratio to `Buffer.copy` of the
 * same bytes in the same run. (2) End-to-end recovery of a lost host's state (256 MiB) from k
 * shards per stripe over loopback ZeroMQ (6 members, RS(4,2)) vs restoring the same state from an
 * L2 checkpoint written fresh and fsynced (through the page cache), plus a raw O_DIRECT read of the
 * checkpoint's files when the file system allows it.
 *
 * Env: ERASURE_STATE_MIB (default 256), ERASURE_STREAM_MIB (default 64), ERASURE_MIN_MS (default 600).
 */
import { closeSync, constants, mkdtempSync, openSync, readdirSync, readSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createStateDict, stateDictsBitEqual, type Endpoint, type StateDict } from '@phalanx/core'
import { zmqTransport } from '@phalanx/transport/zmq'
import { createCheckpointStore } from '@phalanx/checkpoint'
import {
  chooseScheme, compileRseModule, createErasureL1Source, createErasureMember, createNativeRsCodec, createWasmRsCodec, createXorCodec,
  encodeSnapshot, loadNativeReedSolomon, type ErasureCodec, type ErasureMember, type ExchangeGroup
} from '@phalanx/checkpoint/erasure'
import { median, progress, writeBenchResult, type Metric } from '../report.js'

const STATE_MIB = Number(process.env.ERASURE_STATE_MIB ?? 256)
const STREAM_MIB = Number(process.env.ERASURE_STREAM_MIB ?? 64)
const MIN_MS = Number(process.env.ERASURE_MIN_MS ?? 600)
const STRIPE = 1 << 20
const metrics: Record<string, Metric> = {}
const extra: Record<string, unknown> = {}

/** Repeats `fn` (one pass over the stream) until MIN_MS passed and at least 3 passes; GB/s of `bytes` per pass. */
async function rate (bytes: number, fn: () => Promise<void> | void): Promise<number> {
  await fn()
  const times: number[] = []
  const t0 = performance.now()
  while (times.length < 3 || performance.now() - t0 < MIN_MS) {
    const t = performance.now()
    await fn()
    times.push(performance.now() - t)
  }
  return bytes / (median(times) / 1000) / 1e9
}

async function codecThroughput (): Promise<void> {
  const total = STREAM_MIB * 2 ** 20
  const src = Buffer.alloc(total)
  for (let i = 0; i < total; i += 4096) src.writeUInt32LE((i * 2654435761) >>> 0, i)
  const dst = Buffer.alloc(total)
  const copy = await rate(total, () => { for (let off = 0; off < total; off += STRIPE) src.copy(dst, off, off, off + STRIPE) })
  progress(`Buffer.copy baseline: ${copy.toFixed(2)} GB/s`)
  metrics['memcpy_1MiB_stripes_GBps'] = { value: copy, unit: 'GB/s', target: null, better: 'higher' }
  const binding = loadNativeReedSolomon()
  const rse = compileRseModule()
  const cases: Array<{ label: string, make: () => ErasureCodec, target: number | null }> = [
    { label: 'xor_4_1', make: () => createXorCodec({ k: 4 }), target: null }
  ]
  for (const [k, m] of [[4, 2], [8, 2]] as const) {
    if (binding !== undefined) cases.push({ label: `native_rs_${k}_${m}`, make: () => createNativeRsCodec({ k, m }, { binding }), target: 0.3 })
    cases.push({ label: `wasm_rs_${k}_${m}`, make: () => createWasmRsCodec({ k, m, module: rse }), target: null })
  }
  if (binding === undefined) extra.nativeUnavailable = true
  for (const c of cases) {
    const codec = c.make()
    const { k, m } = codec
    const shard = STRIPE / k
    const parity = new Uint8Array(m * shard * (total / STRIPE))
    const dataOf = (s: number): Uint8Array[] => Array.from({ length: k }, (_, i) => src.subarray(s * STRIPE + i * shard, s * STRIPE + (i + 1) * shard))
    const parityOf = (s: number): Uint8Array[] => Array.from({ length: m }, (_, j) => parity.subarray((s * m + j) * shard, (s * m + j + 1) * shard))
    const stripes = total / STRIPE
    const enc = await rate(total, async () => { for (let s = 0; s < stripes; s++) await codec.encode(dataOf(s), parityOf(s)) })
    // Reconstruct the first m data shards of every stripe (the worst case: all from parity).
    const out = Array.from({ length: m }, () => new Uint8Array(shard))
    const rec = await rate(total, async () => {
      for (let s = 0; s < stripes; s++) {
        const shards: Array<Uint8Array | undefined> = [...dataOf(s), ...parityOf(s)]
        for (let i = 0; i < m; i++) shards[i] = out[i]
        await codec.reconstruct(shards, shards.map((_, i) => i >= m))
      }
    })
    if (Buffer.compare(out[0] as Uint8Array, src.subarray((stripes - 1) * STRIPE, (stripes - 1) * STRIPE + shard)) !== 0) throw new Error(`${c.label}: reconstruct is not byte-exact`)
    codec.close()
    progress(`${c.label}: encode ${enc.toFixed(2)} GB/s (${(enc / copy).toFixed(3)}x copy), reconstruct ${rec.toFixed(2)} GB/s (${(rec / copy).toFixed(3)}x)`)
    metrics[`${c.label}_encode_GBps`] = { value: enc, unit: 'GB/s', target: null, better: 'higher' }
    metrics[`${c.label}_reconstruct_GBps`] = { value: rec, unit: 'GB/s', target: null, better: 'higher' }
    metrics[`${c.label}_encode_vs_copy`] = { value: enc / copy, unit: 'x', target: c.target, better: 'higher' }
    metrics[`${c.label}_reconstruct_vs_copy`] = { value: rec / copy, unit: 'x', target: c.target, better: 'higher' }
  }
}

function bigState (mib: number, seed: number): StateDict {
  const total = Math.floor((mib * 2 ** 20 - 4096) / 4)
  const parts = [0.5, 0.25, 0.125, 0.125]
  let left = total
  const tensors = parts.map((p, i) => {
    const n = i === parts.length - 1 ? left : Math.floor(total * p)
    left -= n
    const data = new Float32Array(n)
    for (let j = 0; j < n; j += 1024) data[j] = j * 1e-3 + seed
    return { name: `layer${i}/w`, shape: [n], dtype: 'float32' as const, data }
  })
  return createStateDict(tensors, { step: seed, epoch: 0 })
}

/**
 * Reads every file of a directory with O_DIRECT in 8 MiB reads; undefined when unsupported. O_DIRECT
 * needs a memory address aligned to the block size, which JS cannot ask for: probe skews of 512 B.
 */
function directRead (dir: string): number | undefined {
  const O_DIRECT = (constants as Record<string, number>).O_DIRECT
  if (O_DIRECT === undefined) return undefined
  const files = readdirSync(dir).map((name) => join(dir, name)).filter((f) => statSync(f).isFile() && statSync(f).size >= 4096)
  const first = files[0]
  if (first === undefined) return undefined
  const buf = Buffer.alloc((8 << 20) + 4096)
  let aligned: Buffer | undefined
  const probe = openSync(first, constants.O_RDONLY | O_DIRECT)
  try {
    for (let skew = 0; skew < 4096 && aligned === undefined; skew += 512) {
      try { readSync(probe, buf, skew, 4096, 0); aligned = buf.subarray(skew, skew + (8 << 20)) } catch { /* misaligned: next skew */ }
    }
  } finally { closeSync(probe) }
  if (aligned === undefined) return undefined
  const target = aligned
  const t0 = performance.now()
  for (const file of files) {
    const fd = openSync(file, constants.O_RDONLY | O_DIRECT)
    try {
      let pos = 0
      for (;;) {
        const got = readSync(fd, target, 0, target.length, pos)
        pos += got
        if (got < target.length) break
      }
    } finally { closeSync(fd) }
  }
  return performance.now() - t0
}

async function recovery (): Promise<void> {
  const transport = zmqTransport()
  const n = 6
  const ids = Array.from({ length: n }, (_, i) => `holder-${i}`)
  const group: ExchangeGroup = { members: ids, scheme: chooseScheme(n) }
  const endpoints: Endpoint[] = []
  const members: ErasureMember[] = []
  const scratch = mkdtempSync(join(tmpdir(), 'phx-bench-erasure-'))
  try {
    for (const id of ids) endpoints.push(await transport.open({ id, job: 'bench', listen: 'tcp://127.0.0.1:0', requestTimeoutMs: 60_000 }))
    const addresses = Object.fromEntries(endpoints.map((e) => [e.id, e.address]))
    for (const e of endpoints) members.push(createErasureMember({ group, self: e.id, addresses, prepareTimeoutMs: 120_000 }, { endpoint: e }))
    for (const mbr of members) await mbr.start()
    progress(`snapshotting ${n} x ${STATE_MIB} MiB over loopback zmq (RS(4,2))`)
    const lostState = bigState(STATE_MIB, 1)
    const t0 = performance.now()
    const outcomes = await Promise.all(members.map(async (mbr, h) => await mbr.snapshot(1, encodeSnapshot(h === 1 ? lostState : bigState(STATE_MIB, 100 + h)))))
    if (!outcomes.every((o) => o.committed)) throw new Error(`snapshot not committed: ${JSON.stringify(outcomes)}`)
    const snapMs = performance.now() - t0
    const mem = members[0]?.metrics()
    progress(`committed in ${snapMs.toFixed(0)} ms; per host: snapshot ${((mem?.snapshotBytes ?? 0) / 2 ** 20).toFixed(0)} MiB, parity ${((mem?.parityBytes ?? 0) / 2 ** 20).toFixed(0)} MiB`)
    metrics.snapshot_commit_6_hosts_ms = { value: snapMs, unit: 'ms', target: null, better: 'lower' }
    metrics.parity_memory_per_host_MiB = { value: (mem?.parityBytes ?? 0) / 2 ** 20, unit: 'MiB', target: null, better: 'lower' }

    // Host 1 is lost; host 0 (a survivor) rebuilds its state from k shards per stripe.
    await members[1]?.stop()
    await endpoints[1]?.close({ lingerMs: 0 })
    const l1 = createErasureL1Source({ group, owner: 'holder-1', lost: ['holder-1'] }, { endpoint: endpoints[0] as Endpoint })
    const l1Times: number[] = []
    let report
    for (let i = 0; i < 3; i++) {
      const t = performance.now()
      const r = await l1.restore()
      l1Times.push(performance.now() - t)
      if (!stateDictsBitEqual(r.state, lostState)) throw new Error('L1 rebuild is not bit-exact')
      report = await l1.recover()
    }
    progress(`L1 rebuild ${median(l1Times).toFixed(0)} ms (fetch ${report?.fetchMs.toFixed(0)} ms, decode ${report?.reconstructMs.toFixed(0)} ms, ${((report?.bytesFetched ?? 0) / 2 ** 20).toFixed(0)} MiB fetched)`)

    const store = createCheckpointStore({ dir: join(scratch, 'l2') })
    const l2Times: number[] = []
    const directTimes: number[] = []
    for (let i = 0; i < 3; i++) {
      const info = await store.save(lostState, { step: 10 + i })
      const t = performance.now()
      const r = await store.restore({ id: info.id })
      l2Times.push(performance.now() - t)
      if (!stateDictsBitEqual(r.state, lostState)) throw new Error('L2 restore is not bit-exact')
      const d = directRead(join(scratch, 'l2', info.id))
      if (d !== undefined) directTimes.push(d)
    }
    const l1Ms = median(l1Times)
    const l2Ms = median(l2Times)
    progress(`L2 restore (fresh write + fsync, read through the page cache) ${l2Ms.toFixed(0)} ms; O_DIRECT raw read ${directTimes.length > 0 ? `${median(directTimes).toFixed(0)} ms` : 'unsupported'}`)
    metrics.l1_recover_256MiB_ms = { value: l1Ms, unit: 'ms', target: null, better: 'lower' }
    metrics.l2_restore_page_cache_ms = { value: l2Ms, unit: 'ms', target: null, better: 'lower' }
    metrics.l1_vs_l2_speedup = { value: l2Ms / l1Ms, unit: 'x', target: 5, better: 'higher' }
    if (directTimes.length > 0) {
      metrics.l2_raw_read_o_direct_ms = { value: median(directTimes), unit: 'ms', target: null, better: 'lower' }
      metrics.l1_vs_l2_o_direct_plus_decode = { value: (median(directTimes) + l2Ms) / l1Ms, unit: 'x', target: null, better: 'higher' }
    }
    extra.stateMiB = STATE_MIB
    extra.pageCacheCaveat = 'L2 restore reads a checkpoint just written and fsynced: it is served from the page cache (the store has no O_DIRECT path); the O_DIRECT metric is a raw read of the same files, uncached'
    extra.l1Report = { fetchMs: report?.fetchMs, reconstructMs: report?.reconstructMs, bytesFetched: report?.bytesFetched, shards: report?.shardsFetched }
  } finally {
    for (const mbr of members) await mbr.stop()
    for (const e of endpoints) await e.close({ lingerMs: 0 })
    rmSync(scratch, { recursive: true, force: true })
  }
}

await codecThroughput()
await recovery()
writeBenchResult('erasure', metrics, extra)
