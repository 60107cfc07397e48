/**
 * A bandwidth-optimal ring all-reduce over an {@link Endpoint}, usable as the {@link AllReduce} of an
 * all-replica outer optimiser (DiLoCo, local SGD) or for data-parallel gradients when the elastic
 * core's sharded reduce is not in play (evaluations, single-purpose jobs).
 *
 * The vector is cut into N contiguous chunks. Reduce-scatter: in N−1 steps every replica sends one
 * chunk of its running sum to its right neighbour and adds the chunk arriving from its left. All-
 * gather: in N−1 more steps the finished chunks travel round the ring. 2(N−1) sequential rounds,
 * each moving P/N values per replica, so every link carries the same load.
 *
 * @module
 */
import {
  AbortError, ClosedError, InvalidParametersError, LayoutMismatchError, TimeoutError,
  componentLogger, decodeTensors, systemClock,
  type Clock, type Endpoint, type Envelope, type Logger, type PeerId
} from '@phalanx/core'
import type { AllReduce } from './outer-optimizer.js'

/** What a {@link RingAllReduce} is created with. */
export interface RingAllReduceInit {
  /** Replica ids in ring order, identical on every replica. */
  members: readonly PeerId[]
  /**
   * This replica's id among `members`.
   * @default the endpoint's id
   */
  self?: PeerId
  /**
   * Longest wait for one chunk from the left neighbour before the reduce rejects with `TimeoutError`.
   * @default 10000
   */
  stepTimeoutMs?: number
  /**
   * Message type of the ring's chunks (change it to run several rings over one endpoint).
   * @default 'ring-chunk'
   */
  messageType?: string
}

/** Collaborators of a {@link RingAllReduce}. */
export interface RingAllReduceComponents {
  /** The replica's endpoint, connected to its right neighbour. */
  endpoint: Endpoint
  /** @default systemClock() */
  clock?: Clock
  /** @default silent */
  logger?: Logger
}

/** A started ring: {@link RingAllReduce.reduce} is the {@link AllReduce}. */
export interface RingAllReduce extends AsyncDisposable {
  /**
   * Writes the mean over every member of `input` into `out`; `options.round` must be the same on
   * every replica and increase from call to call. Reports `2(N−1)` rounds and the bytes sent.
   * @throws `TimeoutError` when a neighbour is silent for `stepTimeoutMs`, `AbortError`, `ClosedError`
   */
  readonly reduce: AllReduce
  /** Removes the chunk handler and fails a reduce in flight. Idempotent. */
  stop(): Promise<void>
}

interface Slot {
  data?: Float32Array
  resolve?: (data: Float32Array) => void
}

/** Chunk boundaries: chunk c is `[bounds[c], bounds[c + 1])`. */
function chunkBounds (size: number, n: number): number[] {
  return Array.from({ length: n + 1 }, (_, c) => Math.floor((c * size) / n))
}

/**
 * Creates and starts one replica's ring all-reduce (registers the chunk handler at once).
 *
 * @throws {InvalidParametersError} when `self` is not among `members` or a tunable is invalid
 */
