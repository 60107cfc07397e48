/**
 * Transport compliance suite: run the same cases against every {@link Transport} implementation
 * (memory, ZeroMQ over tcp and ipc, chaos decorators that promise to stay transparent).
 *
 * @example
 * ```ts
 * import { transportComplianceSuite } from '@phalanx/testing/transport'
 * import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
 *
 * transportComplianceSuite('memory', {
 *   create: ({ clock }) => memoryTransport({ network: createMemoryNetwork() }, { clock })
 * })
 * ```
 *
 * @module
 */
import {
  InvalidParametersError, createEpochFence, createFakeClock, decodeTensors, systemClock,
  type Clock, type Endpoint, type EndpointInit, type Envelope, type RejectedEvent, type Transport
} from '@phalanx/core'
import { afterEach, describe, expect, it } from 'vitest'

/** How the suite obtains a transport under test. */
export interface TransportSuiteFactory {
  /** Creates a fresh transport for one test; its request timeouts must run on `clock`. */
  create(components: { clock: Clock }): Transport | Promise<Transport>
  /** The listen address for a new endpoint (unique per call); `undefined` keeps the transport's default. */
  listen?(id: string): string | undefined
  /** Runs after each test, once its endpoints are closed. */
  cleanup?(): void | Promise<void>
}

/** Resolves with the first event `endpoint` emits of `event` that satisfies `match`. */
export async function nextRejected (endpoint: Endpoint, match: (event: RejectedEvent) => boolean = () => true): Promise<RejectedEvent> {
  let off: (() => void) | undefined
  try {
    return await new Promise<RejectedEvent>((resolve) => {
      off = endpoint.on('rejected', (event) => { if (match(event)) resolve(event) })
    })
  } finally {
    off?.()
  }
}

/** A handler recorder that resolves {@link collector.done} once `count` messages arrived. */
export function collector (count: number): { envelopes: Envelope[], done: Promise<Envelope[]>, handler: (envelope: Envelope) => void } {
  const envelopes: Envelope[] = []
  let resolve: (value: Envelope[]) => void = () => {}
  const done = new Promise<Envelope[]>((r) => { resolve = r })
  return {
    envelopes,
    done,
    handler: (envelope) => {
      envelopes.push(envelope)
      if (envelopes.length === count) resolve(envelopes)
    }
  }
}

const MiB = 1024 * 1024

/**
 * Registers the transport compliance cases (ordering, request/reply, error replies, large tensors,
 * back-pressure, close, epoch fence, job and size checks, abort, timeout, unknown peer) under
 * `describe(name)`. Every endpoint a case opens is closed after it.
 */
