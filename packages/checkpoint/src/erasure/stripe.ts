import { z } from 'zod'
import {
  CodecMismatchError, InsufficientShardsError, InvalidParametersError, MalformedMessageError, crc32c,
  type AbortOptions
} from '@phalanx/core'
import { SHARD_ALIGN, alignUp, type ErasureCodec } from './codec.js'

/**
 * What is recorded with every stripe: which code made it, its shape, how many real bytes each data
 * shard carries (the rest is zero padding) and the CRC-32C of every shard, data and parity.
 */
export interface StripeHeader {
  /** {@link ErasureCodec.id} of the codec that computed the parity. */
  readonly codec: string
  readonly k: number
  readonly m: number
  /** Bytes of every shard (a multiple of 8). */
  readonly shardSize: number
  /** Real bytes in each of the k data shards (≤ shardSize). */
  readonly lengths: readonly number[]
  /** CRC-32C of each of the k + m shards, padding included. */
  readonly crcs: readonly number[]
}

const u32 = z.number().int().nonnegative().max(0xffffffff)

/** Schema of a {@link StripeHeader} received from a peer. */
export const stripeHeaderSchema = z.object({
  codec: z.string().min(1).max(128),
  k: z.number().int().min(1).max(255),
  m: z.number().int().min(1).max(255),
  shardSize: z.number().int().positive().max(2 ** 31),
  lengths: z.array(z.number().int().nonnegative()).max(255),
  crcs: z.array(u32).max(512)
}).strict()

/** Validates a peer-supplied stripe header; throws `MalformedMessageError`. */
export function parseStripeHeader (value: unknown): StripeHeader {
  const r = stripeHeaderSchema.safeParse(value)
  if (!r.success) throw new MalformedMessageError('Stripe header failed validation', { details: { issues: r.error.issues.slice(0, 3).map((i) => `${i.path.join('.')}: ${i.message}`) } })
  const h = r.data
  if (h.lengths.length !== h.k || h.crcs.length !== h.k + h.m || h.lengths.some((l) => l > h.shardSize)) {
    throw new MalformedMessageError('Stripe header is inconsistent', { details: { k: h.k, m: h.m, lengths: h.lengths.length, crcs: h.crcs.length } })
  }
  return h
}

/** A stripe: its header and its k + m shards (data first). */
export interface EncodedStripe {
  readonly header: StripeHeader
  readonly shards: readonly Uint8Array[]
}

/** Throws `CodecMismatchError` when `header` was not made by `codec` (another code, or other k, m). */
export function assertCodecMatches (codec: Pick<ErasureCodec, 'id' | 'k' | 'm'>, header: Pick<StripeHeader, 'codec' | 'k' | 'm'>): void {
  if (header.codec !== codec.id || header.k !== codec.k || header.m !== codec.m) {
    throw new CodecMismatchError(`Stripe was encoded by ${header.codec} (${header.k}+${header.m}); this codec is ${codec.id} (${codec.k}+${codec.m}) and their shards are not interchangeable`,
      { details: { stripe: header.codec, codec: codec.id, k: header.k, m: header.m } })
  }
}

/**
 * Encodes k pieces of possibly different lengths (e.g. one piece of each of k hosts' snapshots):
 * each is zero-padded to `shardSize` (default: the longest, rounded up to 8 bytes) in one buffer;
 * parity follows in the same buffer.
 */
export async function encodePieces (codec: ErasureCodec, pieces: readonly Uint8Array[], options: AbortOptions & { shardSize?: number } = {}): Promise<EncodedStripe> {
  if (pieces.length !== codec.k) throw new InvalidParametersError(`${codec.id}: expected ${codec.k} pieces, got ${pieces.length}`)
  const longest = Math.max(...pieces.map((p) => p.byteLength))
  const shardSize = options.shardSize ?? Math.max(SHARD_ALIGN, alignUp(longest, codec.shardAlign))
  if (shardSize < longest) throw new InvalidParametersError(`Shard size ${shardSize} is below the longest piece (${longest} bytes)`)
  const n = codec.k + codec.m
  const all = new Uint8Array(n * shardSize)
  const shards = Array.from({ length: n }, (_, i) => all.subarray(i * shardSize, (i + 1) * shardSize))
  pieces.forEach((p, i) => { all.set(p, i * shardSize) })
  await codec.encode(shards.slice(0, codec.k), shards.slice(codec.k), options)
  return {
    header: { codec: codec.id, k: codec.k, m: codec.m, shardSize, lengths: pieces.map((p) => p.byteLength), crcs: shards.map((s) => crc32c(s)) },
    shards
  }
}

