import { createRequire } from 'node:module'
import { ClosedError, InvalidParametersError, componentLogger, throwIfAborted, type Logger } from '@phalanx/core'
import { SHARD_ALIGN, checkEncodeArgs, checkKM, prepareReconstruct, type ErasureCodec } from './codec.js'
import { createWasmRsCodec, type RseModule } from './wasm-rs.js'

/** Id of the Reed-Solomon code of the native codec (Cauchy bit-matrix; parity differs from the wasm codec's). */
export const NATIVE_RS_CODEC_ID = 'rs-cauchy-gf256/ronomon@6'

/** The part of the `@ronomon/reed-solomon` addon this module uses. */
export interface RonomonBinding {
  readonly MAX_K: number
  readonly MAX_M: number
  create(k: number, m: number): unknown
  encode(context: unknown, sources: number, targets: number, buffer: Buffer, bufferOffset: number, bufferSize: number,
    parity: Buffer, parityOffset: number, paritySize: number, callback: (error: Error | undefined | null) => void): void
}

/** Loads the addon; throws when it is missing or failed to build. Injected in tests to simulate that. */
export type NativeLoader = () => unknown

/** The default loader: `require('@ronomon/reed-solomon')` (an optional dependency, built by node-gyp at install). */
export function defaultNativeLoader (): unknown {
  return createRequire(import.meta.url)('@ronomon/reed-solomon')
}

/**
 * Loads the native Reed-Solomon addon, or returns undefined (with a warning naming the reason) when
 * it is absent, failed to build, or does not look like the addon.
 */
export function loadNativeReedSolomon (components: { loader?: NativeLoader, logger?: Logger } = {}): RonomonBinding | undefined {
  const log = componentLogger(components.logger, 'erasure')
  try {
    const b = (components.loader ?? defaultNativeLoader)() as Partial<RonomonBinding> | null
    if (b === null || typeof b !== 'object' || typeof b.create !== 'function' || typeof b.encode !== 'function' || typeof b.MAX_K !== 'number') {
      throw new Error('module does not export create/encode/MAX_K')
    }
    return b as RonomonBinding
  } catch (err) {
    log.warn({ err: (err as Error).message }, 'native Reed-Solomon addon unavailable')
    return undefined
  }
}

const asBuffer = (a: Uint8Array): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength)

/** True when `shards` are consecutive views of one buffer. */
function contiguous (shards: readonly Uint8Array[], size: number): boolean {
  const first = shards[0] as Uint8Array
  return shards.every((s, i) => s.buffer === first.buffer && s.byteOffset === first.byteOffset + i * size)
}

/**
 * Reed-Solomon over GF(2^8) with a Cauchy bit-matrix (`@ronomon/reed-solomon`, C, N-API). Work runs
 * in the libuv threadpool, off the event loop. k ≤ 24, m ≤ 6. Shards already laid out back to back
 * in one buffer are passed without a copy; others go through one reused scratch buffer.
 */
