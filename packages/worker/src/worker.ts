import { randomBytes } from 'node:crypto'
import {
  AbortError, ChecksumMismatchError, ClosedError, ElasticMessage, InvalidParametersError, MalformedMessageError, NotFoundError,
  StepAbortedError, TimeoutError, assertSameLayout, bytesOf, componentLogger, crc32c, decodeTensors, checkFrames, systemClock,
  aggBodySchema, commitBodySchema, doneBodySchema, gradBodySchema, gramBodySchema, healMetaBodySchema,
  healMetaReplySchema, heartbeatReplySchema, joinReplySchema, quorumBodySchema,
  type AbortOptions, type AggregationReport, type Aggregator, type Clock, type Endpoint, type Envelope, type GradBody, type HealMetaReply, type HeartbeatBody,
  type JoinBody, type Logger, type NamedTensor, type OutboundMessage, type PhalanxConfig, type QuorumBody, type StateDict,
  type StateMeta, type TensorSpec, type TimerHandle, type WorkerPhase
} from '@phalanx/core'
import { gramPartial } from '@phalanx/aggregate'
import { z } from 'zod'

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

/**
 * Local (L0) snapshots of the committed state, e.g. `createSnapshotter` + `createHolderClient` of
 * `@phalanx/checkpoint` with `pinState` (tf models) or `pinStateDict` (plain state). The worker
 * captures at step boundaries and, when it must catch up (a restarted process), restores from the
 * snapshot before falling back to healing from peers.
 */
export interface SnapshotHooks {
  /**
   * Capture after every this many committed steps.
   * @default 1
   */
  every?: number
  /**
   * Captures the committed state described by `meta` (its step, epoch and cursor). Must return at
   * once: the copy and transfer run in the background. Called at a step boundary, where the state
   * is the committed one and stays so until the next step's update is applied. Return `false` when
   * the capture was skipped (a drain still busy): the worker tries again every
   * {@link retryMs} while it is still at that boundary (e.g. waiting for a stalled peer).
   */
  capture(meta: StateMeta): boolean | void
  /**
   * Interval of capture retries at a boundary whose capture was skipped.
   * @default 20
   */
  retryMs?: number
  /**
   * The newest local snapshot if it holds committed step `step` (undefined otherwise: the worker
   * then heals from its peers).
   */
  restore(step: number, options: Required<AbortOptions>): Promise<StateDict | undefined>
  /**
   * The newest local snapshot, whatever its step (`meta.step`), or undefined when there is none.
   * When given, a worker restores it before its first join and announces that step: a restarted
   * process whose peers are all gone too can then serve the newest committed state to the job
   * instead of joining empty-handed (the coordinator admits it as the source of that step).
   */
  latest?(options: Required<AbortOptions>): Promise<StateDict | undefined>
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
  /** Local snapshots at commits, restored instead of healing from peers when they are current. */
  snapshots?: SnapshotHooks
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
   *
   * Buffer ownership: the gradients are sent as views, not copies, so leave them unchanged until
   * `reduce()` settles (reuse them for the next step). The returned aggregate is the worker's own
   * buffer, reused by the next step's `reduce()`: apply or copy it before then.
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
  /**
   * The state was pulled from peers. `metaMs`: until the layout arrived (includes waiting for a
   * source's step boundary); `transferMs`: the chunks; `setMs`: the `state.set` hook.
   */
  heal: (event: { step: number, bytes: number, ms: number, sources: string[], chunks: number, refetched: number, metaMs: number, transferMs: number, setMs: number }) => void
  /** The micro-batch assignment changed without an epoch change. */
  reschedule: (event: { step: number, microBatches: number }) => void
  /**
   * The robust rule rejected (no weight) or down-weighted (a positive weight under half of the
   * uniform 1/n) inputs on the shard this worker owns. Inputs map to the workers that computed
   * them: per micro-batch through the step's assignment in deterministic mode, per rank otherwise.
   */
  robust: (event: { step: number, epoch: number, rule: string, rejected: string[], downWeighted: string[] }) => void
  /** The state was restored from the local snapshot (instead of healing from peers). */
  restore: (event: { step: number, bytes: number, ms: number }) => void
}