/**
 * Splits `data` into k shards of `ceil(len / k)` bytes rounded up to 8 (the last ones zero-padded),
 * computes the m parity shards and the CRC of each.
 */
export async function encodeStripe (codec: ErasureCodec, data: Uint8Array, options: AbortOptions = {}): Promise<EncodedStripe> {
  const shardSize = Math.max(SHARD_ALIGN, alignUp(Math.ceil(data.byteLength / codec.k), codec.shardAlign))
  const pieces = Array.from({ length: codec.k }, (_, i) => data.subarray(Math.min(data.byteLength, i * shardSize), Math.min(data.byteLength, (i + 1) * shardSize)))
  return await encodePieces(codec, pieces, { ...options, shardSize })
}

/** One received shard: its index in the stripe (0..k-1 data, k..k+m-1 parity) and its bytes. */
export interface IndexedShard {
  readonly index: number
  readonly bytes: Uint8Array
}

/** Result of {@link decodeStripe}. */
export interface DecodedStripe {
  /** The k data pieces, padding removed (views). */
  readonly pieces: readonly Uint8Array[]
  /** Indices whose bytes failed their CRC or size check (treated as missing). */
  readonly corrupt: readonly number[]
  /** Indices that were rebuilt. */
  readonly rebuilt: readonly number[]
}

/**
 * Rebuilds a stripe's data from whatever shards arrived. Every shard is checked against the header's
 * CRC first: a corrupt (or wrongly sized) shard is treated as missing. Throws `CodecMismatchError`
 * when the stripe was made by another codec, `InvalidParametersError` for an index out of range or
 * given twice, and `InsufficientShardsError` when fewer than k intact shards remain.
 */
export async function decodeStripe (codec: ErasureCodec, header: StripeHeader, received: readonly IndexedShard[], options: AbortOptions = {}): Promise<DecodedStripe> {
  assertCodecMatches(codec, header)
  const n = header.k + header.m
  const slots: Array<Uint8Array | undefined> = new Array<Uint8Array | undefined>(n).fill(undefined)
  const present: boolean[] = new Array<boolean>(n).fill(false)
  const corrupt: number[] = []
  const seen = new Set<number>()
  for (const s of received) {
    if (!Number.isInteger(s.index) || s.index < 0 || s.index >= n) throw new InvalidParametersError(`Shard index ${s.index} is outside 0..${n - 1}`)
    if (seen.has(s.index)) throw new InvalidParametersError(`Shard ${s.index} was given twice`, { details: { index: s.index } })
    seen.add(s.index)
    if (s.bytes.byteLength !== header.shardSize || crc32c(s.bytes) !== header.crcs[s.index]) {
      corrupt.push(s.index)
      continue
    }
    slots[s.index] = s.bytes
    present[s.index] = true
  }
  const intact = present.filter(Boolean).length
  if (intact < header.k) {
    throw new InsufficientShardsError(`Only ${intact} intact shards of a ${header.k}+${header.m} stripe (${corrupt.length} corrupt, ${n - seen.size} missing); ${header.k} needed`,
      { details: { intact, corrupt: corrupt.length, missing: n - seen.size, k: header.k, m: header.m } })
  }
  const rebuilt: number[] = []
  for (let i = 0; i < header.k; i++) if (!present[i]) rebuilt.push(i)
  if (rebuilt.length > 0) {
    // Only the data shards are needed: ask for those, leave missing parity alone.
    const work = slots.slice()
    const flags = present.slice()
    for (let i = header.k; i < n; i++) {
      if (!flags[i]) { work[i] = new Uint8Array(header.shardSize) }
    }
    await codec.reconstruct(work, flags, options)
    for (const i of rebuilt) slots[i] = work[i]
  }
  return {
    pieces: Array.from({ length: header.k }, (_, i) => (slots[i] as Uint8Array).subarray(0, header.lengths[i])),
    corrupt,
    rebuilt
  }
}

/** Concatenates the data pieces of a decoded stripe (the original bytes of {@link encodeStripe}). */
export function joinPieces (pieces: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(pieces.reduce((a, p) => a + p.byteLength, 0))
  let off = 0
  for (const p of pieces) { out.set(p, off); off += p.byteLength }
  return out
}
