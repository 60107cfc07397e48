import { describe, expect, it } from 'vitest'
import {
  PROTOCOL_VERSION, checkFrames, createEpochFence, decodeTensors, encodeTensors, parseHeader,
  type MessageHeader, type NamedTensor
} from '../src/index.js'

const header = (over: Partial<MessageHeader> = {}): MessageHeader => ({
  v: PROTOCOL_VERSION, type: 'grad', job: 'j', epoch: 1, step: 2, from: 'w0', seq: 0, ...over
})

describe('wire header', () => {
  it('accepts a valid header', () => {
    expect(parseHeader(header({ body: { x: 1 } }))).toMatchObject({ type: 'grad', body: { x: 1 } })
  })

  it('rejects bad headers with typed errors', () => {
    expect(() => parseHeader(header({ v: 2 }))).toThrow(expect.objectContaining({ name: 'ProtocolVersionError' }))
    expect(() => parseHeader({ ...header(), extra: 1 })).toThrow(expect.objectContaining({ name: 'MalformedMessageError' }))
    expect(() => parseHeader(header({ epoch: -1 }))).toThrow(expect.objectContaining({ name: 'MalformedMessageError' }))
    expect(() => parseHeader(null)).toThrow(expect.objectContaining({ name: 'MalformedMessageError' }))
    expect(() => parseHeader('x')).toThrow(expect.objectContaining({ name: 'MalformedMessageError' }))
  })
})

describe('tensor frames', () => {
  const t = (name: string, n: number): NamedTensor => ({ name, shape: [n], dtype: 'float32', data: Float32Array.from({ length: n }, (_, i) => i * 0.5 - 3) })

  it('split into capped frames without copying and join back bit-exact', () => {
    const tensors = [t('a', 10), t('b', 0), t('c', 3)]
    const { descriptors, frames } = encodeTensors(tensors, 16)
    expect(descriptors.map((d) => d.frames)).toEqual([3, 0, 1])
    expect(frames[0]!.buffer).toBe(tensors[0]!.data.buffer)
    const h = header({ tensors: descriptors })
    checkFrames(h, frames, { maxFrameBytes: 16, maxMessageBytes: 1 << 20, maxHeaderBytes: 1024, maxFrames: 100 })
    const back = decodeTensors({ header: h, frames })
    expect(back.map((x) => Array.from(x.data))).toEqual(tensors.map((x) => Array.from(x.data)))
    // a single-frame tensor is a view, not a copy
    expect(back[2]!.data.buffer).toBe(tensors[2]!.data.buffer)
  })

  it('reuses a caller buffer for multi-frame tensors', () => {
    const { descriptors, frames } = encodeTensors([t('a', 10)], 16)
    const reuse = new Float32Array(10)
    const [a] = decodeTensors({ header: header({ tensors: descriptors }), frames }, () => reuse)
    expect(a!.data).toBe(reuse)
  })

  it('rejects frame count, size and length mismatches', () => {
    const limits = { maxFrameBytes: 16, maxMessageBytes: 1 << 20, maxHeaderBytes: 1024, maxFrames: 100 }
    const { descriptors, frames } = encodeTensors([t('a', 10)], 16)
    const h = header({ tensors: descriptors })
    expect(() => { checkFrames(h, frames.slice(1), limits) }).toThrow(expect.objectContaining({ name: 'MalformedMessageError' }))
    expect(() => { checkFrames(h, [frames[0]!, frames[1]!, new Uint8Array(6)], limits) }).toThrow(/whole number/)
    expect(() => { checkFrames(h, [frames[0]!, frames[1]!, new Uint8Array(4)], limits) }).toThrow(/carries/)
    expect(() => { checkFrames(h, frames, { ...limits, maxFrameBytes: 8 }) }).toThrow(expect.objectContaining({ name: 'MalformedMessageError' }))
    expect(() => { checkFrames(header({ tensors: [{ name: 'x', shape: [1 << 20], dtype: 'float32', frames: 1 }] }), [], limits) })
      .toThrow(expect.objectContaining({ name: 'MessageTooLargeError' }))
  })
})

describe('epoch fence', () => {
  it('drops and counts older epochs, never moves back, exempts listed types', () => {
    const fence = createEpochFence({ epoch: 3, exempt: ['join'] })
    expect(fence.admit({ epoch: 3, type: 'grad' })).toBe(true)
    expect(fence.admit({ epoch: 2, type: 'grad' })).toBe(false)
    expect(fence.admit({ epoch: 0, type: 'join' })).toBe(true)
    fence.advance(5)
    fence.advance(4)
    expect(fence.epoch).toBe(5)
    expect(fence.admit({ epoch: 4, type: 'grad' })).toBe(false)
    expect(fence.dropped).toBe(2)
  })
})
