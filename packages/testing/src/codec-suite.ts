/**
 * Erasure-codec compliance suite: the same cases run against every codec (XOR, wasm Reed-Solomon,
 * native Reed-Solomon) and the stripe layer on top of it.
 *
 * Cases: parity is deterministic and depends on the data; every erasure pattern of up to m shards
 * (every subset of k survivors, for small k + m) rebuilds the missing shards byte-exact, into given
 * buffers or new ones; fewer than k shards is `InsufficientShardsError`; wrong counts, sizes,
 * alignment, a shard passed twice, flags without buffers are `InvalidParametersError`; stripes of
 * sizes not divisible by k round-trip; a corrupted shard fails its CRC and is treated as missing;
 * a duplicate or out-of-range shard index is rejected; a stripe made by another codec is
 * `CodecMismatchError`; hundreds of encode/reconstruct cycles stay correct (and, for codecs that
 * expose a heap, do not grow it); a closed codec rejects with `ClosedError`.
 *
 * The suite types are structural so `@phalanx/testing` does not import `@phalanx/checkpoint`.
 *
 * @example
 * ```ts
 * import { codecComplianceSuite } from '@phalanx/testing/codec'
 * import { createXorCodec, encodeStripe, decodeStripe } from '@phalanx/checkpoint/erasure'
 *
 * codecComplianceSuite('xor', { create: ({ k }) => createXorCodec({ k }), shapes: [{ k: 3, m: 1 }], stripe: { encodeStripe, decodeStripe } })
 * ```
 *
 * @module
 */
import { describe, expect, it } from 'vitest'

/** The codec contract as the suite sees it (structurally the same as `ErasureCodec`). */
export interface SuiteCodec {
  readonly id: string
  readonly k: number
  readonly m: number
  readonly shardAlign: number
  encode(data: readonly Uint8Array[], parity: readonly Uint8Array[]): Promise<void>
  reconstruct(shards: Array<Uint8Array | undefined>, present: readonly boolean[]): Promise<void>
  close(): void
  /** Present on codecs with a wasm heap: its size, for the leak check. */
  heapBytes?: () => number
}

/** The stripe header fields the suite reads. */
export interface SuiteStripeHeader {
  readonly codec: string
  readonly k: number
  readonly m: number
  readonly shardSize: number
  readonly lengths: readonly number[]
  readonly crcs: readonly number[]
}

/** The stripe layer functions under test. */
export interface SuiteStripe {
  encodeStripe(codec: SuiteCodec, data: Uint8Array): Promise<{ header: SuiteStripeHeader, shards: readonly Uint8Array[] }>
  decodeStripe(codec: SuiteCodec, header: SuiteStripeHeader, shards: ReadonlyArray<{ index: number, bytes: Uint8Array }>): Promise<{ pieces: readonly Uint8Array[], corrupt: readonly number[], rebuilt: readonly number[] }>
}

/** How the suite builds and judges one codec. */
export interface CodecSuiteOptions {
  /** Creates the codec under test. */
  create(shape: { k: number, m: number }): SuiteCodec
  /** The (k, m) shapes to run; each must be accepted by `create`. */
  shapes: ReadonlyArray<{ k: number, m: number }>
  /** The stripe layer (from `@phalanx/checkpoint/erasure`). */
  stripe: SuiteStripe
  /** A different codec of the same shape, for the mismatch case. @default none (case skipped by design: mismatch of k, m is still checked) */
  other?: (shape: { k: number, m: number }) => SuiteCodec
  /** Shapes `create` must reject with `InvalidParametersError`. @default [] */
  invalidShapes?: ReadonlyArray<{ k: number, m: number }>
  /** Encode/reconstruct cycles of the endurance case. @default 300 */
  cycles?: number
  /** Shard size of the erasure-pattern cases, bytes. @default 1024 */
  shardSize?: number
}

function rng (seed: number): () => number {
  let s = seed >>> 0
  return () => { s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x9e3779b9) >>> 0; return s }
}

function randomBytes (n: number, seed: number): Uint8Array {
  const next = rng(seed)
  const words = new Uint32Array(Math.ceil(n / 4))
  for (let i = 0; i < words.length; i++) words[i] = next()
  return new Uint8Array(words.buffer, 0, n)
}

/** Byte equality without the matcher's per-element diffing (which is slow on large arrays). */
function same (a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  return a !== undefined && b !== undefined && Buffer.compare(a, b) === 0
}

