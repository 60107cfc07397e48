import { InsufficientShardsError, InvalidParametersError, type AbortOptions } from '@phalanx/core'

/**
 * A systematic erasure code over `k` data shards and `m` parity shards of equal size: any `k` of the
 * `k + m` shards rebuild all of them. Implementations: {@link createXorCodec} (m = 1, pure TS),
 * {@link createWasmRsCodec} (Reed-Solomon, Vandermonde over GF(2^8), WebAssembly) and
 * {@link createNativeRsCodec} (Reed-Solomon, Cauchy bit-matrix, N-API addon in the libuv pool).
 *
 * Codecs only do the arithmetic. Integrity (CRC-32C per shard), padding and the record of which
 * codec made a stripe live in the stripe layer ({@link encodeStripe} / {@link decodeStripe}).
 * Parity of two codecs with the same k and m differs: shards are never interchangeable, so every
 * stripe records {@link id}.
 */
export interface ErasureCodec {
  /** Stable name of the code and its parity layout, recorded with every stripe, e.g. `'rs-cauchy-gf256/ronomon@6'`. */
  readonly id: string
  /** Data shards per stripe. */
  readonly k: number
  /** Parity shards per stripe. */
  readonly m: number
  /** Shard sizes must be a multiple of this many bytes (8 for every codec here). */
  readonly shardAlign: number
  /**
   * Computes the `m` parity shards of `data` (`k` shards) into `parity` (`m` shards), all of the
   * same size, a multiple of {@link shardAlign}. `data` is not modified.
   * @throws `InvalidParametersError` on wrong counts or sizes
   */
  encode(data: readonly Uint8Array[], parity: readonly Uint8Array[], options?: AbortOptions): Promise<void>
  /**
   * Rebuilds, in place, every shard whose `present` flag is false from the present ones
   * (`shards` has `k + m` entries: data first, then parity). A missing entry may be `undefined`
   * (a buffer is allocated) or a buffer to overwrite. At least `k` shards must be present.
   * @throws `InsufficientShardsError` when fewer than `k` are present; `InvalidParametersError` on wrong counts or sizes
   */
  reconstruct(shards: Array<Uint8Array | undefined>, present: readonly boolean[], options?: AbortOptions): Promise<void>
  /** Releases native or wasm memory held by the codec. Idempotent; the codec is unusable afterwards. */
  close(): void
}

/** Shard alignment every built-in codec uses (the native codec's requirement; XOR works on 32-bit words). */
export const SHARD_ALIGN = 8

/** Rounds `bytes` up to a multiple of `align`. */
export function alignUp (bytes: number, align: number = SHARD_ALIGN): number {
  return Math.ceil(bytes / align) * align
}

/** Checks k and m against a codec's limits. */
export function checkKM (k: number, m: number, limits: { maxK: number, maxM: number, minM?: number }): void {
  if (!Number.isInteger(k) || k < 1 || k > limits.maxK) throw new InvalidParametersError(`k must be an integer in 1..${limits.maxK}, got ${k}`)
  const minM = limits.minM ?? 1
  if (!Number.isInteger(m) || m < minM || m > limits.maxM) throw new InvalidParametersError(`m must be an integer in ${minM}..${limits.maxM}, got ${m}`)
}

/** Validates encode arguments; returns the shard size. */
export function checkEncodeArgs (codec: Pick<ErasureCodec, 'k' | 'm' | 'shardAlign' | 'id'>, data: readonly Uint8Array[], parity: readonly Uint8Array[]): number {
  if (data.length !== codec.k) throw new InvalidParametersError(`${codec.id}: expected ${codec.k} data shards, got ${data.length}`)
  if (parity.length !== codec.m) throw new InvalidParametersError(`${codec.id}: expected ${codec.m} parity shards, got ${parity.length}`)
  const size = (data[0] as Uint8Array).byteLength
  checkShardSize(codec, size)
  for (const s of [...data, ...parity]) {
    if (!(s instanceof Uint8Array)) throw new InvalidParametersError(`${codec.id}: shards must be Uint8Arrays`)
    if (s.byteLength !== size) throw new InvalidParametersError(`${codec.id}: all shards must have ${size} bytes, one has ${s.byteLength}`)
  }
  assertNoOverlap(codec.id, [...data, ...parity])
  return size
}

function checkShardSize (codec: Pick<ErasureCodec, 'shardAlign' | 'id'>, size: number): void {
  if (size === 0 || size % codec.shardAlign !== 0) throw new InvalidParametersError(`${codec.id}: shard size ${size} is not a positive multiple of ${codec.shardAlign}`)
}

/**
 * Validates reconstruct arguments, allocates missing buffers, and returns the shard size and the
 * indices to rebuild (empty when nothing is missing).
 */
export function prepareReconstruct (codec: Pick<ErasureCodec, 'k' | 'm' | 'shardAlign' | 'id'>, shards: Array<Uint8Array | undefined>, present: readonly boolean[]): { size: number, missing: number[], shards: Uint8Array[] } {
  const n = codec.k + codec.m
  if (shards.length !== n) throw new InvalidParametersError(`${codec.id}: expected ${n} shard slots, got ${shards.length}`)
  if (present.length !== n) throw new InvalidParametersError(`${codec.id}: expected ${n} present flags, got ${present.length}`)
  let size = -1
  let count = 0
  const missing: number[] = []
  for (let i = 0; i < n; i++) {
    const s = shards[i]
    if (present[i] === true) {
      if (!(s instanceof Uint8Array)) throw new InvalidParametersError(`${codec.id}: shard ${i} is flagged present but has no buffer`)
      if (size === -1) size = s.byteLength
      else if (s.byteLength !== size) throw new InvalidParametersError(`${codec.id}: shard ${i} has ${s.byteLength} bytes, others ${size}`)
      count++
    } else {
      missing.push(i)
    }
  }
  if (count < codec.k) {
    throw new InsufficientShardsError(`${codec.id}: ${count} of ${n} shards present, ${codec.k} needed`, { details: { present: count, k: codec.k, m: codec.m } })
  }
  checkShardSize(codec, size)
  for (let i = 0; i < n; i++) {
    const s = shards[i]
    if (present[i] === true || s === undefined) continue
    if (s.byteLength !== size) throw new InvalidParametersError(`${codec.id}: output buffer for shard ${i} has ${s.byteLength} bytes, needs ${size}`)
  }
  assertNoOverlap(codec.id, shards)
  for (const i of missing) if (shards[i] === undefined) shards[i] = new Uint8Array(size)
  return { size, missing, shards: shards as Uint8Array[] }
}

/**
 * Throws `InvalidParametersError` when two shard slots share memory (the same shard passed twice):
 * rebuilding into one would silently corrupt the other.
 */
export function assertNoOverlap (id: string, shards: ReadonlyArray<Uint8Array | undefined>): void {
  for (let i = 0; i < shards.length; i++) {
    const a = shards[i]
    if (a === undefined) continue
    for (let j = i + 1; j < shards.length; j++) {
      const b = shards[j]
      if (b === undefined || b.buffer !== a.buffer) continue
      if (a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength) {
        throw new InvalidParametersError(`${id}: shards ${i} and ${j} share memory (a shard was passed twice)`, { details: { a: i, b: j } })
      }
    }
  }
}