/** What a worker is doing. */
export interface WorkerStatus {
  joined: boolean
  epoch: number
  committed: number
  rank: number
  phase: WorkerPhase
  done: boolean
  /** Steps in which each worker's input was rejected / down-weighted on this worker's shard (robust rules only). */
  robust: { rejected: Record<string, number>, downWeighted: Record<string, number> }
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

/** A received `grad`, `gram` or `agg` message, its body parsed once on arrival. */
interface Inbound {
  from: string
  body: GradBody | GramBody | AggBody
  /**
   * Views over the received frames, never copied: ZeroMQ frames belong to the receiver, and the
   * memory transport hands over the sender's arrays, which the sender leaves untouched until the
   * step is settled everywhere (see "Buffer ownership" in docs/elastic.md).
   */
  tensors: Float32Array[]
}

/** Inbound messages of one (type, epoch, step), in arrival order (append-only). */
interface Bucket {
  epoch: number
  step: number
  items: Inbound[]
}

type GramBody = z.infer<typeof gramBodySchema>
type AggBody = z.infer<typeof aggBodySchema>

/** Buffers of the reduce, reused from step to step while the quorum's size and this worker's rank stay the same. */
interface ReduceBuffers {
  W: number
  rank: number
  /** This worker's aggregated shard (sent to every member: shared, not copied per peer). */
  out: Float32Array
  /** The assembled aggregate handed to the caller (valid until the next `reduce()`). */
  full: Float32Array
  /** Non-deterministic mode: the local pre-sum of each owner's shard. */
  presum: Float32Array[]
  /** Robust rules in non-deterministic mode: per-worker mean slices. */
  means: Float32Array[]
}

interface Pending {
  step: number
  epoch: number
  outcome: Promise<boolean>
  resolve: (committed: boolean) => void
  settled: boolean
}

/** What a heal source serves: views of its state at a step boundary, valid while the state stays at {@link step}. */
interface Snapshot {
  step: number
  tensors: readonly NamedTensor[]
  /** Flat offset of each tensor. */
  offsets: number[]
  size: number
  specs: TensorSpec[]
  meta: StateMeta
  /** Chunk checksums computed so far, by `<index>:<chunkFloats>`. */
  crcs: Map<string, number>
}

/**
 * Heal chunk request: the core body plus, optionally, the chunk size of the meta the healer got
 * (a source configured with another chunk size still serves the healer's chunking).
 */
const healChunkRequestSchema = z.object({ step: z.number().int().nonnegative(), index: z.number().int().nonnegative(), chunkFloats: z.number().int().positive().optional() }).strict()
/** Heal chunk reply body: the chunk's CRC-32C travels with it (pieces in order, seeded). */
const healChunkReplySchema = z.object({ step: z.number().int().nonnegative(), index: z.number().int().nonnegative(), crc: z.number().int().nonnegative() }).strict()


function tensorAt (offsets: readonly number[], pos: number): number {
  let lo = 0
  let hi = offsets.length - 1
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1
    if ((offsets[mid] as number) <= pos) lo = mid
    else hi = mid - 1
  }
  return lo
}

/** Views of the flat range `[start, end)` of `tensors` (flat offsets `offsets`), one per tensor it spans. */
function flatRange (tensors: readonly NamedTensor[], offsets: readonly number[], start: number, end: number): Float32Array[] {
  const out: Float32Array[] = []
  for (let t = tensors.length === 0 ? 0 : tensorAt(offsets, start), pos = start; pos < end && t < tensors.length; t++) {
    const data = (tensors[t] as NamedTensor).data
    const off = offsets[t] as number
    const to = Math.min(end, off + data.length)
    if (to > pos) { out.push(data.subarray(pos - off, to - off)); pos = to }
  }
  return out
}

/** Copies `pieces` (consecutive) into the flat range of `tensors` starting at `start`. */
function writeFlatRange (tensors: readonly NamedTensor[], offsets: readonly number[], start: number, pieces: readonly Float32Array[]): void {
  let pos = start
  for (const p of pieces) {
    let k = 0
    while (k < p.length) {
      const t = tensorAt(offsets, pos)
      const data = (tensors[t] as NamedTensor).data
      const off = offsets[t] as number
      const n = Math.min(p.length - k, off + data.length - pos)
      if (n <= 0) throw new MalformedMessageError('Heal chunk runs past the end of the state')
      data.set(n === p.length && k === 0 ? p : p.subarray(k, k + n), pos - off)
      pos += n
      k += n
    }
  }
}

const MAX_INBOX = 8192
/** Coordinates summed per block: a float64 block accumulator this size stays in the L1/L2 cache. */
const SUM_BLOCK = 4096

/**
 * `out[k] = (0 + Σ_i xs[i][offset + k]) / divisor`, summed in float64 in input order and rounded
 * once: the canonical reduction (a sum starting at +0, so -0 inputs give +0 exactly as the
 * single-process reference does). `acc` is a scratch block of {@link SUM_BLOCK} float64s.
 */
