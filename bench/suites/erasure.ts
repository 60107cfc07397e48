/**
 * Erasure benchmark. (1) Encode and reconstruct throughput of RS(4,2), RS(8,2) (native and wasm)
 * and XOR(4,1), streaming 64 MiB of data as 1 MiB stripes, each as a ratio to `Buffer.copy` of the
 * same bytes in the same run. (2) End-to-end recovery of a lost host's state (256 MiB) from k of
 * its pieces over loopback ZeroMQ (6 members in this process, RS(4,2)), with one host lost (no
 * decode) and two (one data piece decoded), vs restoring the same state from an L2 checkpoint with
 * its files evicted from the page cache (what a restarted host sees: the target ratio) and page-cached.
 *
 * Env: ERASURE_STATE_MIB (default 256), ERASURE_STREAM_MIB (default 64), ERASURE_MIN_MS (default 600),
 * ERASURE_CHUNK_KIB (default 8192), ERASURE_IN_FLIGHT (chunk requests per holder, default 4),
 * ERASURE_ONLY (`codecs` or `recovery`: run one part).
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createStateDict, stateDictsBitEqual, type Endpoint, type StateDict } from '@phalanx/core'
import { zmqTransport } from '@phalanx/transport/zmq'
import { createCheckpointStore } from '@phalanx/checkpoint'
import {
  chooseScheme, compileRseModule, createErasureL1Source, createErasureMember, createNativeRsCodec, createWasmRsCodec, createXorCodec,
  decodeSnapshot, encodeSnapshot, loadNativeReedSolomon, type ErasureCodec, type ErasureMember, type ExchangeGroup, type RecoveryReport
} from '@phalanx/checkpoint/erasure'
import { median, progress, writeBenchResult, type Metric } from '../report.js'

const STATE_MIB = Number(process.env.ERASURE_STATE_MIB ?? 256)
const STREAM_MIB = Number(process.env.ERASURE_STREAM_MIB ?? 64)
const MIN_MS = Number(process.env.ERASURE_MIN_MS ?? 600)
const CHUNK = Number(process.env.ERASURE_CHUNK_KIB ?? 8192) * 1024
const IN_FLIGHT = Number(process.env.ERASURE_IN_FLIGHT ?? 4)
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

/** Files of a checkpoint directory (recursively). */
function filesOf (dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => e.isDirectory() ? filesOf(join(dir, e.name)) : e.isFile() ? [join(dir, e.name)] : [])
}

/**
 * Drops the files' pages from the page cache without root: `dd iflag=nocache count=0` calls
 * posix_fadvise(POSIX_FADV_DONTNEED) on the whole file (clean pages only, hence the fsync at save).
 * Returns the pages still resident afterwards according to `fincore` (undefined without it).
 */
