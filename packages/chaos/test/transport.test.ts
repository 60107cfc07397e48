import { createFakeClock, type Endpoint, type Envelope, type Transport } from '@phalanx/core'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { afterEach, describe, expect, it } from 'vitest'
import { chaosTransport, comparableEvent, type ChaosNetworkPlan, type ChaosTransport } from '../src/index.js'

const open: Endpoint[] = []
afterEach(async () => {
  for (const e of open.splice(0)) await e.close({ lingerMs: 0 })
})

async function pair (plan: ChaosNetworkPlan, clock = createFakeClock(0)): Promise<{ net: ChaosTransport, a: Endpoint, b: Endpoint, got: Envelope[], next: (n: number) => Promise<void>, clock: ReturnType<typeof createFakeClock> }> {
  const inner: Transport = memoryTransport({ network: createMemoryNetwork() })
  const net = chaosTransport(inner, plan, { clock })
  const a = await net.open({ id: 'a', job: 'j', requestTimeoutMs: 1000 })
  const b = await net.open({ id: 'b', job: 'j' })
  open.push(a, b)
  a.connect('b', b.address)
  b.connect('a', a.address)
  const got: Envelope[] = []
  const waiters: Array<{ n: number, resolve: () => void }> = []
  b.handle('m', (env) => {
    got.push(env)
    for (const w of waiters.splice(0)) if (got.length >= w.n) w.resolve(); else waiters.push(w)
  })
  b.handle('q', () => ({ type: 'r', body: 'pong' }))
  const next = async (n: number): Promise<void> => {
    if (got.length >= n) return
    await new Promise<void>((resolve) => { waiters.push({ n, resolve }) })
  }
  return { net, a, b, got, next, clock }
}

const tensor = (values: number[]): { name: string, shape: number[], dtype: 'float32', data: Float32Array } => ({ name: 't', shape: [values.length], dtype: 'float32', data: Float32Array.from(values) })

