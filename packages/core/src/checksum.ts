/**
 * CRC-32 (IEEE 802.3, as zlib/gzip) and CRC-32C (Castagnoli, as iSCSI/ext4) over byte chunks.
 *
 * Every chunk Phalanx moves or stores is checksummed, so speed matters: `crc32c` and `crc32` use the
 * native SSE4.2/PCLMUL implementation of `@node-rs/crc32` (a prebuilt binary shipped in the npm
 * package; about 7 GB/s here) and fall back to the slicing-by-8 tables below (about 1 GB/s) on
 * platforms without a binary. Both give identical results; the portable ones stay exported.
 *
 * Pass the previous result as `seed` to checksum data that arrives in pieces:
 * `crc32c(b, crc32c(a)) === crc32c(concat(a, b))`.
 *
 * @module
 */
import { createRequire } from 'node:module'

function makeTables (poly: number): Uint32Array[] {
  const tables = Array.from({ length: 8 }, () => new Uint32Array(256))
  const t0 = tables[0] as Uint32Array
  for (let i = 0; i < 256; i++) {
    let c = i
    for (let k = 0; k < 8; k++) c = (c & 1) !== 0 ? (c >>> 1) ^ poly : c >>> 1
    t0[i] = c >>> 0
  }
  for (let t = 1; t < 8; t++) {
    const prev = tables[t - 1] as Uint32Array
    const cur = tables[t] as Uint32Array
    for (let i = 0; i < 256; i++) cur[i] = ((prev[i] as number) >>> 8) ^ (t0[(prev[i] as number) & 0xff] as number)
  }
  return tables
}

function makeCrc (poly: number): (data: Uint8Array, seed?: number) => number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = makeTables(poly) as [Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array]
  return (data, seed = 0) => {
    let crc = ~seed >>> 0
    let i = 0
    const n = data.length
    const end8 = n - (n % 8)
    while (i < end8) {
      const a = crc ^ ((data[i] as number) | ((data[i + 1] as number) << 8) | ((data[i + 2] as number) << 16) | ((data[i + 3] as number) << 24))
      crc = (t7[a & 0xff] as number) ^ (t6[(a >>> 8) & 0xff] as number) ^ (t5[(a >>> 16) & 0xff] as number) ^ (t4[a >>> 24] as number) ^
        (t3[data[i + 4] as number] as number) ^ (t2[data[i + 5] as number] as number) ^ (t1[data[i + 6] as number] as number) ^ (t0[data[i + 7] as number] as number)
      i += 8
    }
    while (i < n) crc = (t0[(crc ^ (data[i++] as number)) & 0xff] as number) ^ (crc >>> 8)
    return ~crc >>> 0
  }
}

/** Portable CRC-32C (Castagnoli) in plain TypeScript; same results as {@link crc32c}. */
export const crc32cPortable: (data: Uint8Array, seed?: number) => number = makeCrc(0x82f63b78)

/** Portable CRC-32 (IEEE) in plain TypeScript; same results as {@link crc32}. */
export const crc32Portable: (data: Uint8Array, seed?: number) => number = makeCrc(0xedb88320)

interface NativeCrc {
  crc32c(data: Uint8Array, seed?: number): number
  crc32(data: Uint8Array, seed?: number): number
}

function loadNative (): NativeCrc | undefined {
  try {
    return createRequire(import.meta.url)('@node-rs/crc32') as NativeCrc
  } catch {
    return undefined
  }
}

const native = loadNative()

/** True when the native CRC implementation is in use. */
export const nativeCrc: boolean = native !== undefined

/** CRC-32C (Castagnoli) of `data`, continuing from `seed` (a previous result). Use this for chunks. */
export const crc32c: (data: Uint8Array, seed?: number) => number = native === undefined
  ? crc32cPortable
  : (data, seed = 0) => data.byteLength === 0 ? seed >>> 0 : native.crc32c(data, seed) >>> 0

/** CRC-32 (IEEE, the zlib polynomial) of `data`, continuing from `seed`. For interop with zip/gzip tools. */
export const crc32: (data: Uint8Array, seed?: number) => number = native === undefined
  ? crc32Portable
  : (data, seed = 0) => data.byteLength === 0 ? seed >>> 0 : native.crc32(data, seed) >>> 0

/** Bytes of a typed array as a `Uint8Array` view (no copy). */
export function bytesOf (view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength)
}
