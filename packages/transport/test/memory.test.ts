import { transportComplianceSuite } from '@phalanx/testing/transport'
import { describe, expect, it } from 'vitest'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'

transportComplianceSuite('memory', {
  create: ({ clock }) => memoryTransport({ network: createMemoryNetwork() }, { clock })
})

describe('memory transport', () => {
  it('keeps networks apart and frees addresses on close', async () => {
    const n1 = createMemoryNetwork()
    const n2 = createMemoryNetwork()
    const a = await memoryTransport({ network: n1 }).open({ id: 'a', job: 'j' })
    const b = await memoryTransport({ network: n2 }).open({ id: 'b', job: 'j' })
    try {
      expect(n1.addresses()).toEqual(['a'])
      expect(n2.addresses()).toEqual(['b'])
      a.connect('b', 'b')
      await expect(a.send('b', { type: 'x' })).rejects.toMatchObject({ name: 'PeerUnreachableError' })
      await expect(memoryTransport({ network: n1 }).open({ id: 'a2', job: 'j', listen: 'a' })).rejects.toMatchObject({ name: 'InvalidParametersError' })
    } finally {
      await a.close()
      await b.close()
    }
    expect(n1.addresses()).toEqual([])
    const again = await memoryTransport({ network: n1 }).open({ id: 'a', job: 'j' })
    await again.close()
  })

  it('delivers the sender\'s bytes without copying', async () => {
    const network = createMemoryNetwork()
    const transport = memoryTransport({ network })
    const a = await transport.open({ id: 'a', job: 'j' })
    const b = await transport.open({ id: 'b', job: 'j' })
    try {
      a.connect('b', b.address)
      const data = new Float32Array([1, 2, 3, 4])
      const received = new Promise<Uint8Array | undefined>((resolve) => { b.handle('t', (env) => { resolve(env.frames[0]) }) })
      await a.send('b', { type: 't', tensors: [{ name: 't', shape: [4], dtype: 'float32', data }] })
      const frame = await received
      expect(frame?.buffer).toBe(data.buffer)
    } finally {
      await a.close()
      await b.close()
    }
  })

  it('rejects invalid init', async () => {
    expect(() => memoryTransport({ network: {} as never })).toThrow(expect.objectContaining({ name: 'InvalidParametersError' }))
    const transport = memoryTransport({ network: createMemoryNetwork() })
    await expect(transport.open({ id: '', job: 'j' })).rejects.toMatchObject({ name: 'InvalidParametersError' })
    await expect(transport.open({ id: 'x', job: 'j', sendQueueLimit: 0 })).rejects.toMatchObject({ name: 'InvalidParametersError' })
    await expect(transport.open({ id: 'x', job: 'j', limits: { maxFrameBytes: -1 } })).rejects.toMatchObject({ name: 'InvalidParametersError' })
  })
})