export function createRingAllReduce (init: RingAllReduceInit, components: RingAllReduceComponents): RingAllReduce {
  const { endpoint } = components
  const members = [...init.members]
  const self = init.self ?? endpoint.id
  const rank = members.indexOf(self)
  if (rank < 0) throw new InvalidParametersError(`Replica "${self}" is not among the ring members`)
  const n = members.length
  const stepTimeoutMs = init.stepTimeoutMs ?? 10_000
  if (!(stepTimeoutMs > 0)) throw new InvalidParametersError(`stepTimeoutMs must be positive, got ${stepTimeoutMs}`)
  const messageType = init.messageType ?? 'ring-chunk'
  const clock = components.clock ?? systemClock()
  const log = componentLogger(components.logger, 'ring-all-reduce')
  const right = members[(rank + 1) % n] as PeerId
  const left = members[(rank - 1 + n) % n] as PeerId
  // Chunks by `round:step`. Only the left neighbour sends to us and a round's steps arrive in order,
  // so at most the current round and the next one are ever held.
  const slots = new Map<string, Slot>()
  let finishedRound = -1
  let stopped = false
  const lifecycle = new AbortController()

  const slot = (key: string): Slot => {
    let s = slots.get(key)
    if (s === undefined) { s = {}; slots.set(key, s) }
    return s
  }

  const off = endpoint.handle(messageType, (envelope: Envelope) => {
    if (envelope.peer !== left) throw new InvalidParametersError(`"${envelope.peer}" is not this replica's left neighbour`)
    const round = envelope.header.step
    if (round <= finishedRound) return
    const k = (envelope.header.body as { k?: unknown } | undefined)?.k
    if (typeof k !== 'number' || !Number.isInteger(k) || k < 0 || k > 2 * n - 3) throw new LayoutMismatchError(`Ring chunk index ${String(k)} is out of range`)
    const t = decodeTensors(envelope)[0]
    if (t === undefined) throw new LayoutMismatchError('Ring chunk carries no tensor')
    // Copy out: the frames may be the sender's memory (in-process transport).
    const data = t.data.slice()
    const s = slot(`${round}:${k}`)
    if (s.resolve !== undefined) s.resolve(data)
    else s.data = data
  })

  const receive = async (round: number, k: number, signal: AbortSignal): Promise<Float32Array> => {
    const key = `${round}:${k}`
    const s = slot(key)
    if (s.data !== undefined) { slots.delete(key); return s.data }
    let timer: { cancel: () => void } | undefined
    let onAbort: (() => void) | undefined
    try {
      return await new Promise<Float32Array>((resolve, reject) => {
        s.resolve = resolve
        timer = clock.setTimeout(() => { reject(new TimeoutError(`No ring chunk ${k} of round ${round} from "${left}" within ${stepTimeoutMs} ms`)) }, stepTimeoutMs)
        onAbort = () => { reject(signal.reason instanceof Error && signal.reason.name === ClosedError.name ? signal.reason : new AbortError(undefined, { cause: signal.reason })) }
        if (signal.aborted) onAbort()
        else signal.addEventListener('abort', onAbort, { once: true })
      })
    } finally {
      slots.delete(key)
      timer?.cancel()
      if (onAbort !== undefined) signal.removeEventListener('abort', onAbort)
    }
  }

  const reduce: AllReduce = async (input, out, options) => {
    if (stopped) throw new ClosedError('Ring all-reduce is stopped')
    if (out.length !== input.length) throw new LayoutMismatchError(`Output has ${out.length} values, input ${input.length}`)
    const { round } = options
    if (!Number.isSafeInteger(round) || round <= finishedRound) throw new InvalidParametersError(`Ring round ${round} is not after ${finishedRound}`)
    out.set(input)
    if (n === 1) { finishedRound = round; return { bytesSent: 0, rounds: 0 } }
    const signal = options.signal === undefined ? lifecycle.signal : AbortSignal.any([options.signal, lifecycle.signal])
    const bounds = chunkBounds(input.length, n)
    const chunk = (c: number): Float32Array => out.subarray(bounds[((c % n) + n) % n] as number, bounds[((c % n) + n) % n + 1] as number)
    let bytesSent = 0
    const sends: Array<Promise<void>> = []
    const send = (k: number, c: number): void => {
      // A copy: the transport may read the frame after send() resolves, and `out` keeps changing.
      const data = chunk(c).slice()
      bytesSent += data.byteLength
      sends.push(endpoint.send(right, { type: messageType, step: round, body: { k }, tensors: [{ name: 'chunk', shape: [data.length], dtype: 'float32', data }] }, { signal }))
    }
    try {
      // Reduce-scatter: after step s, chunk (rank − s − 1) holds s + 2 replicas' sum.
      for (let s = 0; s < n - 1; s++) {
        send(s, rank - s)
        const incoming = await receive(round, s, signal)
        const target = chunk(rank - s - 1)
        if (incoming.length !== target.length) throw new LayoutMismatchError(`Ring chunk of ${incoming.length} values, expected ${target.length}`)
        for (let i = 0; i < target.length; i++) target[i] = (target[i] as number) + (incoming[i] as number)
      }
      // Chunk (rank + 1) is complete here; all-gather passes the complete chunks on.
      for (let s = 0; s < n - 1; s++) {
        send(n - 1 + s, rank + 1 - s)
        const incoming = await receive(round, n - 1 + s, signal)
        const target = chunk(rank - s)
        if (incoming.length !== target.length) throw new LayoutMismatchError(`Ring chunk of ${incoming.length} values, expected ${target.length}`)
        target.set(incoming)
      }
      await Promise.all(sends)
      const inv = 1 / n
      for (let i = 0; i < out.length; i++) out[i] = (out[i] as number) * inv
      return { bytesSent, rounds: 2 * (n - 1) }
    } catch (err) {
      // Sends still queued must not surface as unhandled rejections once we have failed.
      for (const p of sends) p.catch(() => {})
      log.debug({ round, reason: (err as Error).name }, 'ring all-reduce failed')
      throw err
    } finally {
      finishedRound = Math.max(finishedRound, round)
      for (const key of slots.keys()) if (Number(key.slice(0, key.indexOf(':'))) <= round) slots.delete(key)
    }
  }

  const ring: RingAllReduce = {
    reduce,
    async stop () {
      if (stopped) return
      stopped = true
      lifecycle.abort(new ClosedError('Ring all-reduce stopped'))
      off()
      slots.clear()
    },
    async [Symbol.asyncDispose] () { await ring.stop() }
  }
  return ring
}
