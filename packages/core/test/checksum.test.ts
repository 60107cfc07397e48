import { describe, expect, it } from 'vitest'
import { crc32, crc32Portable, crc32c, crc32cPortable, nativeCrc } from '../src/index.js'

const ascii = (s: string): Uint8Array => new TextEncoder().encode(s)

describe('checksums', () => {
  it('match the standard check values', () => {
    // The "123456789" check values from the CRC catalogue.
    expect(crc32(ascii('123456789'))).toBe(0xcbf43926)
    expect(crc32c(ascii('123456789'))).toBe(0xe3069283)
    expect(crc32Portable(ascii('123456789'))).toBe(0xcbf43926)
    expect(crc32cPortable(ascii('123456789'))).toBe(0xe3069283)
    expect(crc32c(new Uint8Array(0))).toBe(0)
    // RFC 3720 B.4: 32 bytes of zeros.
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa)
  })

  it('continue across pieces', () => {
    const data = new Uint8Array(1000).map((_, i) => (i * 31) & 0xff)
    for (const cut of [0, 1, 7, 8, 9, 500, 999, 1000]) {
      expect(crc32c(data.subarray(cut), crc32c(data.subarray(0, cut)))).toBe(crc32c(data))
      expect(crc32(data.subarray(cut), crc32(data.subarray(0, cut)))).toBe(crc32(data))
    }
  })

  it('detect a single flipped bit anywhere', () => {
    const data = new Uint8Array(257).map((_, i) => i & 0xff)
    const good = crc32c(data)
    for (let i = 0; i < data.length; i += 13) {
      data[i] = (data[i] as number) ^ 0x10
      expect(crc32c(data)).not.toBe(good)
      data[i] = (data[i] as number) ^ 0x10
    }
  })

  it('native and portable implementations agree on every length, offset and seed', () => {
    expect(nativeCrc).toBe(true)
    const data = new Uint8Array(4099).map((_, i) => (i * 131 + 7) & 0xff)
    for (const [start, end] of [[0, 0], [0, 1], [3, 11], [1, 4099], [17, 2048], [0, 4099]] as const) {
      const view = data.subarray(start, end)
      for (const seed of [0, 1, 0xdeadbeef]) {
        expect(crc32c(view, seed)).toBe(crc32cPortable(view, seed))
        expect(crc32(view, seed)).toBe(crc32Portable(view, seed))
      }
    }
    const floats = new Float32Array([1.5, -2, 3.25])
    const bytes = new Uint8Array(floats.buffer)
    expect(crc32c(bytes)).toBe(crc32cPortable(bytes))
  })
})
