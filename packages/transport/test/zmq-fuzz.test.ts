import { connect as netConnect } from 'node:net'
import { createEpochFence, type Endpoint, type RejectedEvent } from '@phalanx/core'
import { zmqTransport } from '@phalanx/transport/zmq'
import { pack } from 'msgpackr'
import { afterEach, describe, expect, it } from 'vitest'
import * as zmq from 'zeromq'

/** Seeded xorshift32, so every run sends the same 3,000 messages. */
function rng (seed: number): () => number {
  let s = seed >>> 0 || 1
  return () => {
    s ^= s << 13; s >>>= 0
    s ^= s >>> 17
    s ^= s << 5; s >>>= 0
    return s / 0x1_0000_0000
  }
}

const LIMITS = { maxFrameBytes: 16 * 1024, maxHeaderBytes: 4 * 1024, maxMessageBytes: 64 * 1024, maxFrames: 64 }

function header (fields: Record<string, unknown> = {}): Record<string, unknown> {
  return { v: 1, type: 'fuzz', job: 'fuzz-job', epoch: 10, step: 0, from: 'fuzzer', seq: 1, ...fields }
}

function randomBytes (next: () => number, length: number): Buffer {
  const out = Buffer.alloc(length)
  for (let i = 0; i < length; i++) out[i] = Math.floor(next() * 256)
  return out
}

/** A header that can never pass: its job differs in length and content from the endpoint's. */
const FOREIGN = pack(header({ job: 'a-completely-different-job-name', tensors: [{ name: 't', shape: [2], dtype: 'float32', frames: 1 }], body: { k: [1, 2, 3] } }))

function mutate (next: () => number): Buffer[] {
  const head = Buffer.from(FOREIGN)
  const frames: Buffer[] = [head, Buffer.alloc(8)]
  const kind = Math.floor(next() * 5)
  if (kind === 0) {
    for (let k = 0, n = 1 + Math.floor(next() * 4); k < n; k++) { const at = Math.floor(next() * head.length); head[at] = (head[at] as number) ^ (1 << Math.floor(next() * 8)) }
  } else if (kind === 1) {
    frames[0] = head.subarray(0, Math.floor(next() * head.length))
  } else if (kind === 2) {
    const at = Math.floor(next() * head.length)
    frames[0] = Buffer.concat([head.subarray(0, at), randomBytes(next, 1 + Math.floor(next() * 8)), head.subarray(at)])
  } else if (kind === 3) {
    frames.push(Buffer.alloc(4 * Math.floor(next() * 8)))
  } else {
    frames.pop()
    const at = Math.floor(next() * head.length)
    head[at] = Math.floor(next() * 256)
  }
  return frames
}

/** Well-formed enough to reach one specific check, which then rejects it. */
function structured (i: number): { frames: Buffer[], reason: string } {
  switch (i % 7) {
    case 0: return { frames: [pack(header({ v: 2 }))], reason: 'ProtocolVersionError' }
    case 1: return { frames: [pack(header({ job: 'other' }))], reason: 'UnauthorizedPeerError' }
    case 2: return { frames: [pack(header({ tensors: [{ name: 't', shape: [4], dtype: 'float32', frames: 1 }] }))], reason: 'MalformedMessageError' }
    case 3: return { frames: [pack(header()), ...Array.from({ length: 70 }, () => Buffer.alloc(4))], reason: 'MessageTooLargeError' }
    case 4: return { frames: [pack(header({ body: 'x'.repeat(5000) }))], reason: 'MessageTooLargeError' }
    case 5: return {
      frames: [pack(header({ tensors: [{ name: 't', shape: [5 * 4096], dtype: 'float32', frames: 5 }] })), ...Array.from({ length: 5 }, () => Buffer.alloc(16 * 1024))],
      reason: 'MessageTooLargeError'
    }
    default: return { frames: [pack(header({ epoch: 3 }))], reason: 'StaleEpochError' }
  }
}

