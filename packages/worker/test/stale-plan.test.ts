/**
 * Regression: a quorum handled in the few microtasks between the step loop deciding its next step
 * and starting it (right after a commit, which is when a coordinator admits joiners) used to find no
 * step to abort, so the worker ran that step in the old epoch, waiting for peers that had moved on,
 * while its heartbeats reported the new epoch: the coordinator only ended it at the 2 s hang floor
 * (the ~2.1 s MTTR outliers of `npm run bench -- elastic`).
 *
 * A scripted coordinator drives one worker; the worker endpoint's `commit` and `quorum` handlers
 * are captured so each commit is followed by the next epoch's quorum exactly k microtasks later,
 * for every k up to {@link MAX_TICKS}: one of them lands in that window. A vote sent for an epoch
 * older than a quorum the worker had already handled is the bug. (A vote of the old epoch sent
 * *before* the quorum arrived is fine: the coordinator drops it as stale.)
 */
import {
  ElasticMessage,
  type Endpoint, type Envelope, type HeartbeatReply, type JoinReply, type MessageHandler, type QuorumBody
} from '@phalanx/core'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { afterEach, describe, expect, it } from 'vitest'
import { createWorker, type Worker } from '../src/index.js'

const SIZE = 6
const MICRO = 4
const MAX_TICKS = 40

const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

/** A `ready` the worker sent: its epoch and step, and the newest quorum epoch it had handled by then. */
interface Vote { epoch: number, step: number, known: number }

/**
 * Wraps the worker's endpoint: its `commit` handler is held until the next `quorum`, which then
 * follows it after `ticks()` microtasks; every `ready` it sends is recorded with the newest quorum
 * epoch handled by then.
 */
function instrument (endpoint: Endpoint, ticks: () => number, onVote: (vote: Vote) => void): Endpoint {
  let held: { handler: MessageHandler, env: Envelope, options: Parameters<MessageHandler>[1] } | undefined
  let known = 0
  const handle = (type: string, handler: MessageHandler): (() => void) => {
    if (type === ElasticMessage.commit) return endpoint.handle(type, (env, options) => { held = { handler, env, options } })
    if (type !== ElasticMessage.quorum) return endpoint.handle(type, handler)
    return endpoint.handle(type, async (env, options) => {
      const commit = held
      held = undefined
      if (commit !== undefined) {
        await commit.handler(commit.env, commit.options)
        for (let i = ticks(); i > 0; i--) await Promise.resolve()
      }
      const out = await handler(env, options)
      known = Math.max(known, env.header.epoch)
      return out
    })
  }
  const send: Endpoint['send'] = async (to, message, options) => {
    if (message.type === ElasticMessage.ready) onVote({ epoch: message.epoch ?? -1, step: message.step ?? -1, known })
    await endpoint.send(to, message, options)
  }
  return new Proxy(endpoint, {
    get (target, prop, receiver) {
      if (prop === 'handle') return handle
      if (prop === 'send') return send
      const v = Reflect.get(target, prop, receiver) as unknown
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
    }
  })
}

describe('step loop vs a quorum arriving right after a commit', () => {
  it('never starts a step of an epoch that a quorum handled meanwhile replaced', async () => {
    const transport = memoryTransport({ network: createMemoryNetwork() })
    const coordinator = await transport.open({ id: 'coordinator', job: 'stale' })
    closers.push(async () => { await coordinator.close() })
    const raw = await transport.open({ id: 'w', job: 'stale' })
    closers.push(async () => { await raw.close() })

    let epoch = 1
    let committed = 0
    const votes: Vote[] = []
    let wake: (() => void) | undefined
    /** The vote of `step` in `e`, or the first vote sent for an epoch the worker already knew was replaced. */
    const voteOf = async (e: number, step: number): Promise<{ epoch: number, step: number }> => {
      for (;;) {
        const bad = votes.find((v) => v.epoch < v.known)
        if (bad !== undefined) return { epoch: bad.epoch, step: bad.step }
        if (votes.some((v) => v.epoch === e && v.step === step)) return { epoch: e, step }
        await new Promise<void>((resolve) => { wake = resolve })
      }
    }
    coordinator.handle(ElasticMessage.join, () => ({ type: ElasticMessage.join, body: { role: 'member', epoch, committed } satisfies JoinReply }))
    coordinator.handle(ElasticMessage.heartbeat, () => ({ type: ElasticMessage.heartbeat, body: { known: true, epoch, committed } satisfies HeartbeatReply }))
    coordinator.connect('w', raw.address)
    const quorum = (): QuorumBody => ({
      epoch, active: true, step: committed, cursor: committed * MICRO, steps: 1000,
      members: [{ id: 'w', address: raw.address, rank: 0 }], assignment: [1], size: SIZE,
      globalBatch: MICRO, microBatch: MICRO, deterministic: true, upToDate: ['w']
    })
    let k = 0
    const state = new Float32Array(SIZE)
    const worker: Worker = createWorker(
      { size: SIZE, coordinatorAddress: coordinator.address, heartbeatIntervalMs: 1000, suspectAfterMs: 60_000, requestTimeoutMs: 5000 },
      {
        endpoint: instrument(raw, () => k, (v) => { votes.push(v); wake?.() }),
        state: { get: () => ({ tensors: [{ name: 'w', shape: [SIZE], dtype: 'float32', data: state }], meta: { step: committed, epoch } }), set: () => {} }
      }
    )
    let loop: Promise<void> = Promise.resolve()
    closers.push(async () => { await worker.stop(); await loop.catch(() => undefined) })
    await worker.start()
    loop = (async () => {
      for await (const step of worker.steps()) {
        try {
          await step.reduce(step.microBatches.map(() => new Float32Array(SIZE)))
        } catch (err) {
          if ((err as Error).name === 'StepAbortedError') continue
          throw err
        }
        await step.commit()
      }
    })()

    await coordinator.send('w', { type: ElasticMessage.quorum, epoch, step: committed, body: quorum() })
    for (k = 0; k <= MAX_TICKS; k++) {
      await expect(voteOf(epoch, committed)).resolves.toEqual({ epoch, step: committed })
      // Commit the step, then at once publish a new epoch (as the coordinator does when it admits a joiner).
      const step = committed
      await coordinator.send('w', { type: ElasticMessage.commit, epoch, step, body: { step, epoch, cursor: (step + 1) * MICRO } })
      committed++
      epoch++
      await coordinator.send('w', { type: ElasticMessage.quorum, epoch, step: committed, body: quorum() })
    }
    await expect(voteOf(epoch, committed)).resolves.toEqual({ epoch, step: committed })
    expect(votes.filter((v) => v.epoch < v.known)).toEqual([])
  })
})
