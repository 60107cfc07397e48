import { ClosedError, throwIfAborted } from '@phalanx/core'
import { SHARD_ALIGN, checkEncodeArgs, checkKM, prepareReconstruct, type ErasureCodec } from './codec.js'

/** Most data shards the XOR codec accepts. */
export const XOR_MAX_K = 255

/** Id of the XOR parity code (also replication when k = 1). */
export const XOR_CODEC_ID = 'xor-parity/1'

function words (b: Uint8Array): Uint32Array | undefined {
  return b.byteOffset % 4 === 0 ? new Uint32Array(b.buffer, b.byteOffset, b.byteLength >>> 2) : undefined
}

/** `out = xor of sources`, 32-bit words when every buffer is aligned, bytes otherwise. */
function xorInto (out: Uint8Array, sources: readonly Uint8Array[]): void {
  const first = sources[0] as Uint8Array
  const o32 = words(out)
  const s32 = sources.map(words)
  if (o32 !== undefined && s32.every((w) => w !== undefined)) {
    const ws = s32 as Uint32Array[]
    o32.set(ws[0] as Uint32Array)
    // Two sources per pass halves the passes over `out`, which is what bounds this loop.
    let i = 1
    for (; i + 1 < ws.length; i += 2) {
      const a = ws[i] as Uint32Array
      const b = ws[i + 1] as Uint32Array
      for (let j = 0; j < o32.length; j++) o32[j] = (o32[j] as number) ^ (a[j] as number) ^ (b[j] as number)
    }
    if (i < ws.length) {
      const a = ws[i] as Uint32Array
      for (let j = 0; j < o32.length; j++) o32[j] = (o32[j] as number) ^ (a[j] as number)
    }
    return
  }
  out.set(first)
  for (let i = 1; i < sources.length; i++) {
    const a = sources[i] as Uint8Array
    for (let j = 0; j < out.length; j++) out[j] = (out[j] as number) ^ (a[j] as number)
  }
}

/**
 * Single parity (RAID-5 style, m = 1): the parity shard is the XOR of the k data shards, and any one
 * lost shard is the XOR of the others. With k = 1 it is plain replication. Pure TypeScript over
 * 32-bit word views; runs on the calling thread.
 */
export function createXorCodec (init: { k: number }): ErasureCodec {
  checkKM(init.k, 1, { maxK: XOR_MAX_K, maxM: 1 })
  let closed = false
  const codec: ErasureCodec = {
    id: XOR_CODEC_ID,
    k: init.k,
    m: 1,
    shardAlign: SHARD_ALIGN,
    async encode (data, parity, options = {}) {
      if (closed) throw new ClosedError('XOR codec is closed')
      throwIfAborted(options.signal)
      checkEncodeArgs(codec, data, parity)
      xorInto(parity[0] as Uint8Array, data)
    },
    async reconstruct (shards, present, options = {}) {
      if (closed) throw new ClosedError('XOR codec is closed')
      throwIfAborted(options.signal)
      const { missing, shards: all } = prepareReconstruct(codec, shards, present)
      const lost = missing[0]
      if (lost === undefined) return
      xorInto(all[lost] as Uint8Array, all.filter((_, i) => i !== lost))
    },
    close () { closed = true }
  }
  return codec
}