function sumDivInto (xs: readonly Float32Array[], offset: number, out: Float32Array, divisor: number, acc: Float64Array): void {
  const n = out.length
  if (xs.length === 1) {
    const x = (xs[0] as Float32Array).subarray(offset, offset + n)
    // x / 1 is exact: skip the division (the `0 +` still turns -0 into +0 like the float64 sum).
    if (divisor === 1) for (let k = 0; k < n; k++) out[k] = 0 + (x[k] as number)
    else for (let k = 0; k < n; k++) out[k] = (0 + (x[k] as number)) / divisor
    return
  }
  for (let start = 0; start < n; start += SUM_BLOCK) {
    const end = Math.min(n, start + SUM_BLOCK)
    const len = end - start
    acc.fill(0, 0, len)
    for (const x of xs) {
      const base = offset + start
      for (let k = 0; k < len; k++) acc[k] = (acc[k] as number) + (x[base + k] as number)
    }
    for (let k = 0; k < len; k++) out[start + k] = (acc[k] as number) / divisor
  }
}

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
  const { endpoint, state: hooks, aggregator, snapshots } = components
  const snapshotEvery = Math.max(1, snapshots?.every ?? 1)
  let lastCaptured = -1
  let captureRetry: TimerHandle | undefined
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
  /** True while a heal is writing into the state in place: it must not be served meanwhile. */
  let stateDirty = false
  const inbox = new Map<string, Bucket>()
  let inboxCount = 0
  let reduceBuffers: ReduceBuffers | undefined
  const sumScratch = new Float64Array(SUM_BLOCK)
  const robustCounts: { rejected: Record<string, number>, downWeighted: Record<string, number> } = { rejected: {}, downWeighted: {} }
  const waiters = new Set<() => void>()
  const cleanups: Array<() => void> = []
  const listeners: { [E in keyof WorkerEvents]: Set<WorkerEvents[E]> } = {
    epoch: new Set(), abort: new Set(), commit: new Set(), heal: new Set(), reschedule: new Set(), robust: new Set(), restore: new Set()
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
    dropInbox((b) => b.epoch < epoch)
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
      // Checked first: a worker that joined after the end (a spare) is unknown to the coordinator, and
      // joining again would be answered `spare` forever; the job is over, so it ends instead.
      if (r.done === true) { done = true; settlePending(r.committed); notify(); return }
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
      if (!restoredAtStart) {
        restoredAtStart = true
        await restoreLatest()
      }
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

  const inboxKey = (type: string, e: number, st: number): string => `${type}|${e}|${st}`
  const dropInbox = (drop: (b: Bucket) => boolean): void => {
    for (const [k, b] of inbox) if (drop(b)) { inbox.delete(k); inboxCount -= b.items.length }
  }
  const bucketOf = (type: string, e: number, st: number): readonly Inbound[] => inbox.get(inboxKey(type, e, st))?.items ?? []

  const onPeerMessage = (env: Envelope): void => {
    const h = env.header
    if (h.epoch < epoch) return
    checkFrames(h, env.frames)
    const schema = h.type === ElasticMessage.grad ? gradBodySchema : h.type === ElasticMessage.gram ? gramBodySchema : aggBodySchema
    const parsed = schema.safeParse(h.body)
    if (!parsed.success) { log.debug({ type: h.type, peer: env.peer }, 'dropped a peer message with an invalid body'); return }
    if (inboxCount >= MAX_INBOX) {
      // Bounded: drop the oldest bucket (a step long gone, or a flood).
      const first = inbox.entries().next().value
      if (first !== undefined) { inbox.delete(first[0]); inboxCount -= first[1].items.length }
    }
    const key = inboxKey(h.type, h.epoch, h.step)
    let bucket = inbox.get(key)
    if (bucket === undefined) { bucket = { epoch: h.epoch, step: h.step, items: [] }; inbox.set(key, bucket) }
    bucket.items.push({ from: env.peer, body: parsed.data, tensors: decodeTensors(env).map((t) => t.data) })
    inboxCount++
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

  /** Sends to a peer. A failure is left to the coordinator: a gone peer means a new epoch, which aborts the wait. */
  const sendToPeer = async (to: string, message: OutboundMessage): Promise<void> => {
    try {
      await endpoint.send(to, message)
    } catch (err) {
      log.debug({ peer: to, type: message.type, err: (err as Error).name }, 'send to peer failed')
    }
  }

  const buffersFor = (W: number, len: number): ReduceBuffers => {
    const b = reduceBuffers
    if (b !== undefined && b.W === W && b.rank === rank && b.out.length === len && b.full.length === size) return b
    const full = new Float32Array(size)
    const [a] = shard(W, rank)
    // This worker's shard aggregate is computed in place in the assembled vector: no copy of it.
    reduceBuffers = { W, rank, full, out: full.subarray(a, a + len), presum: [], means: [] }
    return reduceBuffers
  }

  /** Counts and reports inputs a robust rule rejected or down-weighted, by the worker that computed them. */
  const noteReport = (s: number, e: number, q: QuorumBody, report: AggregationReport, n: number, asg: readonly number[]): string[] => {
    const workerOf = (input: number): string => {
      let r = input
      if (q.deterministic) {
        r = 0
        for (let first = 0; r < asg.length && input >= first + (asg[r] as number); r++) first += asg[r] as number
      }
      return q.members[r]?.id ?? `input-${input}`
    }
    const rejected = new Set(report.rejected.map(workerOf))
    const down = new Set<string>()
    if (report.weights !== undefined) {
      // Down-weighted: a positive weight under half of the uniform 1/n.
      report.weights.forEach((w, i) => { if (w > 0 && w < 0.5 / n) down.add(workerOf(i)) })
    }
    for (const id of rejected) down.delete(id)
    if (rejected.size === 0 && down.size === 0) return []
    for (const id of rejected) robustCounts.rejected[id] = (robustCounts.rejected[id] ?? 0) + 1
    for (const id of down) robustCounts.downWeighted[id] = (robustCounts.downWeighted[id] ?? 0) + 1
    const event = { step: s, epoch: e, rule: (aggregator as Aggregator).name, rejected: [...rejected], downWeighted: [...down] }
    log.warn(event, 'robust aggregation rejected or down-weighted inputs')
    emit('robust', event)
    return event.rejected
  }

  /** A robust rule on this worker's shard: the Gram all-gather when the rule needs it, then the rule. */
  const aggregateRobust = async (s: number, e: number, q: QuorumBody, inputs: Float32Array[], out: Float32Array, ranks: ReadonlyMap<string, number>, signal: AbortSignal, aborted: () => Error): Promise<AggregationReport> => {
    const agg = aggregator as Aggregator
    const W = q.members.length
    agg.check(inputs.length)
    let gram: Float64Array | undefined
    if (agg.needsGram) {
      const n = inputs.length
      const part = gramPartial(inputs)
      if (W > 1) {
        const body = { rank, n, gram: Array.from(part) }
        await Promise.all(q.members.filter((m) => m.id !== me).map(async (m) => { await sendToPeer(m.id, { type: ElasticMessage.gram, epoch: e, step: s, body }) }))
      }
      gram = await waitUntil(() => {
        const parts = new Array<ArrayLike<number> | undefined>(W)
        parts[rank] = part
        let have = 1
        for (const m of bucketOf(ElasticMessage.gram, e, s)) {
          const b = m.body as GramBody
          if (b.n === n && b.gram.length === n * n && ranks.get(m.from) === b.rank && parts[b.rank] === undefined) { parts[b.rank] = b.gram; have++ }
        }
        if (have < W) return undefined
        // Summed in rank order from +0, so every owner gets the same bits.
        const g = new Float64Array(n * n)
        for (let r = 0; r < W; r++) { const p = parts[r] as ArrayLike<number>; for (let j = 0; j < g.length; j++) g[j] = (g[j] as number) + (p[j] as number) }
        return g
      }, signal, aborted)
    }
    const sliceSeed = (seed ^ s) >>> 0
    return agg.aggregateSlice(inputs, out, gram === undefined ? { seed: sliceSeed } : { gram, seed: sliceSeed })
  }

  /**
   * The reduce-scatter, shard aggregation and all-gather of one step. Returns the assembled
   * aggregate (a reused buffer) and its CRC-32C, computed slice by slice in rank order while the
   * other slices are still arriving. With one member nothing is sent and the checksum is 0: a vote
   * among one has nobody to disagree with.
   */
  const exchange = async (s: number, e: number, q: QuorumBody, mbs: readonly MicroBatch[], grads: readonly Float32Array[], signal: AbortSignal): Promise<{ full: Float32Array, checksum: number, rejected: string[] }> => {
    const W = q.members.length
    const M = q.globalBatch / q.microBatch
    const aborted = (): Error => (signal.reason instanceof Error ? signal.reason : new StepAbortedError())
    const [a, b] = shard(W, rank)
    const len = b - a
    const bufs = buffersFor(W, len)
    const { out, full } = bufs
    const ranks = new Map(q.members.map((m) => [m.id, m.rank]))
    const asg = assignment
    try {
      // 1. Reduce-scatter: every owner gets this worker's slices of its shard, as views (no copies).
      const sends: Array<Promise<void>> = []
      for (let o = 0; o < W; o++) {
        const [x, y] = shard(W, o)
        let message: OutboundMessage
        if (q.deterministic) {
          if (o === rank) continue
          message = {
            type: ElasticMessage.grad, epoch: e, step: s,
            body: { microBatches: mbs.map((m) => m.index) },
            tensors: grads.map((g, i) => ({ name: `m${(mbs[i] as MicroBatch).index}`, shape: [y - x], dtype: 'float32', data: g.subarray(x, y) }))
          }
        } else {
          let p = bufs.presum[o]
          if (p?.length !== y - x) { p = new Float32Array(y - x); bufs.presum[o] = p }
          sumDivInto(grads, x, p, 1, sumScratch)
          if (o === rank) continue
          message = { type: ElasticMessage.grad, epoch: e, step: s, body: { count: grads.length }, tensors: [{ name: 'sum', shape: [y - x], dtype: 'float32', data: p }] }
        }
        sends.push(sendToPeer((q.members[o] as { id: string }).id, message))
      }
      await Promise.all(sends)
      phase = 'exchange'

      // 2. Owner: every input of my shard (mine are views over my own gradients).
      const collected = await waitUntil((): { inputs: Float32Array[], counts: number[] } | undefined => {
        if (q.deterministic) {
          const byIndex = new Array<Float32Array | undefined>(M)
          let have = 0
          mbs.forEach((m, i) => { if (m.index < M && byIndex[m.index] === undefined) { byIndex[m.index] = (grads[i] as Float32Array).subarray(a, b); have++ } })
          for (const m of bucketOf(ElasticMessage.grad, e, s)) {
            const idx = (m.body as GradBody).microBatches ?? []
            if (idx.length !== m.tensors.length) continue
            for (let k = 0; k < idx.length; k++) {
              const i = idx[k] as number
              const t = m.tensors[k] as Float32Array
              if (i < M && t.length === len && byIndex[i] === undefined) { byIndex[i] = t; have++ }
            }
          }
          return have < M ? undefined : { inputs: byIndex as Float32Array[], counts: [] }
        }
        const byRank = new Array<Float32Array | undefined>(W)
        const counts = new Array<number>(W).fill(0)
        byRank[rank] = bufs.presum[rank]
        counts[rank] = grads.length
        let have = 1
        for (const m of bucketOf(ElasticMessage.grad, e, s)) {
          const r = ranks.get(m.from)
          const t = m.tensors[0]
          if (r === undefined || t?.length !== len || byRank[r] !== undefined) continue
          byRank[r] = t
          counts[r] = (m.body as GradBody).count ?? 0
          have++
        }
        return have < W ? undefined : { inputs: byRank as Float32Array[], counts }
      }, signal, aborted)

      // 3. Aggregate my shard into its place in `full`.
      let rejected: string[] = []
      if (useMean) {
        sumDivInto(collected.inputs, 0, out, M, sumScratch)
      } else {
        let inputs = collected.inputs
        if (!q.deterministic) {
          // Robust rules see per-worker means; received arrays are never written to (they may be the sender's).
          inputs = inputs.map((t, r) => {
            const c = collected.counts[r] as number
            if (c <= 0) return t
            let m = bufs.means[r]
            if (m?.length !== len) { m = new Float32Array(len); bufs.means[r] = m }
            for (let k = 0; k < len; k++) m[k] = (t[k] as number) / c
            return m
          })
        }
        const report = await aggregateRobust(s, e, q, inputs, out, ranks, signal, aborted)
        rejected = noteReport(s, e, q, report, inputs.length, asg)
      }
      if (W === 1) return { full, checksum: 0, rejected }

      // 4. All-gather: the same view of my slice goes to every member; theirs are copied into place
      // as they arrive, and the checksum advances over the contiguous prefix of slices.
      const sent = Promise.all(q.members.filter((m) => m.id !== me).map(async (m) => {
        await sendToPeer(m.id, { type: ElasticMessage.agg, epoch: e, step: s, body: { rank }, tensors: [{ name: 'slice', shape: [len], dtype: 'float32', data: out }] })
      }))
      const have = new Uint8Array(W)
      have[rank] = 1
      let seen = 0
      let crcNext = 0
      let crc = 0
      const checksum = await waitUntil(() => {
        const items = bucketOf(ElasticMessage.agg, e, s)
        if (items.length < seen) seen = 0
        for (; seen < items.length; seen++) {
          const m = items[seen] as Inbound
          const r = (m.body as AggBody).rank
          if (ranks.get(m.from) !== r || have[r] === 1) continue
          const [x, y] = shard(W, r)
          const t = m.tensors[0]
          if (t?.length !== y - x) continue
          full.set(t, x)
          have[r] = 1
        }
        while (crcNext < W && have[crcNext] === 1) {
          const [x, y] = shard(W, crcNext)
          crc = crc32c(bytesOf(full.subarray(x, y)), crc)
          crcNext++
        }
        return crcNext === W ? crc : undefined
      }, signal, aborted)
      await sent
      return { full, checksum, rejected }
    } catch (err) {
      // Sends of an abandoned step may still be reading these buffers: never hand them out again.
      reduceBuffers = undefined
      throw err
    } finally {
      dropInbox((bk) => bk.epoch < e || (bk.epoch === e && bk.step <= s))
    }
  }

  const takeSnapshot = async (step: number): Promise<Snapshot> => {
    if (snapshot?.step === step) return snapshot
    const st = await hooks.get()
    const offsets: number[] = []
    let total = 0
    for (const t of st.tensors) { offsets.push(total); total += t.data.length }
    const meta: StateMeta = { ...st.meta, step, epoch, cursor: step * (quorum?.globalBatch ?? 0) }
    snapshot = { step, tensors: st.tensors, offsets, size: total, specs: st.tensors.map((t) => ({ name: t.name, shape: [...t.shape], dtype: t.dtype })), meta, crcs: new Map() }
    return snapshot
  }

  /** The snapshot of committed step `step`, taken at a step boundary (waits for one, bounded). */
  const snapshotOf = async (step: number, parent: AbortSignal): Promise<Snapshot> => {
    const t = withTimeout(requestTimeoutMs, parent)
    try {
      await waitUntil(() => {
        // The snapshot holds views of the live state: it is only good while the state stays at its step.
        if (stateDirty) throw new NotFoundError(`State of step ${step} is not available here (an interrupted heal)`)
        if (committed !== step) throw new NotFoundError(`State of step ${step} is gone (at ${committed})`)
        return atBoundary || snapshot?.step === step ? true : undefined
      }, t.signal, () => new TimeoutError(`State of step ${step} not available (at ${committed})`))
    } finally { t.done() }
    return await takeSnapshot(step)
  }

  const onHealMeta = async (env: Envelope, options: Required<AbortOptions>): Promise<OutboundMessage> => {
    const { step } = parseBody(healMetaBodySchema, env.header.body, 'heal-meta')
    const snap = await snapshotOf(step, options.signal)
    // Chunk checksums travel with each chunk (computed on demand), so serving a heal costs no pass over the whole state up front.
    const reply: HealMetaReply = { step, meta: snap.meta as Record<string, unknown>, specs: snap.specs.map((s) => ({ name: s.name, shape: [...s.shape], dtype: s.dtype })), size: snap.size, chunkFloats, crcs: [] }
    return { type: ElasticMessage.healMeta, body: reply }
  }

  const onHealChunk = async (env: Envelope, options: Required<AbortOptions>): Promise<OutboundMessage> => {
    const { step, index, chunkFloats: cf = chunkFloats } = parseBody(healChunkRequestSchema, env.header.body, 'heal-chunk')
    const snap = await snapshotOf(step, options.signal)
    if (index >= Math.max(1, Math.ceil(snap.size / cf))) throw new NotFoundError(`No chunk ${index} of step ${step}`)
    const pieces = flatRange(snap.tensors, snap.offsets, index * cf, Math.min(snap.size, (index + 1) * cf))
    const key = `${index}:${cf}`
    let crc = snap.crcs.get(key)
    if (crc === undefined) {
      crc = 0
      for (const p of pieces) crc = crc32c(bytesOf(p), crc)
      snap.crcs.set(key, crc)
    }
    return { type: ElasticMessage.healChunk, body: { step, index, crc }, tensors: pieces.map((data, k) => ({ name: `p${k}`, shape: [data.length], dtype: 'float32', data })) }
  }

  /** Restores committed step `target` from the local snapshot; false when it has another step or fails. */
  const restoreLocal = async (target: number, signal: AbortSignal): Promise<boolean> => {
    if (snapshots === undefined) return false
    const t0 = clock.now()
    try {
      const st = await snapshots.restore(target, { signal })
      if (st?.meta.step !== target) return false
      await hooks.set({ tensors: st.tensors, meta: { ...st.meta, step: target, epoch } })
    } catch (err) {
      if (signal.aborted) throw err
      log.warn({ err: (err as Error).name, step: target }, 'restore from the local snapshot failed; healing from peers')
      return false
    }
    committed = target
    snapshot = undefined
    const ms = clock.now() - t0
    lastHealMs = ms
    let bytes = 0
    for (const t of (await hooks.get()).tensors) bytes += t.data.byteLength
    log.info({ step: target, bytes, ms }, 'restored from the local snapshot')
    emit('restore', { step: target, bytes, ms })
    return true
  }

  /**
   * Before the first join: adopts the newest local snapshot (a restarted process), so the join
   * announces the step this worker can serve. A failure only costs the shortcut: the worker then
   * joins empty-handed and heals from its peers.
   */
  const restoreLatest = async (): Promise<void> => {
    if (snapshots?.latest === undefined || committed > 0) return
    const t0 = clock.now()
    try {
      const st = await snapshots.latest({ signal: life.signal })
      if (st === undefined || st.meta.step <= 0 || committed > 0) return
      await hooks.set({ tensors: st.tensors, meta: st.meta })
      committed = st.meta.step
      nextStep = st.meta.step
      snapshot = undefined
      lastCaptured = st.meta.step
      const ms = clock.now() - t0
      let bytes = 0
      for (const t of st.tensors) bytes += t.data.byteLength
      log.info({ step: committed, bytes, ms }, 'restored from the local snapshot before joining')
      emit('restore', { step: committed, bytes, ms })
    } catch (err) {
      if (life.signal.aborted) return
      log.warn({ err: (err as Error).name }, 'could not restore the newest local snapshot; joining without it')
    }
  }
  let restoredAtStart = false

  /** Pulls the committed state of step `target` from the up-to-date members, striped over all of them. */
  const heal = async (q: QuorumBody, target: number, signal: AbortSignal): Promise<void> => {
    const t0 = clock.now()
    phase = 'heal'
    if (await restoreLocal(target, signal)) return
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
    if (expected !== m.size) throw new MalformedMessageError('heal-meta layout is inconsistent')
    const chunks = Math.max(1, Math.ceil(m.size / m.chunkFloats))
    const tMeta = clock.now()
    // Chunks are written straight into this worker's own state arrays when the layout matches (no
    // staging copy of the whole state), else into one new flat array.
    const own = await hooks.get()
    let dest: readonly NamedTensor[]
    try {
      assertSameLayout(own.tensors, m.specs)
      dest = own.tensors
    } catch {
      const flat = new Float32Array(m.size)
      let off = 0
      dest = m.specs.map((sp) => {
        const n = sp.shape.reduce((x, y) => x * y, 1)
        const t = { name: sp.name, shape: sp.shape, dtype: sp.dtype, data: flat.subarray(off, off + n) }
        off += n
        return t
      })
    }
    const offsets: number[] = []
    let total = 0
    for (const t of dest) { offsets.push(total); total += t.data.length }
    stateDirty = true
    let remaining = Array.from({ length: chunks }, (_, i) => i)
    let refetched = 0
    for (let round = 0; round < sources.length && remaining.length > 0; round++) {
      const failed: number[] = []
      const bySource = new Map<string, number[]>()
      for (const i of remaining) {
        const src = sources[(i + round) % sources.length] as string
        let list = bySource.get(src)
        if (list === undefined) { list = []; bySource.set(src, list) }
        list.push(i)
      }
      await Promise.all([...bySource].map(async ([src, queue]) => {
        let next = 0
        const runner = async (): Promise<void> => {
          while (next < queue.length) {
            const i = queue[next++] as number
            try {
              const reply = await endpoint.request(src, { type: ElasticMessage.healChunk, body: { step: target, index: i, chunkFloats: m.chunkFloats } }, { timeoutMs: requestTimeoutMs, signal })
              checkFrames(reply.header, reply.frames)
              const body = healChunkReplySchema.safeParse(reply.header.body)
              if (!body.success || body.data.index !== i) throw new MalformedMessageError(`Chunk ${i} reply is malformed`)
              const pieces = decodeTensors(reply).map((t) => t.data)
              const start = i * m.chunkFloats
              const want = Math.min(m.size, start + m.chunkFloats) - start
              let crc = 0
              let got = 0
              for (const p of pieces) { crc = crc32c(bytesOf(p), crc); got += p.length }
              if (got !== want) throw new MalformedMessageError(`Chunk ${i} has the wrong length`)
              if (crc !== body.data.crc) throw new ChecksumMismatchError(`Chunk ${i} from ${src} fails its CRC-32`)
              writeFlatRange(dest, offsets, start, pieces)
            } catch (err) {
              if (signal.aborted) throw err
              refetched++
              log.warn({ source: src, chunk: i, err: (err as Error).name }, 'heal chunk failed; will fetch it from another peer')
              failed.push(i)
            }
          }
        }
        await Promise.all(Array.from({ length: Math.min(healConcurrency, queue.length) }, runner))
      }))
      remaining = failed.sort((x, y) => x - y)
    }
    if (remaining.length > 0) throw new ChecksumMismatchError(`${remaining.length} chunks could not be fetched intact from any peer`)
    const healedMeta = { ...(m.meta as StateMeta), step: target, epoch }
    const tSet = clock.now()
    await hooks.set({ tensors: dest, meta: healedMeta })
    stateDirty = false
    committed = target
    snapshot = undefined
    const ms = clock.now() - t0
    lastHealMs = ms
    const phases = { metaMs: tMeta - t0, transferMs: tSet - tMeta, setMs: clock.now() - tSet }
    log.info({ step: target, bytes: m.size * 4, ms, sources, refetched, ...phases }, 'healed from peers')
    emit('heal', { step: target, bytes: m.size * 4, ms, sources, chunks, refetched, ...phases })
  }
  let lastHealMs: number | undefined

  /** Captures committed step `at`; a skipped capture is retried while the state stays at that boundary. */
  const captureAt = (at: number, e: number, globalBatch: number): void => {
    const hooks = snapshots as SnapshotHooks
    captureRetry?.cancel()
    captureRetry = undefined
    const attempt = (): boolean => {
      if (!started || !atBoundary || committed !== at) return true
      try {
        if (hooks.capture({ step: at, epoch: e, cursor: at * globalBatch }) === false) return false
      } catch (err) {
        log.warn({ err: (err as Error).name, step: at }, 'snapshot capture failed')
      }
      lastCaptured = at
      return true
    }
    if (attempt()) return
    captureRetry = clock.setInterval(() => {
      if (attempt()) { captureRetry?.cancel(); captureRetry = undefined }
    }, Math.max(1, hooks.retryMs ?? 20))
  }

  /**
   * What {@link steps} should do now: end, run step `s` of quorum `q` in epoch `e`, or wait
   * (undefined). Re-checked synchronously right before a step starts, so a step never begins from a
   * plan that a quorum handled meanwhile has made stale.
   */
  const nextPlan = (): 'done' | { q: QuorumBody, e: number, s: number } | undefined => {
    if (done && (pending === undefined || pending.settled)) return 'done'
    if (joined && quorum?.active === true && rank >= 0 && nextStep < quorum.steps && (pending === undefined || pending.settled)) return { q: quorum, e: epoch, s: nextStep }
    return undefined
  }

  async function * steps (options: AbortOptions = {}): AsyncIterableIterator<TrainingStep> {
    const signal = options.signal === undefined ? life.signal : AbortSignal.any([life.signal, options.signal])
    const closed = (): Error => (life.signal.aborted ? new ClosedError('Worker stopped') : new AbortError())
    for (;;) {
      // A stopped worker yields no new step, even when its last quorum would allow one.
      if (signal.aborted) throw closed()
      const plan = await waitUntil(nextPlan, signal, closed)
      if (plan === 'done') return
      const { q, e, s } = plan
      // `waitUntil` settles a few microtasks after it decided, and a heal awaits: a quorum (or an
      // eviction) handled in between found no step to abort. Starting a step from such a stale plan
      // would run it in an epoch its peers have left, waiting for inputs that never come, while the
      // heartbeats report the new epoch (so the coordinator only ends it at the hang deadline).
      const stale = (): boolean => {
        const now = nextPlan()
        return now === undefined || now === 'done' || now.q !== q || now.e !== e || now.s !== s
      }
      if (stale()) continue
      // Behind: heal. Ahead: the quorum recomputes steps whose state was lost with their holders
      // (the coordinator rewound to the newest state held); this worker adopts that state too.
      if (committed !== s) {
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
        if (stale()) continue
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
      if (snapshots !== undefined && committed > lastCaptured && committed > 0 && committed % snapshotEvery === 0) captureAt(committed, e, q.globalBatch)
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
          const { full, checksum, rejected } = await exchange(s, e, q, mbs, gradients, sig)
          if (ctl.signal.aborted) throw ctl.signal.reason as Error
          let resolve!: (v: boolean) => void
          const outcome = new Promise<boolean>((r) => { resolve = r })
          reduced = { step: s, epoch: e, outcome, resolve, settled: false }
          pending = reduced
          phase = 'voted'
          try {
            const loss = opts.loss !== undefined && Number.isFinite(opts.loss) ? { loss: opts.loss } : {}
            await endpoint.send(coordinatorId, { type: ElasticMessage.ready, epoch: e, step: s, body: { checksum, computeMs, microBatches: mbs.length, ...(healMs === undefined ? {} : { healMs }), ...loss, ...(rejected.length === 0 ? {} : { rejected }) } })
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
      captureRetry?.cancel()
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
    status: () => ({ joined, epoch, committed, rank, phase, done, robust: { rejected: { ...robustCounts.rejected }, downWeighted: { ...robustCounts.downWeighted } } }),
    on (event, listener) {
      listeners[event].add(listener as never)
      return () => { listeners[event].delete(listener as never) }
    },
    async [Symbol.asyncDispose] () { await worker.stop() }
  }
  return worker
}
