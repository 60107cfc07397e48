import { randomBytes } from 'node:crypto'
import {
  AbortError, ChecksumMismatchError, ClosedError, ElasticMessage, InvalidParametersError, MalformedMessageError, NotFoundError,
  StepAbortedError, TimeoutError, bytesOf, componentLogger, crc32c, decodeTensors, checkFrames, flattenStateDict, systemClock,
  aggBodySchema, commitBodySchema, doneBodySchema, gradBodySchema, gramBodySchema, healChunkBodySchema, healMetaBodySchema,
  healMetaReplySchema, heartbeatReplySchema, joinReplySchema, quorumBodySchema,
  type AbortOptions, type Aggregator, type Clock, type Endpoint, type Envelope, type HealMetaReply, type HeartbeatBody,
  type JoinBody, type Logger, type NamedTensor, type OutboundMessage, type PhalanxConfig, type QuorumBody, type StateDict,
  type StateMeta, type TensorSpec, type TimerHandle, type WorkerPhase
} from '@phalanx/core'
import type { z } from 'zod'

/** Tunables of {@link createWorker}. */
export interface WorkerInit {
  /** Length of the flat gradient vector (the trainable parameters, in `StateDict` order). */
  size: number
  /** Address of the coordinator's endpoint. */
  coordinatorAddress: string
  /**
   * Peer id of the coordinator.
   * @default 'coordinator'
   */
  coordinator?: string
  /**
   * Interval of heartbeats to the coordinator.
   * @default 100
   */
  heartbeatIntervalMs?: number
  /**
   * Coordinator silence after which this worker joins again (a restarted coordinator).
   * @default 500
   */
  suspectAfterMs?: number
  /**
   * Deadline of join, heal and other requests.
   * @default 2000
   */
  requestTimeoutMs?: number
  /**
   * Bytes per heal chunk (each CRC32C-checked, re-fetched from another peer when bad).
   * @default 4 MiB
   */
  healChunkBytes?: number
  /**
   * Chunk requests in flight per heal source.
   * @default 2
   */
  healConcurrency?: number
  /**
   * Seed handed to randomised aggregation rules (mixed with the step).
   * @default 0
   */
  seed?: number
  /** Reported to the coordinator at join. */
  capabilities?: Record<string, string | number | boolean>
}

/** How the worker reads and replaces the trainer's committed state (for healing). */
export interface StateHooks {
  /** The committed state (parameters and optimiser slots) as it is at a step boundary. */
  get(): StateDict | Promise<StateDict>
  /** Replaces the trainer's state by a healed one (same layout as `get()`). */
  set(state: StateDict): void | Promise<void>
}

/** Collaborators of {@link createWorker}. */
export interface WorkerComponents {
  /** This worker's open endpoint; its id is the worker id. */
  endpoint: Endpoint
  /** Serves and receives healing. */
  state: StateHooks
  /**
   * Robust aggregation rule run by this worker on the shard it owns; absent = the mean
   * (summed in float64 in canonical order).
   */
  aggregator?: Aggregator
  /** @default systemClock() */
  clock?: Clock
  /** @default silent */
  logger?: Logger
}

/** A fixed micro-batch: global sample positions `[start, end)`. */
export interface MicroBatch {
  /** Index within the step, `0 ≤ index < globalBatch / microBatch`. */
  readonly index: number
  readonly start: number
  readonly end: number
}

/** Options of {@link TrainingStep.reduce}. */
export interface ReduceOptions extends AbortOptions {
  /** Mean training loss of this worker's micro-batches, reported with its vote (ignored unless finite). */
  loss?: number
}

/** One training step handed to user code. */
export interface TrainingStep {
  /** Step number (committed steps before it). */
  readonly step: number
  /** Membership epoch it runs in. */
  readonly epoch: number
  /** The micro-batches this worker computes, in index order. */
  readonly microBatches: readonly MicroBatch[]
  /** Aborted when the step is dropped (epoch change, eviction, stop). */
  readonly signal: AbortSignal
  /**
   * Hands over one mean gradient per micro-batch (same order as {@link microBatches}, each of
   * length `size`) and resolves with the aggregated gradient of the whole global batch.
   * @throws `StepAbortedError` when the epoch changed before the aggregate was complete
   */
  reduce(gradients: readonly Float32Array[], options?: ReduceOptions): Promise<Float32Array>
  /** Resolves true when the step was committed everywhere (then apply the aggregate), false when it was dropped. */
  commit(options?: AbortOptions): Promise<boolean>
}