export function createNativeRsCodec (init: { k: number, m: number }, components: { binding: RonomonBinding }): ErasureCodec {
  const { binding } = components
  checkKM(init.k, init.m, { maxK: binding.MAX_K, maxM: binding.MAX_M })
  const { k, m } = init
  const context = binding.create(k, m)
  let scratch = new Uint8Array(0)
  let closed = false
  const scratchOf = (bytes: number): Uint8Array => {
    if (scratch.byteLength < bytes) scratch = new Uint8Array(bytes)
    return scratch.subarray(0, bytes)
  }
  const run = async (sources: number, targets: number, data: Uint8Array, parity: Uint8Array): Promise<void> => {
    await new Promise<void>((resolve, reject) => {
      binding.encode(context, sources, targets, asBuffer(data), 0, data.byteLength, asBuffer(parity), 0, parity.byteLength, (error) => {
        if (error !== undefined && error !== null) reject(new InvalidParametersError(`${NATIVE_RS_CODEC_ID}: ${error.message}`))
        else resolve()
      })
    })
  }
  const gather = (shards: readonly Uint8Array[], size: number, into: Uint8Array | undefined): Uint8Array => {
    if (contiguous(shards, size)) {
      const f = shards[0] as Uint8Array
      return new Uint8Array(f.buffer, f.byteOffset, size * shards.length)
    }
    const out = into as Uint8Array
    shards.forEach((s, i) => { out.set(s, i * size) })
    return out
  }

  const codec: ErasureCodec = {
    id: NATIVE_RS_CODEC_ID,
    k,
    m,
    shardAlign: SHARD_ALIGN,
    async encode (data, parity, options = {}) {
      if (closed) throw new ClosedError('native codec is closed')
      throwIfAborted(options.signal)
      const size = checkEncodeArgs(codec, data, parity)
      const needData = !contiguous(data, size)
      const needParity = !contiguous(parity, size)
      const tmp = needData || needParity ? scratchOf((needData ? k * size : 0) + (needParity ? m * size : 0)) : undefined
      const d = gather(data, size, needData ? tmp?.subarray(0, k * size) : undefined)
      const p = needParity ? (tmp as Uint8Array).subarray(needData ? k * size : 0) : gather(parity, size, undefined)
      let sources = 0
      for (let i = 0; i < k; i++) sources |= 1 << i
      let targets = 0
      for (let j = 0; j < m; j++) targets |= 1 << (k + j)
      await run(sources, targets, d, p)
      if (needParity) parity.forEach((s, j) => { s.set(p.subarray(j * size, (j + 1) * size)) })
    },
    async reconstruct (shards, present, options = {}) {
      if (closed) throw new ClosedError('native codec is closed')
      throwIfAborted(options.signal)
      const { size, missing, shards: all } = prepareReconstruct(codec, shards, present)
      if (missing.length === 0) return
      const data = all.slice(0, k)
      const parity = all.slice(k)
      const needData = !contiguous(data, size)
      const needParity = !contiguous(parity, size)
      const tmp = needData || needParity ? scratchOf((needData ? k * size : 0) + (needParity ? m * size : 0)) : undefined
      const d = gather(data, size, needData ? tmp?.subarray(0, k * size) : undefined)
      const p = needParity ? gather(parity, size, (tmp as Uint8Array).subarray(needData ? k * size : 0)) : gather(parity, size, undefined)
      let sources = 0
      let targets = 0
      for (let i = 0; i < k + m; i++) {
        if (present[i] === true) sources |= 1 << i
        else targets |= 1 << i
      }
      await run(sources, targets, d, p)
      for (const i of missing) {
        const src = i < k ? d.subarray(i * size, (i + 1) * size) : p.subarray((i - k) * size, (i - k + 1) * size)
        const out = all[i] as Uint8Array
        if (out.buffer !== src.buffer || out.byteOffset !== src.byteOffset) out.set(src)
      }
    },
    close () {
      closed = true
      scratch = new Uint8Array(0)
    }
  }
  return codec
}

/** Which Reed-Solomon implementation {@link createRsCodec} should use. */
export type RsImplementation = 'native' | 'wasm'

/** Tunables of {@link createRsCodec}. */
export interface RsCodecInit {
  k: number
  m: number
  /**
   * Preferred implementation; `'native'` falls back to wasm (with a warning) when the addon is
   * unavailable or k, m exceed its limits.
   * @default 'native'
   */
  prefer?: RsImplementation
}

/**
 * A Reed-Solomon codec: the native addon when it loaded, otherwise the wasm codec, logging which
 * one and why. Never throws because the optional addon is missing.
 */
export function createRsCodec (init: RsCodecInit, components: { loader?: NativeLoader, logger?: Logger, module?: RseModule } = {}): ErasureCodec {
  const log = componentLogger(components.logger, 'erasure')
  if ((init.prefer ?? 'native') === 'native') {
    const binding = loadNativeReedSolomon(components)
    if (binding !== undefined && init.k <= binding.MAX_K && init.m <= binding.MAX_M) return createNativeRsCodec(init, { binding })
    log.warn({ k: init.k, m: init.m, reason: binding === undefined ? 'addon unavailable' : 'k or m above the addon limits' }, 'falling back to the wasm Reed-Solomon codec')
  }
  return createWasmRsCodec(components.module === undefined ? init : { ...init, module: components.module })
}