describe('zmq endpoint under malformed input', () => {
  const cleanup: Array<() => Promise<void> | void> = []
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn()
  })

  const openTarget = async (): Promise<Endpoint> => {
    const endpoint = await zmqTransport().open({ id: 'target', job: 'fuzz-job', listen: 'tcp://127.0.0.1:0', limits: LIMITS, fence: createEpochFence({ epoch: 10 }) })
    cleanup.push(async () => { await endpoint.close({ lingerMs: 0 }) })
    endpoint.handle('ping', () => ({ type: 'pong' }))
    return endpoint
  }

  const rawDealer = (address: string, routingId: string): zmq.Dealer => {
    const dealer = new zmq.Dealer({ routingId, linger: 0 })
    dealer.connect(address)
    cleanup.push(() => { dealer.close() })
    return dealer
  }

  /** A valid request from a raw socket; its reply proves everything sent before it was processed. */
  const ping = async (dealer: zmq.Dealer, seq: number): Promise<Record<string, unknown>> => {
    await dealer.send([pack(header({ type: 'ping', seq, req: seq }))])
    const [head] = await dealer.receive()
    const { unpack } = await import('msgpackr')
    return unpack(head as Buffer) as Record<string, unknown>
  }

  it('drops and counts 3,000 random, mutated and invalid messages without crashing', async () => {
    const target = await openTarget()
    const events: RejectedEvent[] = []
    target.on('rejected', (e) => { events.push(e) })
    const dealer = rawDealer(target.address, 'fuzzer')
    const next = rng(0x5eed)
    const expected: Record<string, number> = {}
    let randomAndMutated = 0
    const total = 3_000
    for (let i = 0; i < total; i++) {
      let frames: Buffer[]
      if (i % 3 === 0) {
        frames = [randomBytes(next, Math.floor(next() * 300)), ...Array.from({ length: Math.floor(next() * 3) }, () => randomBytes(next, Math.floor(next() * 64)))]
        randomAndMutated++
      } else if (i % 3 === 1) {
        frames = mutate(next)
        randomAndMutated++
      } else {
        const s = structured(i)
        frames = s.frames
        expected[s.reason] = (expected[s.reason] ?? 0) + 1
      }
      await dealer.send(frames)
    }
    const reply = await ping(dealer, 99)
    expect(reply).toMatchObject({ type: 'pong', re: 99, from: 'target' })

    const stats = target.stats()
    const rejectedTotal = Object.values(stats.rejected).reduce((a, b) => a + b, 0)
    expect(rejectedTotal).toBe(total)
    expect(events).toHaveLength(total)
    expect(events.every((e) => e.peer === 'fuzzer')).toBe(true)
    expect(stats.received).toBe(1)
    // The structured cases each reach exactly one check.
    for (const [reason, count] of Object.entries(expected)) expect(stats.rejected[reason] ?? 0).toBeGreaterThanOrEqual(count)
    const structuredTotal = Object.values(expected).reduce((a, b) => a + b, 0)
    expect(structuredTotal + randomAndMutated).toBe(total)
    expect(Object.keys(stats.rejected).sort()).toEqual(expect.arrayContaining(['MalformedMessageError', 'MessageTooLargeError', 'ProtocolVersionError', 'StaleEpochError', 'UnauthorizedPeerError']))
    expect(Object.keys(stats.rejected).every((k) => ['MalformedMessageError', 'MessageTooLargeError', 'ProtocolVersionError', 'StaleEpochError', 'UnauthorizedPeerError'].includes(k))).toBe(true)
  }, 60_000)

  it('counts each structured rejection under its exact reason', async () => {
    const target = await openTarget()
    const dealer = rawDealer(target.address, 'fuzzer')
    const expected: Record<string, number> = {}
    for (let i = 0; i < 70; i++) {
      const s = structured(i)
      expected[s.reason] = (expected[s.reason] ?? 0) + 1
      await dealer.send(s.frames)
    }
    await ping(dealer, 1)
    expect(target.stats().rejected).toEqual(expected)
  })

  it('survives garbage from a raw TCP socket and an over-cap frame, and keeps serving', async () => {
    const target = await openTarget()
    const url = new URL(target.address.replace('tcp://', 'http://'))
    const next = rng(7)
    for (let round = 0; round < 5; round++) {
      const socket = netConnect(Number(url.port), url.hostname)
      cleanup.push(() => { socket.destroy() })
      await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
      socket.on('error', () => {})
      await new Promise<void>((resolve) => { socket.write(randomBytes(next, 4096), () => { resolve() }) })
      socket.destroy()
    }
    const big = rawDealer(target.address, 'big-sender')
    // Above ZMQ_MAXMSGSIZE: ZeroMQ drops the connection before the bytes reach JavaScript.
    await big.send([pack(header()), Buffer.alloc(LIMITS.maxFrameBytes + 4096)])
    const dealer = rawDealer(target.address, 'fuzzer')
    expect(await ping(dealer, 5)).toMatchObject({ type: 'pong', re: 5 })
    expect(target.stats().received).toBe(1)
    // The over-cap frame never reached JavaScript; the garbage was dropped as malformed.
    expect(target.stats().rejected.MessageTooLargeError).toBeUndefined()
    expect(Object.keys(target.stats().rejected).every((k) => k === 'MalformedMessageError')).toBe(true)
  })
})