function evict (dir: string): number | undefined {
  const files = filesOf(dir)
  for (const f of files) execFileSync('dd', [`if=${f}`, 'iflag=nocache', 'count=0'], { stdio: 'ignore' })
  try {
    const out = execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', ...files], { encoding: 'utf8' })
    return out.split('\n').filter((l) => l.trim() !== '').reduce((a, l) => a + Number(l.trim()), 0)
  } catch {
    return undefined
  }
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
    for (const e of endpoints) members.push(createErasureMember({ group, self: e.id, addresses, prepareTimeoutMs: 120_000, chunkBytes: CHUNK }, { endpoint: e }))
    for (const mbr of members) await mbr.start()
    progress(`snapshotting ${n} x ${STATE_MIB} MiB over loopback zmq (RS(4,2), ${CHUNK >> 10} KiB chunks)`)
    const lostState = bigState(STATE_MIB, 1)
    const images = members.map((_, h) => encodeSnapshot(h === 1 ? lostState : bigState(STATE_MIB, 100 + h)))
    const t0 = performance.now()
    const outcomes = await Promise.all(members.map(async (mbr, h) => await mbr.snapshot(1, images[h] as Uint8Array)))
    if (!outcomes.every((o) => o.committed)) throw new Error(`snapshot not committed: ${JSON.stringify(outcomes)}`)
    const snapMs = performance.now() - t0
    images.length = 0
    const mem = members[0]?.metrics()
    progress(`committed in ${snapMs.toFixed(0)} ms; per host: own ${((mem?.snapshotBytes ?? 0) / 2 ** 20).toFixed(0)} MiB, others' pieces ${((mem?.pieceBytes ?? 0) / 2 ** 20).toFixed(0)} MiB (parity ${((mem?.parityBytes ?? 0) / 2 ** 20).toFixed(0)} MiB); encode ${mem?.encodeMs.toFixed(0)} ms`)
    metrics.snapshot_commit_6_hosts_ms = { value: snapMs, unit: 'ms', target: null, better: 'lower' }
    metrics.own_snapshot_memory_per_host_MiB = { value: (mem?.snapshotBytes ?? 0) / 2 ** 20, unit: 'MiB', target: null, better: 'lower' }
    metrics.held_pieces_memory_per_host_MiB = { value: (mem?.pieceBytes ?? 0) / 2 ** 20, unit: 'MiB', target: null, better: 'lower' }
    metrics.parity_memory_per_host_MiB = { value: (mem?.parityBytes ?? 0) / 2 ** 20, unit: 'MiB', target: null, better: 'lower' }
    metrics.snapshot_encode_GBps = { value: (mem?.encodeBytes ?? 0) / ((mem?.encodeMs ?? 1) / 1000) / 1e9, unit: 'GB/s', target: null, better: 'higher' }

    // Host 1 is lost; a replacement rebuilds its state: its k data pieces from 4 holders, no decode.
    await members[1]?.stop()
    await endpoints[1]?.close({ lingerMs: 0 })
    const replacement = await transport.open({ id: 'replacement', job: 'bench', requestTimeoutMs: 60_000 })
    endpoints.push(replacement)
    for (const [id, address] of Object.entries(addresses)) replacement.connect(id, address)
    const timeL1 = async (lost: string[], label: string): Promise<{ ms: number, report: RecoveryReport }> => {
      const l1 = createErasureL1Source({ group, owner: 'holder-1', lost, inFlightPerHolder: IN_FLIGHT }, { endpoint: replacement })
      const times: number[] = []
      let report: RecoveryReport | undefined
      for (let i = 0; i < 3; i++) {
        const t = performance.now()
        report = await l1.recover()
        const state = decodeSnapshot(report.bytes, { copy: false })
        times.push(performance.now() - t)
        if (!stateDictsBitEqual(state, lostState)) throw new Error(`${label}: L1 rebuild is not bit-exact`)
      }
      const r = report as RecoveryReport
      progress(`${label}: ${median(times).toFixed(0)} ms (${(r.bytesFetched / 2 ** 20).toFixed(0)} MiB fetched in ${r.chunksFetched} chunks, ${r.chunksRebuilt} rebuilt, codec ${r.reconstructMs.toFixed(0)} ms)`)
      return { ms: median(times), report: r }
    }
    const one = await timeL1(['holder-1'], 'L1 rebuild, 1 host lost')
    // What bounds a restore on this machine: materialising fresh memory for the state (page faults
    // on first touch), which L1 and L2 both pay, before any byte is moved.
    const touch: number[] = []
    for (let i = 0; i < 3; i++) {
      const t = performance.now()
      const fresh = new Uint8Array(STATE_MIB * 2 ** 20)
      for (let off = 0; off < fresh.byteLength; off += 4096) fresh[off] = 1
      touch.push(performance.now() - t)
    }
    progress(`first touch of ${STATE_MIB} MiB of fresh memory: ${median(touch).toFixed(0)} ms`)
    metrics.first_touch_256MiB_ms = { value: median(touch), unit: 'ms', target: null, better: 'lower' }
    // A second host (holder-3, holder of data piece 1 of holder-1's snapshot) is lost too: that piece is decoded.
    await members[3]?.stop()
    await endpoints[3]?.close({ lingerMs: 0 })
    const two = await timeL1(['holder-1', 'holder-3'], 'L1 rebuild, 2 hosts lost')

    const store = createCheckpointStore({ dir: join(scratch, 'l2') })
    const cached: number[] = []
    const cold: number[] = []
    let resident: number | undefined
    for (let i = 0; i < 3; i++) {
      const info = await store.save(lostState, { step: 10 + i })
      let t = performance.now()
      let r = await store.restore({ id: info.id })
      cached.push(performance.now() - t)
      if (!stateDictsBitEqual(r.state, lostState)) throw new Error('L2 restore is not bit-exact')
      resident = evict(join(scratch, 'l2', info.id))
      t = performance.now()
      r = await store.restore({ id: info.id })
      cold.push(performance.now() - t)
      if (!stateDictsBitEqual(r.state, lostState)) throw new Error('L2 restore is not bit-exact')
    }
    const l2Cached = median(cached)
    const l2Cold = median(cold)
    progress(`L2 restore: page-cached ${l2Cached.toFixed(0)} ms, page cache evicted ${l2Cold.toFixed(0)} ms (resident after eviction: ${resident ?? 'unknown'} bytes)`)
    metrics.l1_recover_256MiB_ms = { value: one.ms, unit: 'ms', target: null, better: 'lower' }
    metrics.l1_recover_256MiB_2_lost_ms = { value: two.ms, unit: 'ms', target: null, better: 'lower' }
    metrics.l2_restore_cold_ms = { value: l2Cold, unit: 'ms', target: null, better: 'lower' }
    metrics.l2_restore_page_cache_ms = { value: l2Cached, unit: 'ms', target: null, better: 'lower' }
    metrics.l1_vs_l2_cold_speedup = { value: l2Cold / one.ms, unit: 'x', target: 5, better: 'higher' }
    metrics.l1_vs_l2_page_cache_speedup = { value: l2Cached / one.ms, unit: 'x', target: null, better: 'higher' }
    metrics.l1_2_lost_vs_l2_cold_speedup = { value: l2Cold / two.ms, unit: 'x', target: null, better: 'higher' }
    extra.stateMiB = STATE_MIB
    extra.chunkBytes = CHUNK
    extra.inFlightPerHolder = IN_FLIGHT
    extra.l2Note = 'cold: every file of the checkpoint evicted from the page cache (dd iflag=nocache count=0 = posix_fadvise DONTNEED) before the read, as on a restarted host; page_cache: read right after the same restore'
    extra.l2ResidentBytesAfterEvict = resident ?? null
    extra.l1Report = { fetchMs: one.report.fetchMs, bytesFetched: one.report.bytesFetched, chunks: one.report.chunksFetched, rebuilt: one.report.chunksRebuilt }
    extra.l1Report2Lost = { fetchMs: two.report.fetchMs, reconstructMs: two.report.reconstructMs, bytesFetched: two.report.bytesFetched, chunks: two.report.chunksFetched, rebuilt: two.report.chunksRebuilt }
  } finally {
    for (const mbr of members) await mbr.stop()
    for (const e of endpoints) await e.close({ lingerMs: 0 })
    rmSync(scratch, { recursive: true, force: true })
  }
}

const only = process.env.ERASURE_ONLY
if (only !== 'recovery') await codecThroughput()
if (only !== 'codecs') await recovery()
writeBenchResult('erasure', metrics, extra)