describe('chaosTransport', () => {
  it('delays delivery by delayMs on its clock', async () => {
    const { a, got, next, clock } = await pair({ seed: 1, rules: [{ delayMs: 50 }] })
    await a.send('b', { type: 'm', body: 1 })
    clock.advance(49)
    await Promise.resolve()
    expect(got).toHaveLength(0)
    clock.advance(1)
    await next(1)
    expect(got[0]?.header.body).toBe(1)
  })

  it('drops the same messages for the same seed (same event log) and other ones for another seed', async () => {
    const run = async (seed: number): Promise<{ received: number[], events: unknown[] }> => {
      const p = await pair({ seed, rules: [{ drop: 0.3 }] })
      for (let i = 0; i < 100; i++) await p.a.send('b', { type: 'm', body: i })
      const dropped = p.net.log.counts()['network:drop'] ?? 0
      await p.next(100 - dropped)
      for (const e of open.splice(0)) await e.close({ lingerMs: 0 })
      return { received: p.got.map((e) => e.header.body as number), events: p.net.log.events().map(comparableEvent) }
    }
    const x = await run(7)
    const y = await run(7)
    const z = await run(8)
    expect(x.received.length).toBeGreaterThan(50)
    expect(x.received.length).toBeLessThan(90)
    expect(y).toEqual(x)
    expect(z.received).not.toEqual(x.received)
  })

  it('duplicates a message', async () => {
    const { a, got, next } = await pair({ seed: 1, rules: [{ types: ['m'], duplicate: 1 }] })
    await a.send('b', { type: 'm', body: 'x' })
    await next(2)
    expect(got.map((e) => e.header.body)).toEqual(['x', 'x'])
  })

  it('reorders: a held message is overtaken by later ones', async () => {
    const { net, a, b, got, next, clock } = await pair({ seed: 1, rules: [{ types: ['x'], reorder: 1, reorderMs: 10 }] })
    let arrived!: () => void
    const firstArrived = new Promise<void>((resolve) => { arrived = resolve })
    b.handle('x', (env) => { got.push(env); arrived() })
    await a.send('b', { type: 'x', body: 'first' })
    await a.send('b', { type: 'm', body: 'second' })
    await next(1)
    expect(got.map((e) => e.header.body)).toEqual(['second'])
    clock.advance(10)
    await firstArrived
    expect(got.map((e) => e.header.body)).toEqual(['second', 'first'])
    expect(net.log.counts()['network:reorder']).toBe(1)
  })

  it('partitions: sends are lost, requests time out on the deadline, healing restores traffic', async () => {
    const { net, a, got, next, clock } = await pair({ seed: 1 })
    const heal = net.partition([['a'], ['b']])
    await a.send('b', { type: 'm', body: 'lost' })
    const req = a.request('b', { type: 'q' }, { timeoutMs: 300 })
    clock.advance(299)
    await Promise.resolve()
    clock.advance(1)
    await expect(req).rejects.toMatchObject({ name: 'TimeoutError' })
    heal()
    await a.send('b', { type: 'm', body: 'through' })
    await next(1)
    expect(got.map((e) => e.header.body)).toEqual(['through'])
    expect(net.log.counts()['network:partition']).toBe(2)
    await expect(a.request('b', { type: 'q' })).resolves.toMatchObject({ header: { body: 'pong' } })
  })

  it('flips bits in a copy of a tensor; the sender keeps its array; the log says which bits', async () => {
    const { net, a, got, next } = await pair({ seed: 3, rules: [{ corrupt: 1, corruptBits: 3 }] })
    const t = tensor([1, 2, 3, 4])
    await a.send('b', { type: 'm', tensors: [t] })
    await next(1)
    expect(Array.from(t.data)).toEqual([1, 2, 3, 4])
    const received = new Uint8Array((got[0]?.frames[0] as Uint8Array).slice())
    const sent = new Uint8Array(t.data.buffer)
    let diff = 0
    for (let i = 0; i < sent.length; i++) for (let b = 0; b < 8; b++) if (((sent[i]! ^ received[i]!) >> b) & 1) diff++
    expect(diff).toBeGreaterThanOrEqual(1)
    expect(diff).toBeLessThanOrEqual(3)
    const ev = net.log.events().find((e) => e.kind === 'corrupt')
    expect(ev).toMatchObject({ class: 'network', target: 'a->b', details: { tensor: 't' } })
  })

  it('caps bandwidth with a token bucket', async () => {
    const { net, a, got, next, clock } = await pair({ seed: 1, rules: [{ bandwidthBytesPerSec: 1000, burstBytes: 1000 }] })
    const big = tensor(Array.from({ length: 234 }, () => 1)) // 936 bytes + 64 header estimate = 1000
    for (let i = 0; i < 3; i++) await a.send('b', { type: 'm', tensors: [big], body: i })
    // The bucket starts empty: each message waits one more second than the previous one.
    clock.advance(999)
    await Promise.resolve()
    expect(got).toHaveLength(0)
    clock.advance(1)
    await next(1)
    clock.advance(2000)
    await next(3)
    expect(got.map((e) => e.header.body)).toEqual([0, 1, 2])
    expect(net.log.counts()['network:throttle']).toBe(3)
  })

  it('freezes an endpoint: its requests wait until released, then complete', async () => {
    const { net, a } = await pair({ seed: 1 })
    const release = net.freeze('b')
    let settled = false
    const req = a.request('b', { type: 'q' }).finally(() => { settled = true })
    await new Promise<void>((resolve) => { setImmediate(resolve) })
    expect(settled).toBe(false)
    release()
    await expect(req).resolves.toMatchObject({ header: { body: 'pong' } })
    expect(net.log.counts()['network:hold']).toBe(1)
  })

  it('rejects invalid rules', () => {
    const net = chaosTransport(memoryTransport({ network: createMemoryNetwork() }), { seed: 1 })
    expect(() => net.addRule({ drop: 1.5 })).toThrow(/drop must be a probability/)
    expect(() => net.partition(['a'])).toThrow(/at least two groups/)
  })
})