/** Every subset of {0..n-1} of size r (lexicographic). */
function subsets (n: number, r: number): number[][] {
  const out: number[][] = []
  const walk = (start: number, acc: number[]): void => {
    if (acc.length === r) { out.push(acc.slice()); return }
    for (let i = start; i < n; i++) { acc.push(i); walk(i + 1, acc); acc.pop() }
  }
  walk(0, [])
  return out
}

function binom (n: number, r: number): number {
  let x = 1
  for (let i = 0; i < r; i++) x = (x * (n - i)) / (i + 1)
  return Math.round(x)
}

async function encoded (codec: SuiteCodec, size: number, seed: number): Promise<Uint8Array[]> {
  const data = Array.from({ length: codec.k }, (_, i) => randomBytes(size, seed * 31 + i))
  const parity = Array.from({ length: codec.m }, () => new Uint8Array(size))
  await codec.encode(data, parity)
  return [...data, ...parity]
}

/**
 * Registers the compliance cases of one codec under `describe(name)`.
 */
export function codecComplianceSuite (name: string, options: CodecSuiteOptions): void {
  const size = options.shardSize ?? 1024
  const cycles = options.cycles ?? 300
  describe(`erasure codec compliance: ${name}`, () => {
    for (const shape of options.shapes) {
      const label = `${shape.k}+${shape.m}`
      describe(label, () => {
        it('reports its shape and an id', () => {
          const c = options.create(shape)
          try {
            expect(c.k).toBe(shape.k)
            expect(c.m).toBe(shape.m)
            expect(c.id.length).toBeGreaterThan(0)
            expect(c.shardAlign).toBeGreaterThan(0)
          } finally { c.close() }
        })

        it('computes deterministic parity that depends on every data shard', async () => {
          const c = options.create(shape)
          try {
            const a = await encoded(c, size, 1)
            const b = await encoded(c, size, 1)
            for (let j = shape.k; j < shape.k + shape.m; j++) expect(same(b[j], a[j])).toBe(true)
            // Changing any one data byte changes every parity shard (MDS codes: no parity ignores a data shard).
            for (let i = 0; i < shape.k; i++) {
              const data = a.slice(0, shape.k).map((d) => d.slice())
              ;(data[i] as Uint8Array)[17] = ((data[i] as Uint8Array)[17] as number) ^ 0x5a
              const parity = Array.from({ length: shape.m }, () => new Uint8Array(size))
              await c.encode(data, parity)
              for (let j = 0; j < shape.m; j++) expect(same(parity[j], a[shape.k + j])).toBe(false)
            }
          } finally { c.close() }
        })

        it('rebuilds every pattern of up to m lost shards from the k others, byte-exact', async () => {
          const c = options.create(shape)
          const n = shape.k + shape.m
          try {
            const original = await encoded(c, size, 2)
            let patterns = 0
            for (let lost = 1; lost <= shape.m; lost++) {
              // Every subset for small stripes; a seeded sample of at most 60 otherwise.
              let all = subsets(n, lost)
              if (binom(n, lost) > 60) { const r = rng(lost); all = all.filter(() => (r() % 1000) < (60_000 / all.length)) }
              for (const missing of all) {
                const shards: Array<Uint8Array | undefined> = original.map((s, i) => missing.includes(i) ? (i % 2 === 0 ? undefined : new Uint8Array(size).fill(0xee)) : s.slice())
                const present = original.map((_, i) => !missing.includes(i))
                await c.reconstruct(shards, present)
                for (let i = 0; i < n; i++) expect(same(shards[i], original[i]), `pattern [${missing.join(',')}] shard ${i}`).toBe(true)
                patterns++
              }
            }
            expect(patterns).toBeGreaterThan(0)
          } finally { c.close() }
        })

        it('leaves present shards untouched and does nothing when none is missing', async () => {
          const c = options.create(shape)
          try {
            const original = await encoded(c, size, 3)
            const shards = original.map((s) => s.slice())
            await c.reconstruct(shards, shards.map(() => true))
            expect(shards.every((s, i) => same(s, original[i]))).toBe(true)
          } finally { c.close() }
        })

        it('rejects fewer than k shards with InsufficientShardsError', async () => {
          const c = options.create(shape)
          try {
            const original = await encoded(c, size, 4)
            const present = original.map((_, i) => i > shape.m)
            const shards: Array<Uint8Array | undefined> = original.map((s, i) => present[i] === true ? s : undefined)
            await expect(c.reconstruct(shards, present)).rejects.toMatchObject({ name: 'InsufficientShardsError' })
          } finally { c.close() }
        })

        it('rejects wrong counts, sizes, alignment, missing buffers and a shard passed twice with InvalidParametersError', async () => {
          const c = options.create(shape)
          try {
            const data = Array.from({ length: shape.k }, (_, i) => randomBytes(size, i))
            const parity = Array.from({ length: shape.m }, () => new Uint8Array(size))
            await expect(c.encode(data.slice(1), parity)).rejects.toMatchObject({ name: 'InvalidParametersError' })
            await expect(c.encode(data, [...parity, new Uint8Array(size)])).rejects.toMatchObject({ name: 'InvalidParametersError' })
            await expect(c.encode([...data.slice(1), new Uint8Array(size + c.shardAlign)], parity)).rejects.toMatchObject({ name: 'InvalidParametersError' })
            const odd = c.shardAlign > 1 ? size + 1 : 0
            await expect(c.encode(data.map(() => new Uint8Array(odd)), parity.map(() => new Uint8Array(odd)))).rejects.toMatchObject({ name: 'InvalidParametersError' })
            const twice = [data[0] as Uint8Array, ...data.slice(1)]
            await expect(c.encode(twice, [data[0] as Uint8Array, ...parity.slice(1)])).rejects.toMatchObject({ name: 'InvalidParametersError' })
            const shards = await encoded(c, size, 5)
            const n = shape.k + shape.m
            await expect(c.reconstruct(shards.slice(1), shards.slice(1).map(() => true))).rejects.toMatchObject({ name: 'InvalidParametersError' })
            const holes: Array<Uint8Array | undefined> = shards.slice()
            holes[0] = undefined
            await expect(c.reconstruct(holes, new Array<boolean>(n).fill(true))).rejects.toMatchObject({ name: 'InvalidParametersError' })
            const dup: Array<Uint8Array | undefined> = shards.slice()
            dup[0] = dup[1]
            await expect(c.reconstruct(dup, dup.map((_, i) => i !== 0))).rejects.toMatchObject({ name: 'InvalidParametersError' })
          } finally { c.close() }
        })

        it('round-trips stripes of sizes not divisible by k through the stripe layer, m shards lost', async () => {
          const c = options.create(shape)
          try {
            for (const len of [1, 7, shape.k * 8 + 3, 4099, 65_537]) {
              const data = randomBytes(len, len)
              const { header, shards } = await options.stripe.encodeStripe(c, data)
              expect(header.codec).toBe(c.id)
              expect(header.shardSize % c.shardAlign).toBe(0)
              expect(header.lengths.reduce((a, b) => a + b, 0)).toBe(len)
              expect(header.crcs).toHaveLength(shape.k + shape.m)
              // Lose the first m data shards: the worst case (all rebuilt from parity).
              const kept = shards.map((bytes, index) => ({ index, bytes })).filter((s) => s.index >= shape.m)
              const out = await options.stripe.decodeStripe(c, header, kept)
              expect(out.rebuilt).toEqual(Array.from({ length: Math.min(shape.m, shape.k) }, (_, i) => i))
              const joined = new Uint8Array(len)
              let off = 0
              for (const p of out.pieces) { joined.set(p, off); off += p.byteLength }
              expect(off).toBe(len)
              expect(same(joined, data)).toBe(true)
            }
          } finally { c.close() }
        })

        it('detects a corrupted shard by its CRC and treats it as missing', async () => {
          const c = options.create(shape)
          try {
            const data = randomBytes(10_000, 9)
            const { header, shards } = await options.stripe.encodeStripe(c, data)
            const bad = shards.map((s) => s.slice())
            ;(bad[0] as Uint8Array)[3] = ((bad[0] as Uint8Array)[3] as number) ^ 1
            // Shard 0 corrupt plus m - 1 lost: still decodable.
            const kept = bad.map((bytes, index) => ({ index, bytes })).filter((s) => s.index === 0 || s.index >= shape.m)
            const out = await options.stripe.decodeStripe(c, header, kept)
            expect(out.corrupt).toEqual([0])
            expect(out.rebuilt).toContain(0)
            const joined = new Uint8Array(data.length)
            let off = 0
            for (const p of out.pieces) { joined.set(p, off); off += p.byteLength }
            expect(same(joined, data)).toBe(true)
            // One more corrupt shard than the code tolerates: typed failure, never wrong data.
            for (let i = 0; i <= shape.m && i < bad.length; i++) (bad[i] as Uint8Array)[0] = ((bad[i] as Uint8Array)[0] as number) ^ 0xff
            const all = bad.map((bytes, index) => ({ index, bytes }))
            await expect(options.stripe.decodeStripe(c, header, all)).rejects.toMatchObject({ name: 'InsufficientShardsError' })
            // A shard of the wrong size is corrupt too.
            const short = shards.map((bytes, index) => ({ index, bytes: index === shape.k ? bytes.subarray(0, bytes.byteLength - 8) : bytes }))
            expect((await options.stripe.decodeStripe(c, header, short)).corrupt).toEqual([shape.k])
          } finally { c.close() }
        })

        it('rejects a duplicate or out-of-range shard index with InvalidParametersError', async () => {
          const c = options.create(shape)
          try {
            const { header, shards } = await options.stripe.encodeStripe(c, randomBytes(3000, 11))
            const list = shards.map((bytes, index) => ({ index, bytes }))
            await expect(options.stripe.decodeStripe(c, header, [...list, list[0] as { index: number, bytes: Uint8Array }])).rejects.toMatchObject({ name: 'InvalidParametersError' })
            await expect(options.stripe.decodeStripe(c, header, [{ index: shape.k + shape.m, bytes: shards[0] as Uint8Array }])).rejects.toMatchObject({ name: 'InvalidParametersError' })
            await expect(options.stripe.decodeStripe(c, header, [{ index: -1, bytes: shards[0] as Uint8Array }])).rejects.toMatchObject({ name: 'InvalidParametersError' })
          } finally { c.close() }
        })

        it('refuses a stripe made by another codec or shape with CodecMismatchError', async () => {
          const c = options.create(shape)
          const others: SuiteCodec[] = []
          try {
            const { header, shards } = await options.stripe.encodeStripe(c, randomBytes(2048, 12))
            const list = shards.map((bytes, index) => ({ index, bytes }))
            await expect(options.stripe.decodeStripe(c, { ...header, codec: `${header.codec}-other` }, list)).rejects.toMatchObject({ name: 'CodecMismatchError' })
            await expect(options.stripe.decodeStripe(c, { ...header, m: header.m + 1, crcs: [...header.crcs, 0] }, list)).rejects.toMatchObject({ name: 'CodecMismatchError' })
            if (options.other !== undefined) {
              const o = options.other(shape)
              others.push(o)
              expect(o.id).not.toBe(c.id)
              await expect(options.stripe.decodeStripe(o, header, list.slice(shape.m))).rejects.toMatchObject({ name: 'CodecMismatchError' })
            }
          } finally {
            c.close()
            for (const o of others) o.close()
          }
        })

        it(`stays correct over ${cycles} encode/reconstruct cycles of varying sizes without growing its heap`, async () => {
          const c = options.create(shape)
          const n = shape.k + shape.m
          try {
            const sizes = [64, 4096, 1024, 16_384, 8, 2048]
            let heapAfterWarmup = -1
            for (let cycle = 0; cycle < cycles; cycle++) {
              const sz = sizes[cycle % sizes.length] as number
              const original = await encoded(c, sz, cycle)
              // A fixed set of three erasure patterns: codecs may cache one decoding matrix per
              // pattern, which is bounded growth, not a leak; after warm-up the heap must stay flat.
              const lost = new Set<number>()
              for (let j = 0; lost.size < shape.m; j++) lost.add(((cycle % 3) * 2 + j) % n)
              const shards: Array<Uint8Array | undefined> = original.map((s, i) => lost.has(i) ? undefined : s)
              await c.reconstruct(shards, original.map((_, i) => !lost.has(i)))
              for (const i of lost) expect(same(shards[i], original[i]), `cycle ${cycle} shard ${i}`).toBe(true)
              if (cycle === sizes.length * 2 - 1) heapAfterWarmup = c.heapBytes?.() ?? -1
            }
            if (c.heapBytes !== undefined) expect(c.heapBytes()).toBe(heapAfterWarmup)
          } finally { c.close() }
        })

        it('rejects work after close with ClosedError; close is idempotent', async () => {
          const c = options.create(shape)
          c.close()
          c.close()
          const data = Array.from({ length: shape.k }, () => new Uint8Array(64))
          await expect(c.encode(data, Array.from({ length: shape.m }, () => new Uint8Array(64)))).rejects.toMatchObject({ name: 'ClosedError' })
        })
      })
    }

    for (const shape of options.invalidShapes ?? []) {
      it(`rejects shape ${shape.k}+${shape.m} with InvalidParametersError`, () => {
        expect(() => options.create(shape)).toThrow(expect.objectContaining({ name: 'InvalidParametersError' }) as unknown as Error)
      })
    }
  })
}