export function transportComplianceSuite (name: string, factory: TransportSuiteFactory): void {
  describe(`transport compliance: ${name}`, () => {
    let opened: Endpoint[] = []

    const setup = async (clock: Clock = systemClock()): Promise<(init: Partial<EndpointInit> & { id: string }) => Promise<Endpoint>> => {
      const transport = await factory.create({ clock })
      return async (init) => {
        const listen = factory.listen?.(init.id)
        const endpoint = await transport.open({ job: 'suite', ...(listen === undefined ? {} : { listen }), ...init })
        opened.push(endpoint)
        return endpoint
      }
    }

    const pair = async (initA: Partial<EndpointInit> = {}, initB: Partial<EndpointInit> = {}, clock?: Clock): Promise<{ a: Endpoint, b: Endpoint }> => {
      const open = await setup(clock)
      const a = await open({ id: 'a', ...initA })
      const b = await open({ id: 'b', ...initB })
      a.connect('b', b.address)
      b.connect('a', a.address)
      return { a, b }
    }

    afterEach(async () => {
      const endpoints = opened
      opened = []
      await Promise.all(endpoints.map(async (e) => { await e.close({ lingerMs: 0 }) }))
      await factory.cleanup?.()
    })

    it('delivers messages from one peer in the order they were sent', async () => {
      const { a, b } = await pair({ sendQueueLimit: 512 })
      const n = 300
      const got = collector(n)
      b.handle('seq', got.handler)
      await Promise.all(Array.from({ length: n }, async (_, i) => { await a.send('b', { type: 'seq', body: { i } }) }))
      const envelopes = await got.done
      expect(envelopes.map((e) => (e.header.body as { i: number }).i)).toEqual(Array.from({ length: n }, (_, i) => i))
      expect(envelopes.every((e) => e.peer === 'a' && e.header.from === 'a')).toBe(true)
      expect(a.stats().sent).toBe(n)
      expect(b.stats().received).toBe(n)
    })

    it('keeps per-sender order with two senders interleaved', async () => {
      const open = await setup()
      const r = await open({ id: 'r' })
      const s1 = await open({ id: 's1', sendQueueLimit: 256 })
      const s2 = await open({ id: 's2', sendQueueLimit: 256 })
      s1.connect('r', r.address)
      s2.connect('r', r.address)
      const n = 100
      const got = collector(2 * n)
      r.handle('m', got.handler)
      const sends: Array<Promise<void>> = []
      for (let i = 0; i < n; i++) sends.push(s1.send('r', { type: 'm', body: i }), s2.send('r', { type: 'm', body: i }))
      await Promise.all(sends)
      const envelopes = await got.done
      for (const peer of ['s1', 's2']) {
        expect(envelopes.filter((e) => e.peer === peer).map((e) => e.header.body)).toEqual(Array.from({ length: n }, (_, i) => i))
      }
    })

    it('answers requests, stamps headers and carries tensors both ways', async () => {
      const { a, b } = await pair()
      b.handle('add', (env) => {
        const { x, y } = env.header.body as { x: number, y: number }
        const [t] = decodeTensors(env)
        return { type: 'sum', body: x + y, tensors: [{ name: 'twice', shape: [3], dtype: 'float32', data: (t?.data ?? new Float32Array(3)).map((v) => 2 * v) }] }
      })
      a.epoch = 3
      const reply = await a.request('b', { type: 'add', step: 9, body: { x: 2, y: 40 }, tensors: [{ name: 'v', shape: [3], dtype: 'float32', data: new Float32Array([1, 2, 3]) }] })
      expect(reply.header).toMatchObject({ type: 'sum', body: 42, from: 'b', job: 'suite' })
      expect(reply.peer).toBe('b')
      expect(Array.from(decodeTensors(reply)[0]?.data ?? [])).toEqual([2, 4, 6])
      b.handle('echo-header', (env) => ({ type: 'h', body: { epoch: env.header.epoch, step: env.header.step, v: env.header.v } }))
      const h = await a.request('b', { type: 'echo-header', step: 9 })
      expect(h.header.body).toEqual({ epoch: 3, step: 9, v: 1 })
    })

    it('sends a handler error back as the same error class', async () => {
      const { a, b } = await pair()
      b.handle('bad', () => { throw new InvalidParametersError('x must be positive', { details: { x: -1 } }) })
      b.handle('bad-async', async () => { throw new InvalidParametersError('async failure') })
      await expect(a.request('b', { type: 'bad' })).rejects.toMatchObject({ name: 'InvalidParametersError', message: 'x must be positive', details: { x: -1 } })
      await expect(a.request('b', { type: 'bad-async' })).rejects.toMatchObject({ name: 'InvalidParametersError', message: 'async failure' })
      await expect(a.request('b', { type: 'nobody-handles-this' })).rejects.toMatchObject({ name: 'UnhandledMessageError' })
    })

    it('round-trips a 64 MiB tensor split into frames bit-exactly', async () => {
      const { a, b } = await pair()
      const n = 16 * MiB
      const data = new Float32Array(n)
      const bits = new Uint32Array(data.buffer)
      // Every 32-bit pattern class: NaN payloads, -0, denormals, infinities.
      for (let i = 0; i < n; i++) bits[i] = Math.imul(i, 2654435761) >>> 0
      let frameCount = -1
      b.handle('echo', (env) => {
        frameCount = env.frames.length
        const [t] = decodeTensors(env)
        return { type: 'echo', tensors: t === undefined ? [] : [t] }
      })
      const reply = await a.request('b', { type: 'echo', tensors: [{ name: 'big', shape: [n], dtype: 'float32', data }] }, { timeoutMs: 15_000 })
      expect(frameCount).toBe(8)
      const [t] = decodeTensors(reply)
      expect(t?.shape).toEqual([n])
      const back = new Uint32Array((t?.data ?? new Float32Array(0)).buffer, t?.data.byteOffset, t?.data.length)
      let mismatches = 0
      for (let i = 0; i < n; i++) if (back[i] !== (Math.imul(i, 2654435761) >>> 0)) mismatches++
      expect(back.length).toBe(n)
      expect(mismatches).toBe(0)
      expect(b.stats().bytesReceived).toBe(n * 4)
    }, 30_000)

    it('rejects sends beyond the queue limit with QueueFullError and delivers the rest in order', async () => {
      const { a, b } = await pair({ sendQueueLimit: 4 })
      const got = collector(4)
      b.handle('q', got.handler)
      const results = await Promise.allSettled(Array.from({ length: 10 }, async (_, i) => { await a.send('b', { type: 'q', body: i }) }))
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(4)
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')
      expect(failed).toHaveLength(6)
      expect(failed.every((r) => (r.reason as Error).name === 'QueueFullError')).toBe(true)
      expect((await got.done).map((e) => e.header.body)).toEqual([0, 1, 2, 3])
      // The queue drained: sending works again.
      const again = collector(1)
      b.handle('q2', again.handler)
      await a.send('b', { type: 'q2' })
      await again.done
    })

    it('rejects pending requests with ClosedError on close, refuses sends after, closes idempotently', async () => {
      const { a, b } = await pair()
      let handlerSignal: AbortSignal | undefined
      let arrived: () => void = () => {}
      const reached = new Promise<void>((resolve) => { arrived = resolve })
      b.handle('hang', async (_env, { signal }) => {
        handlerSignal = signal
        arrived()
        await new Promise<void>((resolve) => { signal.addEventListener('abort', () => { resolve() }, { once: true }) })
      })
      const pending = a.request('b', { type: 'hang' })
      await reached
      await Promise.all([a.close(), expect(pending).rejects.toMatchObject({ name: 'ClosedError' })])
      await expect(a.send('b', { type: 'x' })).rejects.toMatchObject({ name: 'ClosedError' })
      await expect(a.request('b', { type: 'x' })).rejects.toMatchObject({ name: 'ClosedError' })
      await a.close()
      await a[Symbol.asyncDispose]()
      await b.close()
      expect(handlerSignal?.aborted).toBe(true)
    })

    it('reports a closed peer: peer:disconnect and PeerUnreachableError for its pending requests', async () => {
      const { a, b } = await pair()
      let arrived: () => void = () => {}
      const reached = new Promise<void>((resolve) => { arrived = resolve })
      b.handle('hang', async (_env, { signal }) => {
        arrived()
        await new Promise<void>((resolve) => { signal.addEventListener('abort', () => { resolve() }, { once: true }) })
      })
      const disconnected = new Promise<string>((resolve) => { a.on('peer:disconnect', resolve) })
      // The expectation is attached now: the rejection may come while b is still closing.
      const pending = expect(a.request('b', { type: 'hang' }, { timeoutMs: 15_000 })).rejects.toMatchObject({ name: 'PeerUnreachableError' })
      await reached
      await b.close({ lingerMs: 0 })
      await pending
      expect(await disconnected).toBe('b')
    })

    it('rejects pending requests and forgets the route on disconnect()', async () => {
      const { a, b } = await pair()
      let arrived: () => void = () => {}
      const reached = new Promise<void>((resolve) => { arrived = resolve })
      b.handle('hang', async (_env, { signal }) => {
        arrived()
        await new Promise<void>((resolve) => { signal.addEventListener('abort', () => { resolve() }, { once: true }) })
      })
      const pending = a.request('b', { type: 'hang' })
      await reached
      a.disconnect('b')
      await expect(pending).rejects.toMatchObject({ name: 'PeerUnreachableError' })
      await expect(a.send('b', { type: 'x' })).rejects.toMatchObject({ name: 'UnknownPeerError' })
      a.disconnect('b')
    })

    it('drops messages from older epochs and counts them as StaleEpochError', async () => {
      const fence = createEpochFence({ epoch: 5, exempt: ['join'] })
      const { a, b } = await pair({}, { fence })
      const got = collector(2)
      b.handle('grad', got.handler)
      b.handle('join', got.handler)
      const stale = nextRejected(b)
      a.epoch = 4
      await a.send('b', { type: 'grad', body: 'old' })
      await a.send('b', { type: 'join', body: 'exempt' })
      await a.send('b', { type: 'grad', epoch: 5, body: 'current' })
      const envelopes = await got.done
      expect(envelopes.map((e) => e.header.body)).toEqual(['exempt', 'current'])
      expect(await stale).toMatchObject({ reason: 'StaleEpochError', peer: 'a' })
      expect(b.stats().rejected).toEqual({ StaleEpochError: 1 })
      expect(fence.dropped).toBe(1)
      // The endpoint stamps the fence's epoch once it moves on.
      fence.advance(8)
      expect(b.epoch).toBe(8)
      b.handle('e', (env) => ({ type: 'e', body: env.header.epoch }))
      a.epoch = 9
      const reply = await a.request('b', { type: 'e' })
      expect(reply.header.epoch).toBe(8)
      expect(reply.header.body).toBe(9)
    })

    it('ends a request whose reply comes from an older epoch with StaleEpochError', async () => {
      const fence = createEpochFence({ epoch: 5 })
      const { a, b } = await pair({ fence }, {})
      b.handle('q', () => ({ type: 'r', epoch: 2 }))
      await expect(a.request('b', { type: 'q' })).rejects.toMatchObject({ name: 'StaleEpochError' })
      expect(a.stats().rejected).toEqual({ StaleEpochError: 1 })
    })

    it('reaches a restarted peer at its new address', async () => {
      const open = await setup()
      const a = await open({ id: 'a' })
      const b = await open({ id: 'b' })
      b.handle('who', () => ({ type: 'me', body: 'first' }))
      a.connect('b', b.address)
      expect((await a.request('b', { type: 'who' })).header.body).toBe('first')
      const lost = new Promise<string>((resolve) => { a.on('peer:disconnect', resolve) })
      await b.close()
      expect(await lost).toBe('b')
      const b2 = await open({ id: 'b' })
      b2.handle('who', () => ({ type: 'me', body: 'second' }))
      a.connect('b', b2.address)
      expect((await a.request('b', { type: 'who' })).header.body).toBe('second')
    })

    it('rejects messages of another job and oversized messages, and refuses oversized sends', async () => {
      const open = await setup()
      const a = await open({ id: 'a', job: 'job-1' })
      const b = await open({ id: 'b', job: 'job-2', limits: { maxMessageBytes: 4096 } })
      a.connect('b', b.address)
      const wrongJob = nextRejected(b)
      await a.send('b', { type: 'm' })
      expect(await wrongJob).toMatchObject({ reason: 'UnauthorizedPeerError', peer: 'a' })
      const tooLarge = nextRejected(b, (e) => e.reason === 'MessageTooLargeError')
      const c = await open({ id: 'c', job: 'job-2' })
      c.connect('b', b.address)
      await c.send('b', { type: 'm', tensors: [{ name: 't', shape: [2048], dtype: 'float32', data: new Float32Array(2048) }] })
      expect(await tooLarge).toMatchObject({ reason: 'MessageTooLargeError', peer: 'c' })
      expect(b.stats().rejected).toEqual({ UnauthorizedPeerError: 1, MessageTooLargeError: 1 })
      expect(b.stats().received).toBe(0)
      const small = await open({ id: 'small', job: 'job-2', limits: { maxMessageBytes: 1024 } })
      small.connect('b', b.address)
      await expect(small.send('b', { type: 'm', tensors: [{ name: 't', shape: [512], dtype: 'float32', data: new Float32Array(512) }] }))
        .rejects.toMatchObject({ name: 'MessageTooLargeError' })
      await expect(small.send('b', { type: '' })).rejects.toMatchObject({ name: 'InvalidParametersError' })
      await expect(small.send('b', { type: 'm', tensors: [{ name: 't', shape: [3], dtype: 'float32', data: new Float32Array(2) }] }))
        .rejects.toMatchObject({ name: 'InvalidParametersError' })
    })

    it('aborts sends and requests through their AbortSignal', async () => {
      const { a, b } = await pair()
      const aborted = AbortSignal.abort()
      await expect(a.send('b', { type: 'x' }, { signal: aborted })).rejects.toMatchObject({ name: 'AbortError' })
      await expect(a.request('b', { type: 'x' }, { signal: aborted })).rejects.toMatchObject({ name: 'AbortError' })

      let arrived: () => void = () => {}
      const reached = new Promise<void>((resolve) => { arrived = resolve })
      b.handle('hang', async (_env, { signal }) => {
        arrived()
        await new Promise<void>((resolve) => { signal.addEventListener('abort', () => { resolve() }, { once: true }) })
      })
      const controller = new AbortController()
      const pending = a.request('b', { type: 'hang' }, { signal: controller.signal, timeoutMs: 15_000 })
      await reached
      controller.abort()
      await expect(pending).rejects.toMatchObject({ name: 'AbortError' })

      // A send still waiting in the queue is withdrawn; the ones around it arrive.
      const got = collector(2)
      b.handle('m', got.handler)
      const queued = new AbortController()
      const first = a.send('b', { type: 'm', body: 1 })
      const second = a.send('b', { type: 'm', body: 2 }, { signal: queued.signal })
      const third = a.send('b', { type: 'm', body: 3 })
      queued.abort()
      await expect(second).rejects.toMatchObject({ name: 'AbortError' })
      await Promise.all([first, third])
      expect((await got.done).map((e) => e.header.body)).toEqual([1, 3])
    })

    it('times out requests on the injected clock', async () => {
      const clock = createFakeClock(1_000)
      const { a, b } = await pair({ requestTimeoutMs: 2_000 }, {}, clock)
      let arrived: () => void = () => {}
      const reached = new Promise<void>((resolve) => { arrived = resolve })
      b.handle('hang', async (_env, { signal }) => {
        arrived()
        await new Promise<void>((resolve) => { signal.addEventListener('abort', () => { resolve() }, { once: true }) })
      })
      const byDefault = a.request('b', { type: 'hang' })
      const explicit = a.request('b', { type: 'hang' }, { timeoutMs: 500 })
      await reached
      clock.advance(500)
      await expect(explicit).rejects.toMatchObject({ name: 'TimeoutError' })
      clock.advance(1_499)
      const raced = await Promise.race([byDefault.then(() => 'settled', () => 'settled'), Promise.resolve('pending')])
      expect(raced).toBe('pending')
      clock.advance(1)
      await expect(byDefault).rejects.toMatchObject({ name: 'TimeoutError' })
      expect(clock.pending()).toBe(0)
    })

    it('refuses unknown peers with UnknownPeerError', async () => {
      const { a } = await pair()
      await expect(a.send('nobody', { type: 'x' })).rejects.toMatchObject({ name: 'UnknownPeerError' })
      await expect(a.request('nobody', { type: 'x' })).rejects.toMatchObject({ name: 'UnknownPeerError' })
    })

    it('counts a throwing fire-and-forget handler and keeps serving', async () => {
      const { a, b } = await pair()
      const failed = nextRejected(b)
      b.handle('boom', () => { throw new InvalidParametersError('no') })
      const off = b.handle('ok', () => ({ type: 'ok' }))
      await a.send('b', { type: 'boom' })
      expect(await failed).toMatchObject({ reason: 'InvalidParametersError', peer: 'a' })
      await expect(a.request('b', { type: 'ok' })).resolves.toMatchObject({ header: { type: 'ok' } })
      expect(() => b.handle('ok', () => undefined)).toThrow(expect.objectContaining({ name: 'InvalidParametersError' }))
      off()
      await expect(a.request('b', { type: 'ok' })).rejects.toMatchObject({ name: 'UnhandledMessageError' })
    })
  })
}