/** Subscribe-only events of a worker. */
export interface WorkerEvents {
  /** A quorum arrived. `rank` is -1 when this worker is not in it. */
  epoch: (event: { epoch: number, step: number, rank: number, active: boolean, members: string[] }) => void
  /** In-flight work was dropped. */
  abort: (event: { step: number, epoch: number, reason: string }) => void
  /** A step committed. `loss`: the coordinator's mean micro-batch loss of the step, when every member reported one. */
  commit: (event: { step: number, epoch: number, loss?: number }) => void
  /** The state was pulled from peers. */
  heal: (event: { step: number, bytes: number, ms: number, sources: string[], chunks: number, refetched: number }) => void
  /** The micro-batch assignment changed without an epoch change. */
  reschedule: (event: { step: number, microBatches: number }) => void
}

/** What a worker is doing. */
export interface WorkerStatus {
  joined: boolean
  epoch: number
  committed: number
  rank: number
  phase: WorkerPhase
  done: boolean
}

/** The elastic data-parallel worker: see docs/elastic.md. */
export interface Worker extends AsyncDisposable {
  readonly id: string
  /** Registers handlers, joins the coordinator and starts heartbeats. Idempotent. */
  start(options?: AbortOptions): Promise<void>
  /** Aborts the step in flight, stops heartbeats and removes handlers (the endpoint is the caller's). Idempotent. */
  stop(options?: AbortOptions): Promise<void>
  /** Tells the coordinator this worker leaves, then stops. */
  leave(options?: AbortOptions): Promise<void>
  /** The steps to train, until the job is done. Heals transparently when behind. */
  steps(options?: AbortOptions): AsyncIterableIterator<TrainingStep>
  status(): WorkerStatus
  on<E extends keyof WorkerEvents>(event: E, listener: WorkerEvents[E]): () => void
}

interface Inbound {
  type: string
  from: string
  epoch: number
  step: number
  body: unknown
  tensors: Float32Array[]
}

interface Pending {
  step: number
  epoch: number
  outcome: Promise<boolean>
  resolve: (committed: boolean) => void
  settled: boolean
}

interface Snapshot {
  step: number
  flat: Float32Array
  crcs: number[]
  specs: TensorSpec[]
  meta: StateMeta
  chunkFloats: number
}

const MAX_INBOX = 8192

function parseBody<T> (schema: z.ZodType<T>, body: unknown, type: string): T {
  const r = schema.safeParse(body)
  if (!r.success) throw new MalformedMessageError(`Invalid ${type} body`)
  return r.data
}

/** Maps a resolved configuration to {@link WorkerInit}. */
export function workerInitFromConfig (config: PhalanxConfig, init: Pick<WorkerInit, 'size' | 'coordinatorAddress'> & Partial<WorkerInit>): WorkerInit {
  return {
    heartbeatIntervalMs: config.timeouts.heartbeatIntervalMs,
    suspectAfterMs: config.timeouts.suspectAfterMs,
    requestTimeoutMs: config.timeouts.requestTimeoutMs,
    seed: config.job.seed,
    ...init
  }
}

