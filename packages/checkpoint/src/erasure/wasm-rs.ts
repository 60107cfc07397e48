import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { ClosedError, InsufficientShardsError, InvalidParametersError, throwIfAborted } from '@phalanx/core'
import { SHARD_ALIGN, checkEncodeArgs, checkKM, prepareReconstruct, type ErasureCodec } from './codec.js'

/** Id of the Reed-Solomon code of the wasm codec (Backblaze/klauspost-compatible Vandermonde matrix). */
export const WASM_RS_CODEC_ID = 'rs-vandermonde-gf256/rse-wasm'

/** The part of the global `WebAssembly` API used here (the project's lib settings do not declare it). */
interface WasmApi {
  Module: new (bytes: Uint8Array) => object
  Instance: new (module: object) => { exports: unknown }
}

const wasmApi = (): WasmApi => (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly

/** A compiled `WebAssembly.Module` of the Reed-Solomon codec, from {@link compileRseModule}. */
export type RseModule = object

/** The raw exports of `reed_solomon_erasure_bg.wasm` (wasm-bindgen ABI, pointers into `memory`). */
interface RseExports {
  readonly memory: { readonly buffer: ArrayBuffer }
  encode(ptr: number, len: number, k: number, m: number): number
  /** Takes ownership of (and frees) the `available` buffer; `shards` stays the caller's. */
  reconstruct(ptr: number, len: number, k: number, m: number, available: number, availableLen: number): number
  __wbindgen_malloc(size: number): number
  __wbindgen_free(ptr: number, size: number): void
}

/** A Reed-Solomon codec running in WebAssembly, with a view of its heap for leak checks. */
export interface WasmRsCodec extends ErasureCodec {
  /** Current size of the wasm linear memory, bytes (stays flat over repeated calls of one size). */
  heapBytes(): number
  /** Bytes the codec holds allocated in the wasm heap right now (its reused shard region). */
  allocatedBytes(): number
}

/** Tunables of {@link createWasmRsCodec}. */
export interface WasmRsCodecInit {
  k: number
  m: number
  /** A compiled module to instantiate (shared by codecs to skip recompiling). @default compiled from the package's file */
  module?: RseModule
}

const RESULT_OK = 0
const RESULT_TOO_FEW_SHARDS_PRESENT = 10

/** Compiles the `@subspace/reed-solomon-erasure.wasm` module (pure Rust reed-solomon-erasure, no SIMD). */
export function compileRseModule (): RseModule {
  const require = createRequire(import.meta.url)
  const file = require.resolve('@subspace/reed-solomon-erasure.wasm/dist/reed_solomon_erasure_bg.wasm')
  return new (wasmApi().Module)(readFileSync(file))
}

/**
 * Reed-Solomon over GF(2^8) in WebAssembly (`@subspace/reed-solomon-erasure.wasm`). The package's
 * JS wrapper is not used: its `reconstruct` frees the availability flags that the Rust side already
 * took ownership of and freed (a double free that corrupts the allocator in long runs). This wrapper
 * calls the raw exports, keeps one shard region in the wasm heap and reuses it across calls (freed
 * and reallocated only when the shard size grows, freed in `close`), and never frees the flags it
 * hands to `reconstruct`. Each codec has its own instance and memory. Runs on the calling thread;
 * roughly 0.5-1.4 GB/s here, so meant for tests, small states and as the fallback of the native codec.
 */
export function createWasmRsCodec (init: WasmRsCodecInit): WasmRsCodec {
  checkKM(init.k, init.m, { maxK: 255, maxM: 255 })
  if (init.k + init.m > 256) throw new InvalidParametersError(`k + m must be at most 256, got ${init.k + init.m}`)
  const { k, m } = init
  const n = k + m
  const ex = new (wasmApi().Instance)(init.module ?? compileRseModule()).exports as unknown as RseExports
  let region = { ptr: 0, bytes: 0 }
  let closed = false

  const heap = (): Uint8Array => new Uint8Array(ex.memory.buffer)
  const ensure = (bytes: number): number => {
    if (region.bytes >= bytes) return region.ptr
    if (region.bytes > 0) ex.__wbindgen_free(region.ptr, region.bytes)
    region = { ptr: 0, bytes: 0 }
    const ptr = ex.__wbindgen_malloc(bytes)
    region = { ptr, bytes }
    return ptr
  }
  const fail = (code: number, what: string): never => {
    if (code === RESULT_TOO_FEW_SHARDS_PRESENT) throw new InsufficientShardsError(`${WASM_RS_CODEC_ID}: too few shards present to ${what}`)
    throw new InvalidParametersError(`${WASM_RS_CODEC_ID}: ${what} failed with code ${code}`, { details: { code } })
  }
  const encodeRegion = (ptr: number, size: number): void => {
    const rc = ex.encode(ptr, n * size, k, m)
    if (rc !== RESULT_OK) fail(rc, 'encode')
  }

  const codec: WasmRsCodec = {
    id: WASM_RS_CODEC_ID,
    k,
    m,
    shardAlign: SHARD_ALIGN,
    async encode (data, parity, options = {}) {
      if (closed) throw new ClosedError('wasm codec is closed')
      throwIfAborted(options.signal)
      const size = checkEncodeArgs(codec, data, parity)
      const ptr = ensure(n * size)
      let h = heap()
      for (let i = 0; i < k; i++) h.set(data[i] as Uint8Array, ptr + i * size)
      encodeRegion(ptr, size)
      h = heap()
      for (let j = 0; j < m; j++) (parity[j] as Uint8Array).set(h.subarray(ptr + (k + j) * size, ptr + (k + j + 1) * size))
    },
    async reconstruct (shards, present, options = {}) {
      if (closed) throw new ClosedError('wasm codec is closed')
      throwIfAborted(options.signal)
      const { size, missing, shards: all } = prepareReconstruct(codec, shards, present)
      if (missing.length === 0) return
      const ptr = ensure(n * size)
      let h = heap()
      for (let i = 0; i < n; i++) if (present[i] === true) h.set(all[i] as Uint8Array, ptr + i * size)
      // The callee owns and frees this buffer: allocate it fresh each call, never free it here.
      const flags = ex.__wbindgen_malloc(n)
      h = heap()
      for (let i = 0; i < n; i++) h[flags + i] = present[i] === true ? 1 : 0
      const rc = ex.reconstruct(ptr, n * size, k, m, flags, n)
      if (rc !== RESULT_OK) fail(rc, 'reconstruct')
      // The data shards are now whole; recompute parity when a parity shard was asked for too.
      if (missing.some((i) => i >= k)) encodeRegion(ptr, size)
      h = heap()
      for (const i of missing) (all[i] as Uint8Array).set(h.subarray(ptr + i * size, ptr + (i + 1) * size))
    },
    heapBytes: () => ex.memory.buffer.byteLength,
    allocatedBytes: () => region.bytes,
    close () {
      if (closed) return
      closed = true
      if (region.bytes > 0) ex.__wbindgen_free(region.ptr, region.bytes)
      region = { ptr: 0, bytes: 0 }
    }
  }
  return codec
}
