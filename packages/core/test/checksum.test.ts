import { describe, expect, it } from 'vitest'
import { crc32, crc32c } from '../src/index.js'

const ascii = (s: string): Uint8Array => new TextEncoder().encode(s)

describe('checksums', () => {
  it('match the standard check values', () => {
    // The "123456789" check values from the CRC catalogue.
    expect(crc32(ascii('123456789'))).toBe(0xcbf43926)
    expect(crc32c(ascii('123456789'))).toBe(0xe3069283)
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
})