/** Creates a {@link Worker}. Nothing runs until `start()`. */
export function createWorker (init: WorkerInit, components: WorkerComponents): Worker {
  const { endpoint, state: hooks, aggregator } = components
  const clock = components.clock ?? systemClock()
  const log = componentLogger(components.logger, 'worker').child({ worker: endpoint.id })
  const me = endpoint.id
  const coordinatorId = init.coordinator ?? 'coordinator'
  const heartbeatIntervalMs = init.heartbeatIntervalMs ?? 100
  const suspectAfterMs = init.suspectAfterMs ?? 500
  const requestTimeoutMs = init.requestTimeoutMs ?? 2000
  const chunkFloats = Math.max(1, Math.floor((init.healChunkBytes ?? 4 * 1024 * 1024) / 4))
  const healConcurrency = Math.max(1, init.healConcurrency ?? 2)
  const seed = init.seed ?? 0
  if (!Number.isInteger(init.size) || init.size < 0) throw new InvalidParametersError(`size must be a non-negative integer, got ${init.size}`)
  const size = init.size
  const incarnation = randomBytes(8).toString('hex')
  const useMean = aggregator === undefined || aggregator.name === 'Average'

  let started = false
  const life = new AbortController()
  let joined = false
  let joining = false
  let acceptAnyEpoch = true
  let coordinatorHeard = 0
  let heartbeatInFlight = false
  let heartbeatTimer: TimerHandle | undefined
  let epoch = 0
  let quorum: QuorumBody | undefined
  let assignment: number[] = []
  let nextStep = 0
  let committed = 0
  let rank = -1
  let phase: WorkerPhase = 'idle'
  let done = false
  let atBoundary = false
  let pending: Pending | undefined
  let committedLoss: { step: number, loss: number } | undefined
  let stepAbort: AbortController | undefined
  let snapshot: Snapshot | undefined
  let inbox: Inbound[] = []
  const waiters = new Set<() => void>()
  const cleanups: Array<() => void> = []
  const listeners: { [E in keyof WorkerEvents]: Set<WorkerEvents[E]> } = {
    epoch: new Set(), abort: new Set(), commit: new Set(), heal: new Set(), reschedule: new Set()
  }

  const emit = <E extends keyof WorkerEvents>(event: E, ...args: Parameters<WorkerEvents[E]>): void => {
    for (const l of listeners[event]) {
      try { (l as (...a: Parameters<WorkerEvents[E]>) => void)(...args) } catch (err) { log.error({ err, event }, 'event listener threw') }
    }
  }
  const notify = (): void => { for (const w of [...waiters]) w() }

  /** Resolves with the first non-undefined value of `check`, re-evaluated on every state change. */
  const waitUntil = async <T>(check: () => T | undefined, signal: AbortSignal, onAbort: () => Error): Promise<T> => {
    const first = check()
    if (first !== undefined) return first
    if (signal.aborted) throw onAbort()
    let waiter: (() => void) | undefined
    let abortListener: (() => void) | undefined
    try {
      return await new Promise<T>((resolve, reject) => {
        waiter = () => {
          try {
            const v = check()
            if (v !== undefined) resolve(v)
          } catch (err) { reject(err) }
        }
        abortListener = () => { reject(onAbort()) }
        waiters.add(waiter)
        signal.addEventListener('abort', abortListener, { once: true })
      })
    } finally {
      if (waiter !== undefined) waiters.delete(waiter)
      if (abortListener !== undefined) signal.removeEventListener('abort', abortListener)
    }
  }

  const withTimeout = (ms: number, parent: AbortSignal): { signal: AbortSignal, done: () => void } => {
    const ctl = new AbortController()
    const timer = clock.setTimeout(() => { ctl.abort(new TimeoutError(`No answer within ${ms} ms`)) }, ms)
    const onParent = (): void => { ctl.abort(parent.reason) }
    parent.addEventListener('abort', onParent, { once: true })
    return { signal: ctl.signal, done: () => { timer.cancel(); parent.removeEventListener('abort', onParent) } }
  }

  const settlePending = (committedCount: number): void => {
    if (pending === undefined || pending.settled) return
    pending.settled = true
    pending.resolve(pending.step < committedCount)
  }

  const abortInFlight = (reason: string): void => {
    if (stepAbort !== undefined && !stepAbort.signal.aborted) {
      stepAbort.abort(new StepAbortedError(`Step ${nextStep} aborted: ${reason}`, { details: { reason, epoch } }))
      emit('abort', { step: nextStep, epoch, reason })
    }
  }

  const onQuorum = (q: QuorumBody): void => {
    if (q.epoch <= epoch && !acceptAnyEpoch) return
    acceptAnyEpoch = false
    abortInFlight('epoch')
    epoch = q.epoch
    quorum = q
    assignment = q.assignment
    nextStep = q.step
    settlePending(q.step)
    inbox = inbox.filter((m) => m.epoch >= epoch)
    rank = q.members.findIndex((m) => m.id === me)
    for (const m of q.members) if (m.id !== me) endpoint.connect(m.id, m.address)
    log.debug({ epoch, step: q.step, rank, active: q.active }, 'quorum')
    emit('epoch', { epoch, step: q.step, rank, active: q.active, members: q.members.map((m) => m.id) })
    notify()
  }

  const coordinatorLost = (reason: string): void => {
    if (!joined) return
    log.warn({ reason }, 'coordinator lost; joining again')
    joined = false
    acceptAnyEpoch = true
    abortInFlight('coordinator-lost')
    quorum = undefined
    notify()
    void joinLoop()
  }

  const heartbeat = async (): Promise<void> => {
    if (!joined || heartbeatInFlight || !started) return
    if (clock.now() - coordinatorHeard > suspectAfterMs) { coordinatorLost('silent'); return }
    heartbeatInFlight = true
    const body: HeartbeatBody = { incarnation, epoch, step: nextStep, committed, phase, ...(pending !== undefined && !pending.settled ? { pending: pending.step } : {}) }
    try {
      const reply = await endpoint.request(coordinatorId, { type: ElasticMessage.heartbeat, body }, { timeoutMs: suspectAfterMs, signal: life.signal })
      const r = parseBody(heartbeatReplySchema, reply.header.body, 'heartbeat reply')
      coordinatorHeard = clock.now()
      if (!r.known) {
        log.info({ epoch: r.epoch }, 'coordinator does not know this worker; joining again')
        joined = false
        acceptAnyEpoch = true
        settlePending(r.committed)
        abortInFlight('evicted')
        quorum = undefined
        notify()
        void joinLoop()
        return
      }
      if (r.quorum !== undefined) onQuorum(r.quorum)
      if (r.done === true) { done = true; settlePending(r.committed); notify() }
    } catch (err) {
      log.debug({ err: (err as Error).name }, 'heartbeat failed')
    } finally {
      heartbeatInFlight = false
    }
  }

  const joinLoop = async (): Promise<void> => {
    if (joining) return
    joining = true
    try {
      while (started && !joined) {
        const body: JoinBody = { id: me, address: endpoint.address, incarnation, size, committed, ...(pending !== undefined && !pending.settled ? { pending: pending.step } : {}), ...(init.capabilities === undefined ? {} : { capabilities: init.capabilities }) }
        try {
          const reply = await endpoint.request(coordinatorId, { type: ElasticMessage.join, body }, { timeoutMs: requestTimeoutMs, signal: life.signal })
          const r = parseBody(joinReplySchema, reply.header.body, 'join reply')
          joined = true
          coordinatorHeard = clock.now()
          log.info({ role: r.role, epoch: r.epoch, committed: r.committed }, 'joined')
          notify()
        } catch (err) {
          if (!started) return
          log.debug({ err: (err as Error).name }, 'join failed; retrying')
          try { await clock.sleep(heartbeatIntervalMs, { signal: life.signal }) } catch { return }
        }
      }
    } finally {
      joining = false
    }
  }

  const onPeerMessage = (env: Envelope): void => {
    const h = env.header
    if (h.epoch < epoch) return
    checkFrames(h, env.frames)
    const tensors = decodeTensors(env).map((t) => t.data.slice())
    if (inbox.length >= MAX_INBOX) inbox.shift()
    inbox.push({ type: h.type, from: env.peer, epoch: h.epoch, step: h.step, body: h.body, tensors })
    notify()
  }

  const myMicroBatches = (s: number, q: QuorumBody): MicroBatch[] => {
    let first = 0
    for (let r = 0; r < rank; r++) first += assignment[r] as number
    const out: MicroBatch[] = []
    for (let k = 0; k < (assignment[rank] ?? 0); k++) {
      const index = first + k
      const start = s * q.globalBatch + index * q.microBatch
      out.push({ index, start, end: start + q.microBatch })
    }
    return out
  }

  const shard = (w: number, r: number): [number, number] => [Math.floor((r * size) / w), Math.floor(((r + 1) * size) / w)]

  const sendOrKeep = async (to: string, message: OutboundMessage & { epoch: number, step: number }): Promise<void> => {
    if (to === me) {
      inbox.push({ type: message.type, from: me, epoch: message.epoch, step: message.step, body: message.body, tensors: (message.tensors ?? []).map((t) => t.data) })
      notify()
      return
    }
    try {
      await endpoint.send(to, message)
    } catch (err) {
      // A peer that is gone fails the step through the coordinator's next epoch, which aborts our wait.
      log.debug({ peer: to, type: message.type, err: (err as Error).name }, 'send to peer failed')
    }
  }

  /** The reduce-scatter, shard aggregation and all-gather of one step. */
  const exchange = async (s: number, e: number, q: QuorumBody, mbs: readonly MicroBatch[], grads: readonly Float32Array[], signal: AbortSignal): Promise<Float32Array> => {
    const W = q.members.length
    const M = q.globalBatch / q.microBatch
    const aborted = (): Error => (signal.reason instanceof Error ? signal.reason : new StepAbortedError())
    const sends: Array<Promise<void>> = []
    for (let o = 0; o < W; o++) {
      const [a, b] = shard(W, o)
      const owner = (q.members[o] as { id: string }).id
      let message: OutboundMessage & { epoch: number, step: number }
      if (q.deterministic) {
        message = {
          type: ElasticMessage.grad, epoch: e, step: s,
          body: { microBatches: mbs.map((m) => m.index) },
          tensors: grads.map((g, i) => ({ name: `m${(mbs[i] as MicroBatch).index}`, shape: [b - a], dtype: 'float32', data: g.slice(a, b) }))
        }
      } else {
        const sum = new Float64Array(b - a)
        for (const g of grads) for (let j = a; j < b; j++) sum[j - a] = (sum[j - a] as number) + (g[j] as number)
        message = { type: ElasticMessage.grad, epoch: e, step: s, body: { count: grads.length }, tensors: [{ name: 'sum', shape: [b - a], dtype: 'float32', data: Float32Array.from(sum) }] }
      }
      sends.push(sendOrKeep(owner, message))
    }
    await Promise.all(sends)
    phase = 'exchange'

    // Owner: wait for every input of my shard.
    const [a, b] = shard(W, rank)
    const len = b - a
    const rankOf = new Map(q.members.map((m) => [m.id, m.rank]))
    const grads64 = (): Float32Array[] | undefined => {
      const mine = inbox.filter((m) => m.type === ElasticMessage.grad && m.epoch === e && m.step === s)
      if (q.deterministic) {
        const byIndex = new Map<number, Float32Array>()
        for (const m of mine) {
          const body = gradBodySchema.safeParse(m.body)
          const idx = body.success ? body.data.microBatches ?? [] : []
          if (idx.length !== m.tensors.length) continue
          idx.forEach((i, k) => { const t = m.tensors[k] as Float32Array; if (i < M && t.length === len && !byIndex.has(i)) byIndex.set(i, t) })
        }
        if (byIndex.size < M) return undefined
        return Array.from({ length: M }, (_, i) => byIndex.get(i) as Float32Array)
      }
      const byRank = new Map<number, Float32Array>()
      for (const m of mine) {
        const r = rankOf.get(m.from)
        const body = gradBodySchema.safeParse(m.body)
        const t = m.tensors[0]
        if (r === undefined || !body.success || t === undefined || t.length !== len || byRank.has(r)) continue
        const c = body.data.count ?? 0
        // Robust rules see per-worker means; the mean path sums the pre-summed slices.
        if (!useMean && c > 0) for (let j = 0; j < len; j++) t[j] = (t[j] as number) / c
        byRank.set(r, t)
      }
      if (byRank.size < W) return undefined
      return Array.from({ length: W }, (_, r) => byRank.get(r) as Float32Array)
    }
    const inputs = await waitUntil(grads64, signal, aborted)
    const out = new Float32Array(len)
    if (useMean) {
      const acc = new Float64Array(len)
      for (const x of inputs) for (let j = 0; j < len; j++) acc[j] = (acc[j] as number) + (x[j] as number)
      for (let j = 0; j < len; j++) out[j] = (acc[j] as number) / M
    } else {
      const agg = aggregator as Aggregator
      agg.check(inputs.length)
      let gram: Float64Array | undefined
      if (agg.needsGram) {
        const n = inputs.length
        const part = new Array<number>(n * n).fill(0)
        for (let i = 0; i < n; i++) {
          for (let k = i; k < n; k++) {
            let d = 0
            const xi = inputs[i] as Float32Array
            const xk = inputs[k] as Float32Array
            for (let j = 0; j < len; j++) d += (xi[j] as number) * (xk[j] as number)
            part[i * n + k] = d
            part[k * n + i] = d
          }
        }
        await Promise.all(q.members.map(async (m) => { await sendOrKeep(m.id, { type: ElasticMessage.gram, epoch: e, step: s, body: { rank, n, gram: part } }) }))
        gram = await waitUntil(() => {
          const parts = new Map<number, number[]>()
          for (const m of inbox) {
            if (m.type !== ElasticMessage.gram || m.epoch !== e || m.step !== s) continue
            const body = gramBodySchema.safeParse(m.body)
            if (body.success && body.data.n === n && body.data.gram.length === n * n && rankOf.get(m.from) === body.data.rank) parts.set(body.data.rank, body.data.gram)
          }
          if (parts.size < W) return undefined
          const g = new Float64Array(n * n)
          for (let r = 0; r < W; r++) { const p = parts.get(r) as number[]; for (let j = 0; j < g.length; j++) g[j] = (g[j] as number) + (p[j] as number) }
          return g
        }, signal, aborted)
      }
      agg.aggregateSlice(inputs, out, gram === undefined ? { seed: (seed ^ s) >>> 0 } : { gram, seed: (seed ^ s) >>> 0 })
    }

    // All-gather.
    await Promise.all(q.members.map(async (m) => {
      await sendOrKeep(m.id, { type: ElasticMessage.agg, epoch: e, step: s, body: { rank }, tensors: [{ name: 'slice', shape: [len], dtype: 'float32', data: m.id === me ? out : out.slice() }] })
    }))
    const full = await waitUntil(() => {
      const slices = new Map<number, Float32Array>()
      for (const m of inbox) {
        if (m.type !== ElasticMessage.agg || m.epoch !== e || m.step !== s) continue
        const body = aggBodySchema.safeParse(m.body)
        if (!body.success || rankOf.get(m.from) !== body.data.rank) continue
        const [x, y] = shard(W, body.data.rank)
        const t = m.tensors[0]
        if (t !== undefined && t.length === y - x) slices.set(body.data.rank, t)
      }
      if (slices.size < W) return undefined
      const g = new Float32Array(size)
      for (let r = 0; r < W; r++) g.set(slices.get(r) as Float32Array, shard(W, r)[0])
      return g
    }, signal, aborted)
    inbox = inbox.filter((m) => !(m.epoch === e && m.step === s))
    return full
  }

  const takeSnapshot = async (step: number): Promise<Snapshot> => {
    if (snapshot?.step === step) return snapshot
    const st = await hooks.get()
    const flat = flattenStateDict(st)
    const crcs: number[] = []
    for (let off = 0; off < flat.length || (off === 0 && crcs.length === 0); off += chunkFloats) {
      crcs.push(crc32c(bytesOf(flat.subarray(off, Math.min(flat.length, off + chunkFloats)))))
      if (flat.length === 0) break
    }
    const meta: StateMeta = { ...st.meta, step, epoch, cursor: step * (quorum?.globalBatch ?? 0) }
    snapshot = { step, flat, crcs, specs: st.tensors.map((t) => ({ name: t.name, shape: [...t.shape], dtype: t.dtype })), meta, chunkFloats }
    return snapshot
  }

  /** The snapshot of committed step `step`, taken at a step boundary (waits for one, bounded). */
  const snapshotOf = async (step: number, parent: AbortSignal): Promise<Snapshot> => {
    const t = withTimeout(requestTimeoutMs, parent)
    try {
      await waitUntil(() => {
        if (committed > step && snapshot?.step !== step) throw new NotFoundError(`State of step ${step} is gone (at ${committed})`)
        return (atBoundary && committed === step) || snapshot?.step === step ? true : undefined
      }, t.signal, () => new TimeoutError(`State of step ${step} not available (at ${committed})`))
    } finally { t.done() }
    return await takeSnapshot(step)
  }

  const onHealMeta = async (env: Envelope, options: Required<AbortOptions>): Promise<OutboundMessage> => {
    const { step } = parseBody(healMetaBodySchema, env.header.body, 'heal-meta')
    const snap = await snapshotOf(step, options.signal)
    const reply: HealMetaReply = { step, meta: snap.meta as Record<string, unknown>, specs: snap.specs.map((s) => ({ name: s.name, shape: [...s.shape], dtype: s.dtype })), size: snap.flat.length, chunkFloats: snap.chunkFloats, crcs: snap.crcs }
    return { type: ElasticMessage.healMeta, body: reply }
  }

  const onHealChunk = async (env: Envelope, options: Required<AbortOptions>): Promise<OutboundMessage> => {
    const { step, index } = parseBody(healChunkBodySchema, env.header.body, 'heal-chunk')
    const snap = await snapshotOf(step, options.signal)
    if (index >= snap.crcs.length) throw new NotFoundError(`No chunk ${index} of step ${step}`)
    const data = snap.flat.subarray(index * snap.chunkFloats, Math.min(snap.flat.length, (index + 1) * snap.chunkFloats))
    return { type: ElasticMessage.healChunk, body: { step, index }, tensors: [{ name: 'chunk', shape: [data.length], dtype: 'float32', data }] }
  }

  /** Pulls the committed state of step `target` from the up-to-date members, striped over all of them. */
  const heal = async (q: QuorumBody, target: number, signal: AbortSignal): Promise<void> => {
    const t0 = clock.now()
    phase = 'heal'
    const sources = q.upToDate.filter((id) => id !== me && q.members.some((m) => m.id === id))
    if (sources.length === 0) throw new NotFoundError(`No up-to-date peer to heal step ${target} from`)
    let meta: HealMetaReply | undefined
    for (const src of sources) {
      try {
        const reply = await endpoint.request(src, { type: ElasticMessage.healMeta, body: { step: target } }, { timeoutMs: 2 * requestTimeoutMs, signal })
        meta = parseBody(healMetaReplySchema, reply.header.body, 'heal-meta reply')
        break
      } catch (err) {
        if (signal.aborted) throw err
        log.warn({ source: src, err: (err as Error).name }, 'heal-meta failed; trying another peer')
      }
    }
    if (meta === undefined) throw new NotFoundError(`No peer served the state of step ${target}`)
    const m = meta
    let expected = 0
    for (const sp of m.specs) expected += sp.shape.reduce((x, y) => x * y, 1)
    if (expected !== m.size || m.crcs.length !== Math.max(1, Math.ceil(m.size / m.chunkFloats))) throw new MalformedMessageError('heal-meta layout is inconsistent')
    const flat = new Float32Array(m.size)
    let remaining = m.crcs.map((_, i) => i)
    let refetched = 0
    for (let round = 0; round < sources.length && remaining.length > 0; round++) {
      const failed: number[] = []
      const bySource = new Map<string, number[]>()
      for (const i of remaining) {
        const src = sources[(i + round) % sources.length] as string
        bySource.set(src, [...(bySource.get(src) ?? []), i])
      }
      await Promise.all([...bySource].map(async ([src, list]) => {
        const queue = [...list]
        const runner = async (): Promise<void> => {
          for (let i = queue.shift(); i !== undefined; i = queue.shift()) {
            try {
              const reply = await endpoint.request(src, { type: ElasticMessage.healChunk, body: { step: target, index: i } }, { timeoutMs: requestTimeoutMs, signal })
              checkFrames(reply.header, reply.frames)
              const data = decodeTensors(reply)[0]?.data
              const want = Math.min(m.size, (i + 1) * m.chunkFloats) - i * m.chunkFloats
              if (data === undefined || data.length !== want) throw new MalformedMessageError(`Chunk ${i} has the wrong length`)
              if (crc32c(bytesOf(data)) !== m.crcs[i]) throw new ChecksumMismatchError(`Chunk ${i} from ${src} fails its CRC32C`)
              flat.set(data, i * m.chunkFloats)
            } catch (err) {
              if (signal.aborted) throw err
              refetched++
              log.warn({ source: src, chunk: i, err: (err as Error).name }, 'heal chunk failed; will fetch it from another peer')
              failed.push(i)
            }
          }
        }
        await Promise.all(Array.from({ length: healConcurrency }, runner))
      }))
      remaining = failed.sort((x, y) => x - y)
    }
    if (remaining.length > 0) throw new ChecksumMismatchError(`${remaining.length} chunks could not be fetched intact from any peer`)
    let off = 0
    const tensors: NamedTensor[] = m.specs.map((sp) => {
      const n = sp.shape.reduce((x, y) => x * y, 1)
      const t = { name: sp.name, shape: sp.shape, dtype: sp.dtype, data: flat.subarray(off, off + n) }
      off += n
      return t
    })
    const healedMeta = { ...(m.meta as StateMeta), step: target, epoch }
    await hooks.set({ tensors, meta: healedMeta })
    committed = target
    snapshot = undefined
    const ms = clock.now() - t0
    lastHealMs = ms
    log.info({ step: target, bytes: m.size * 4, ms, sources, refetched }, 'healed from peers')
    emit('heal', { step: target, bytes: m.size * 4, ms, sources, chunks: m.crcs.length, refetched })
  }
  let lastHealMs: number | undefined

  async function * steps (options: AbortOptions = {}): AsyncIterableIterator<TrainingStep> {
    const signal = options.signal === undefined ? life.signal : AbortSignal.any([life.signal, options.signal])
    const closed = (): Error => (life.signal.aborted ? new ClosedError('Worker stopped') : new AbortError())
    for (;;) {
      const plan = await waitUntil(() => {
        if (done && (pending === undefined || pending.settled)) return 'done' as const
        if (joined && quorum?.active === true && rank >= 0 && nextStep < quorum.steps && (pending === undefined || pending.settled)) return { q: quorum, e: epoch, s: nextStep }
        return undefined
      }, signal, closed)
      if (plan === 'done') return
      const { q, e, s } = plan
      if (committed < s) {
        const ctl = new AbortController()
        const off = (): void => { ctl.abort(new StepAbortedError('epoch changed during heal')) }
        const unsubscribe = (): void => { waiters.delete(check) }
        const check = (): void => { if (epoch !== e) off() }
        waiters.add(check)
        const onStop = (): void => { off() }
        signal.addEventListener('abort', onStop, { once: true })
        try {
          await heal(q, s, ctl.signal)
        } catch (err) {
          if (signal.aborted) throw closed()
          log.warn({ err: (err as Error).name, step: s, epoch: e }, 'heal failed; waiting for the next epoch')
          phase = 'idle'
          await waitUntil(() => (epoch !== e || done ? true : undefined), signal, closed)
          continue
        } finally {
          unsubscribe()
          signal.removeEventListener('abort', onStop)
        }
      }
      if (committed !== s) {
        log.error({ committed, step: s, epoch: e }, 'state is ahead of the quorum; waiting for the next epoch')
        await waitUntil(() => (epoch !== e || done ? true : undefined), signal, closed)
        continue
      }
      const ctl = new AbortController()
      stepAbort = ctl
      atBoundary = true
      phase = 'compute'
      notify()
      const mbs = myMicroBatches(s, q)
      const healMs = lastHealMs
      lastHealMs = undefined
      const t0 = clock.now()
      let reduced: Pending | undefined
      let commitAsked = false
      const step: TrainingStep = {
        step: s,
        epoch: e,
        microBatches: mbs,
        signal: ctl.signal,
        async reduce (gradients, opts = {}) {
          if (reduced !== undefined) throw new InvalidParametersError('reduce() was already called for this step')
          if (gradients.length !== mbs.length || gradients.some((g) => g.length !== size)) {
            throw new InvalidParametersError(`reduce() needs ${mbs.length} gradients of length ${size}`)
          }
          const sig = opts.signal === undefined ? ctl.signal : AbortSignal.any([ctl.signal, opts.signal])
          if (sig.aborted) throw (ctl.signal.aborted ? ctl.signal.reason as Error : new AbortError())
          const computeMs = clock.now() - t0
          const full = await exchange(s, e, q, mbs, gradients, sig)
          if (ctl.signal.aborted) throw ctl.signal.reason as Error
          let resolve!: (v: boolean) => void
          const outcome = new Promise<boolean>((r) => { resolve = r })
          reduced = { step: s, epoch: e, outcome, resolve, settled: false }
          pending = reduced
          phase = 'voted'
          const checksum = crc32c(bytesOf(full))
          try {
            const loss = opts.loss !== undefined && Number.isFinite(opts.loss) ? { loss: opts.loss } : {}
            await endpoint.send(coordinatorId, { type: ElasticMessage.ready, epoch: e, step: s, body: { checksum, computeMs, microBatches: mbs.length, ...(healMs === undefined ? {} : { healMs }), ...loss } })
          } catch (err) {
            log.debug({ err: (err as Error).name }, 'vote could not be sent')
          }
          return full
        },
        async commit (opts = {}) {
          commitAsked = true
          if (reduced === undefined) return false
          const p = reduced
          const sig = opts.signal === undefined ? life.signal : AbortSignal.any([life.signal, opts.signal])
          const ok = await new Promise<boolean>((resolve, reject) => {
            const onAbort = (): void => { reject(life.signal.aborted ? new ClosedError('Worker stopped') : new AbortError()) }
            if (sig.aborted) { onAbort(); return }
            sig.addEventListener('abort', onAbort, { once: true })
            p.outcome.then((v) => { sig.removeEventListener('abort', onAbort); resolve(v) }, reject)
          })
          if (pending === p) pending = undefined
          if (ok) {
            committed = s + 1
            atBoundary = false
            emit('commit', committedLoss?.step === s ? { step: s, epoch: e, loss: committedLoss.loss } : { step: s, epoch: e })
          } else {
            emit('abort', { step: s, epoch: e, reason: 'not committed' })
          }
          return ok
        }
      }
      try {
        yield step
      } finally {
        if (stepAbort === ctl) stepAbort = undefined
        phase = 'idle'
      }
      if (reduced !== undefined && !commitAsked) {
        throw new InvalidParametersError('Call commit() after a successful reduce() before taking the next step')
      }
      if (!ctl.signal.aborted) ctl.abort(new StepAbortedError('step finished'))
    }
  }

  const worker: Worker = {
    id: me,
    async start () {
      if (started) return
      started = true
      endpoint.connect(coordinatorId, init.coordinatorAddress)
      const fireAndForget = (fn: (env: Envelope) => void) => (env: Envelope): undefined => { fn(env); return undefined }
      cleanups.push(endpoint.handle(ElasticMessage.quorum, fireAndForget((env) => {
        if (env.peer !== coordinatorId) return
        coordinatorHeard = clock.now()
        onQuorum(parseBody(quorumBodySchema, env.header.body, 'quorum'))
      })))
      cleanups.push(endpoint.handle(ElasticMessage.commit, fireAndForget((env) => {
        if (env.peer !== coordinatorId) return
        const c = parseBody(commitBodySchema, env.header.body, 'commit')
        coordinatorHeard = clock.now()
        if (c.epoch !== epoch) return
        if (c.loss !== undefined) committedLoss = { step: c.step, loss: c.loss }
        if (pending !== undefined && pending.step === c.step) settlePending(c.step + 1)
        nextStep = c.step + 1
        if (c.assignment !== undefined) {
          assignment = c.assignment
          emit('reschedule', { step: nextStep, microBatches: assignment[rank] ?? 0 })
        }
        notify()
      })))
      cleanups.push(endpoint.handle(ElasticMessage.done, fireAndForget((env) => {
        if (env.peer !== coordinatorId) return
        const d = parseBody(doneBodySchema, env.header.body, 'done')
        done = true
        settlePending(d.committed)
        notify()
      })))
      cleanups.push(endpoint.handle(ElasticMessage.rejoin, fireAndForget((env) => {
        if (env.peer !== coordinatorId) return
        if (joined) coordinatorLost('rejoin')
      })))
      for (const type of [ElasticMessage.grad, ElasticMessage.gram, ElasticMessage.agg]) cleanups.push(endpoint.handle(type, fireAndForget(onPeerMessage)))
      cleanups.push(endpoint.handle(ElasticMessage.healMeta, onHealMeta))
      cleanups.push(endpoint.handle(ElasticMessage.healChunk, onHealChunk))
      cleanups.push(endpoint.on('peer:disconnect', (peer) => { if (peer === coordinatorId) coordinatorLost('disconnect') }))
      heartbeatTimer = clock.setInterval(() => { void heartbeat() }, heartbeatIntervalMs)
      void joinLoop()
    },
    async stop () {
      if (!started) return
      started = false
      heartbeatTimer?.cancel()
      abortInFlight('stopped')
      life.abort(new ClosedError('Worker stopped'))
      for (const c of cleanups.splice(0)) c()
      notify()
    },
    async leave (options = {}) {
      if (started) {
        try { await endpoint.send(coordinatorId, { type: ElasticMessage.leave, body: {} }, options) } catch (err) { log.debug({ err: (err as Error).name }, 'leave could not be sent') }
      }
      await worker.stop()
    },
    steps,
    status: () => ({ joined, epoch, committed, rank, phase, done }),
    on (event, listener) {
      listeners[event].add(listener as never)
      return () => { listeners[event].delete(listener as never) }
    },
    async [Symbol.asyncDispose] () { await worker.stop() }
  }
  return worker
}
