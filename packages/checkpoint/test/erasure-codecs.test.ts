import { describe, expect, it } from 'vitest'
import { codecComplianceSuite } from '@phalanx/testing/codec'
import { pino } from 'pino'
import type { Logger } from '@phalanx/core'
import { Writable } from 'node:stream'
import {
  NATIVE_RS_CODEC_ID, WASM_RS_CODEC_ID, XOR_CODEC_ID, compileRseModule, createNativeRsCodec, createRsCodec, createWasmRsCodec,
  createXorCodec, decodeStripe, encodeStripe, loadNativeReedSolomon, type ErasureCodec
} from '../src/erasure/index.js'

const stripe = { encodeStripe, decodeStripe }
const rseModule = compileRseModule()
const binding = loadNativeReedSolomon()

codecComplianceSuite('xor', {
  create: ({ k }) => createXorCodec({ k }),
  shapes: [{ k: 1, m: 1 }, { k: 3, m: 1 }, { k: 5, m: 1 }],
  stripe,
  other: ({ k }) => createWasmRsCodec({ k, m: 1, module: rseModule }),
  invalidShapes: [{ k: 0, m: 1 }, { k: 2.5, m: 1 }],
  cycles: 200
})

codecComplianceSuite('wasm reed-solomon', {
  create: ({ k, m }) => createWasmRsCodec({ k, m, module: rseModule }),
  shapes: [{ k: 4, m: 2 }, { k: 8, m: 2 }, { k: 3, m: 3 }],
  stripe,
  other: ({ k, m }) => m === 1 ? createXorCodec({ k }) : binding !== undefined ? createNativeRsCodec({ k, m }, { binding }) : createXorCodec({ k: k + m - 1 }),
  invalidShapes: [{ k: 0, m: 2 }, { k: 200, m: 100 }],
  cycles: 300
})

describe('native reed-solomon addon', () => {
  it('is built in this checkout (the optional dependency installed)', () => {
    // When the addon did not build, createRsCodec falls back to wasm (tested below); here it must exist.
    expect(binding).toBeDefined()
  })
})

if (binding !== undefined) {
  codecComplianceSuite('native reed-solomon', {
    create: ({ k, m }) => createNativeRsCodec({ k, m }, { binding }),
    shapes: [{ k: 4, m: 2 }, { k: 8, m: 2 }, { k: 10, m: 4 }],
    stripe,
    other: ({ k, m }) => createWasmRsCodec({ k, m, module: rseModule }),
    invalidShapes: [{ k: 25, m: 2 }, { k: 4, m: 7 }],
    cycles: 200
  })
}

function capture (): { logger: Logger, lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({ write (chunk: Buffer, _enc, cb) { lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>); cb() } })
  return { logger: pino({ level: 'debug' }, stream) as unknown as Logger, lines }
}

describe('codec selection', () => {
  it('prefers the native codec when the addon loads', () => {
    const c = createRsCodec({ k: 4, m: 2 })
    try {
      expect(c.id).toBe(binding === undefined ? WASM_RS_CODEC_ID : NATIVE_RS_CODEC_ID)
    } finally { c.close() }
  })

  it('falls back to wasm with a log line when the addon fails to load (simulated failed build)', async () => {
    const { logger, lines } = capture()
    const loader = (): unknown => { throw new Error("Cannot find module './build/Release/binding.node'") }
    const c = createRsCodec({ k: 4, m: 2 }, { loader, logger, module: rseModule })
    try {
      expect(c.id).toBe(WASM_RS_CODEC_ID)
      const data = new Uint8Array(1000).map((_, i) => i * 7)
      const { header, shards } = await encodeStripe(c, data)
      const { pieces } = await decodeStripe(c, header, shards.map((bytes, index) => ({ index, bytes })).slice(2))
      expect(Buffer.concat(pieces)).toEqual(Buffer.from(data))
    } finally { c.close() }
    expect(lines.some((l) => l.msg === 'native Reed-Solomon addon unavailable' && String(l.err).includes('binding.node'))).toBe(true)
    expect(lines.some((l) => l.msg === 'falling back to the wasm Reed-Solomon codec')).toBe(true)
  })

  it('falls back when the loaded module is not the addon, or k, m exceed its limits', () => {
    const a = createRsCodec({ k: 4, m: 2 }, { loader: () => ({}), module: rseModule })
    const b = createRsCodec({ k: 30, m: 2 }, { module: rseModule })
    try {
      expect(a.id).toBe(WASM_RS_CODEC_ID)
      expect(b.id).toBe(WASM_RS_CODEC_ID)
    } finally { a.close(); b.close() }
  })

  it('native and wasm parity differ: shards are not interchangeable across codecs', async () => {
    if (binding === undefined) return
    const codecs: ErasureCodec[] = [createNativeRsCodec({ k: 4, m: 2 }, { binding }), createWasmRsCodec({ k: 4, m: 2, module: rseModule })]
    try {
      const data = new Uint8Array(4096).map((_, i) => (i * 131) & 0xff)
      const [a, b] = await Promise.all(codecs.map(async (c) => await encodeStripe(c, data)))
      expect(a?.shards.slice(0, 4)).toEqual(b?.shards.slice(0, 4))
      expect(a?.shards[4]).not.toEqual(b?.shards[4])
      expect(XOR_CODEC_ID).not.toBe(a?.header.codec)
    } finally { for (const c of codecs) c.close() }
  })
})
