/**
 * The transport-independent half of an {@link Endpoint}: header encoding, per-peer bounded send
 * queues, inbound validation (size caps, msgpack, schema, job, frames, epoch fence), dispatch to
 * handlers, request/reply bookkeeping, stats, events and close. A transport supplies only a
 * {@link Driver} that moves frames; memory and ZeroMQ therefore share one validation path.
 *
 * @module
 */
import {
  AbortError, ClosedError, DEFAULT_WIRE_LIMITS, InvalidParametersError, MalformedMessageError, MessageTooLargeError,
  PeerUnreachableError, PROTOCOL_VERSION, QueueFullError, StaleEpochError, TimeoutError, UnauthorizedPeerError,
  UnhandledMessageError, UnknownPeerError, checkFrames, shapeSize, componentLogger, encodeTensors, fromWire, parseHeader,
  systemClock, toWire, type Clock, type Endpoint, type EndpointEvents, type EndpointInit,
  type EndpointStats, type Envelope, type Logger, type MessageHandler, type MessageHeader, type OutboundMessage,
  type PeerId, type RequestOptions, type TimerHandle, type WireError, type WireLimits
} from '@phalanx/core'
import { Packr, Unpackr } from 'msgpackr'

/** Collaborators shared by every transport. */
export interface TransportComponents {
  /** Drives request timeouts and close linger. @default systemClock() */
  clock?: Clock
}

/** Defaults of {@link EndpointInit} tunables. */
export const DEFAULT_SEND_QUEUE_LIMIT = 64
export const DEFAULT_REQUEST_TIMEOUT_MS = 5_000
/** Close waits at most this long for queued messages to leave. */
export const DEFAULT_LINGER_MS = 1_000

/** Where the core hands received frames (frame 0 = header) and connection facts. */
export interface DriverSink {
  /** A message arrived from `peer` (transport-authenticated); `reply` sends frames back to it. */
  deliver(peer: string, frames: readonly Uint8Array[], reply: (frames: Uint8Array[]) => Promise<void>): void
  /** Input was refused below the message level (handshake failure, oversized frame at the socket). */
  refuse(error: Error, peer?: string): void
  /** A connected peer went away. */
  peerDown(peer: PeerId): void
}

/** The part of an endpoint a transport implements: moving frames. */
export interface Driver {
  readonly address: string
  /** Makes `peer` reachable; throws `InvalidParametersError` on an unusable address. */
  connect(peer: PeerId, address: string, options?: unknown): void
  disconnect(peer: PeerId): void
  hasRoute(peer: PeerId): boolean
  /** Writes one message to `peer`; the core calls it at most once at a time per peer. */
  write(peer: PeerId, frames: Uint8Array[]): Promise<void>
  /** Releases every resource, waiting at most `lingerMs` for written messages to leave. */
  close(lingerMs: number): Promise<void>
}

interface QueuedSend {
  frames: Uint8Array[]
  tensorBytes: number
  resolve: () => void
  reject: (err: Error) => void
  signal: AbortSignal | undefined
  onAbort: (() => void) | undefined
}

interface PeerQueue {
  waiting: QueuedSend[]
  busy: boolean
}

interface PendingRequest {
  peer: PeerId
  resolve: (envelope: Envelope) => void
  reject: (err: Error) => void
}

/** Resolved limits and tunables of one endpoint. */
interface Settings {
  id: PeerId
  job: string
  limits: WireLimits
  sendQueueLimit: number
  requestTimeoutMs: number
}

function resolveSettings (init: EndpointInit): Settings {
  if (typeof init.id !== 'string' || init.id.length === 0 || init.id.length > 128) throw new InvalidParametersError('Endpoint id must be a string of 1 to 128 characters')
  if (typeof init.job !== 'string' || init.job.length > 128) throw new InvalidParametersError('Job id must be a string of at most 128 characters')
  const limits: WireLimits = { ...DEFAULT_WIRE_LIMITS, ...init.limits }
  for (const [key, value] of Object.entries(limits)) {
    if (!Number.isInteger(value) || value <= 0) throw new InvalidParametersError(`limits.${key} must be a positive integer`)
  }
  if (limits.maxFrameBytes < 4) throw new InvalidParametersError('limits.maxFrameBytes must be at least 4')
  const sendQueueLimit = init.sendQueueLimit ?? DEFAULT_SEND_QUEUE_LIMIT
  if (!Number.isInteger(sendQueueLimit) || sendQueueLimit < 1) throw new InvalidParametersError('sendQueueLimit must be a positive integer')
  const requestTimeoutMs = init.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS
  if (!(requestTimeoutMs > 0)) throw new InvalidParametersError('requestTimeoutMs must be positive')
  return { id: init.id, job: init.job, limits, sendQueueLimit, requestTimeoutMs }
}

/** Validates `init` without opening anything (transports call it before binding sockets). */
export function validateEndpointInit (init: EndpointInit): void {
  resolveSettings(init)
}

/** The wire form of `err`, cut to the header schema's bounds so an error reply always encodes. */
function boundedWire (err: unknown): WireError {
  const wire = toWire(err)
  const bounded: WireError = { name: wire.name.slice(0, 128), message: wire.message.slice(0, 4096), retryable: wire.retryable }
  if (wire.details !== undefined) {
    try {
      // Details are small JSON by convention; anything that is not is dropped rather than sent.
      const json = JSON.stringify(wire.details)
      if (json.length <= 8192) bounded.details = JSON.parse(json) as Record<string, unknown>
    } catch {
      // Unserialisable details are left out on purpose.
    }
  }
  return bounded
}

function abortError (signal: AbortSignal): AbortError {
  return new AbortError(undefined, { cause: signal.reason })
}

/** What {@link createEndpointCore} returns: the endpoint plus the sink its driver reports to. */
export interface EndpointCore<E extends Endpoint> {
  endpoint: E
  sink: DriverSink
}

/**
 * Builds an endpoint around a driver. `openDriver` is called once, synchronously, with the sink the
 * driver reports to and the endpoint's logger; extra arguments of `connect` are passed through to
 * the driver (the zmq transport takes a CURVE server key there).
 */
export function createEndpointCore (
  init: EndpointInit,
  components: TransportComponents & { component: string },
  openDriver: (sink: DriverSink, log: Logger) => Driver
): EndpointCore<Endpoint> {
  const settings = resolveSettings(init)
  const { id, job, limits } = settings
  const clock = components.clock ?? systemClock()
  const log = componentLogger(init.logger, components.component).child({ endpoint: id })
  const fence = init.fence
  const packr = new Packr({ useRecords: false })
  const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true })

  let epoch = fence?.epoch ?? 0
  let seq = 0
  let nextReq = 1
  let closed = false
  let closing: Promise<void> | undefined
  const lifetime = new AbortController()
  const handlers = new Map<string, MessageHandler>()
  const listeners: { [K in keyof EndpointEvents]: Set<EndpointEvents[K]> } = { rejected: new Set(), 'peer:disconnect': new Set() }
  const queues = new Map<PeerId, PeerQueue>()
  const pending = new Map<number, PendingRequest>()
  const stats: EndpointStats = { sent: 0, received: 0, rejected: {}, bytesSent: 0, bytesReceived: 0 }
  // Settles when every queue is idle, so close() can wait for them without polling.
  let drainWaiters: Array<() => void> = []

  const emit = <K extends keyof EndpointEvents>(event: K, ...args: Parameters<EndpointEvents[K]>): void => {
    for (const listener of [...listeners[event]]) {
      try {
        (listener as (...a: Parameters<EndpointEvents[K]>) => void)(...args)
      } catch (err) {
        log.error({ err, event }, 'endpoint event listener threw')
      }
    }
  }

  const reject = (err: Error, peer?: string): void => {
    stats.rejected[err.name] = (stats.rejected[err.name] ?? 0) + 1
    log.warn({ reason: err.name, peer, detail: err.message }, 'inbound message rejected')
    emit('rejected', peer === undefined ? { reason: err.name, message: err.message } : { reason: err.name, message: err.message, peer })
  }

  const currentEpoch = (): number => fence === undefined ? epoch : Math.max(epoch, fence.epoch)

  /** Encodes a message to frames, enforcing the sender-side caps. */
  const encode = (message: OutboundMessage, extra: { req?: number, re?: number, err?: WireError }): { frames: Uint8Array[], tensorBytes: number } => {
    if (typeof message?.type !== 'string' || message.type.length === 0 || message.type.length > 64) {
      throw new InvalidParametersError('Message type must be a string of 1 to 64 characters')
    }
    const { descriptors, frames } = encodeTensors(message.tensors ?? [], limits.maxFrameBytes)
    const header: Record<string, unknown> = {
      v: PROTOCOL_VERSION,
      type: message.type,
      job,
      epoch: message.epoch ?? currentEpoch(),
      step: message.step ?? 0,
      from: id,
      seq: seq++
    }
    if (extra.req !== undefined) header.req = extra.req
    if (extra.re !== undefined) header.re = extra.re
    if (extra.err !== undefined) header.err = extra.err
    if (descriptors.length > 0) header.tensors = descriptors
    if (message.body !== undefined) header.body = message.body
    for (const t of message.tensors ?? []) {
      if (!(t.data instanceof Float32Array) || t.data.length !== shapeSize(t.shape)) {
        throw new InvalidParametersError(`Tensor "${String(t.name)}" must be a Float32Array of ${shapeSize(t.shape)} values`)
      }
    }
    // Validate our own header so a bad outbound message fails here, not at every receiver.
    try {
      parseHeader(header)
    } catch (cause) {
      throw new InvalidParametersError(`Outbound message "${message.type}" does not fit the wire schema`, { cause, details: (cause as { details?: Record<string, unknown> }).details ?? {} })
    }
    const head = packr.pack(header)
    if (head.byteLength > limits.maxHeaderBytes) throw new MessageTooLargeError(`Header of ${head.byteLength} bytes exceeds the cap of ${limits.maxHeaderBytes}`)
    if (frames.length + 1 > limits.maxFrames) throw new MessageTooLargeError(`Message of ${frames.length + 1} frames exceeds the cap of ${limits.maxFrames}`)
    let tensorBytes = 0
    for (const f of frames) tensorBytes += f.byteLength
    if (tensorBytes + head.byteLength > limits.maxMessageBytes) throw new MessageTooLargeError(`Message of ${tensorBytes + head.byteLength} bytes exceeds the cap of ${limits.maxMessageBytes}`)
    return { frames: [head, ...frames], tensorBytes }
  }

  let driver: Driver

  const notifyDrained = (): void => {
    for (const q of queues.values()) if (q.busy || q.waiting.length > 0) return
    const waiters = drainWaiters
    drainWaiters = []
    for (const w of waiters) w()
  }

  const settleQueued = (item: QueuedSend): void => {
    if (item.onAbort !== undefined) item.signal?.removeEventListener('abort', item.onAbort)
  }

  const pump = (peer: PeerId, q: PeerQueue): void => {
    if (q.busy) return
    const item = q.waiting.shift()
    if (item === undefined) { notifyDrained(); return }
    settleQueued(item)
    q.busy = true
    driver.write(peer, item.frames).then(() => {
      stats.sent++
      stats.bytesSent += item.tensorBytes
      item.resolve()
    }, (err: unknown) => {
      item.reject(err instanceof Error ? err : new PeerUnreachableError(String(err)))
    }).finally(() => {
      q.busy = false
      pump(peer, q)
    })
  }

  /** Queues encoded frames for `peer`; resolves once the driver accepted them. */
  const enqueue = async (peer: PeerId, frames: Uint8Array[], tensorBytes: number, signal: AbortSignal | undefined): Promise<void> => {
    let q = queues.get(peer)
    if (q === undefined) { q = { waiting: [], busy: false }; queues.set(peer, q) }
    if (q.waiting.length + (q.busy ? 1 : 0) >= settings.sendQueueLimit) {
      throw new QueueFullError(`Send queue to ${peer} holds ${settings.sendQueueLimit} messages`, { details: { peer, limit: settings.sendQueueLimit } })
    }
    const queue = q
    await new Promise<void>((resolve, reject) => {
      const item: QueuedSend = { frames, tensorBytes, resolve, reject, signal, onAbort: undefined }
      if (signal !== undefined) {
        item.onAbort = () => {
          const at = queue.waiting.indexOf(item)
          // Once handed to the driver a message cannot be recalled; only queued ones abort.
          if (at >= 0) { queue.waiting.splice(at, 1); settleQueued(item); reject(abortError(signal)); notifyDrained() }
        }
        signal.addEventListener('abort', item.onAbort, { once: true })
      }
      queue.waiting.push(item)
      pump(peer, queue)
    })
  }

  const failQueued = (peer: PeerId | undefined, err: () => Error): void => {
    for (const [p, q] of queues) {
      if (peer !== undefined && p !== peer) continue
      for (const item of q.waiting.splice(0)) { settleQueued(item); item.reject(err()) }
      if (!q.busy) queues.delete(p)
    }
    notifyDrained()
  }

  const failPending = (peer: PeerId | undefined, err: () => Error): void => {
    for (const [req, p] of pending) {
      if (peer !== undefined && p.peer !== peer) continue
      pending.delete(req)
      p.reject(err())
    }
  }

  const checkSendable = (to: PeerId, signal: AbortSignal | undefined): void => {
    if (closed) throw new ClosedError(`Endpoint ${id} is closed`)
    if (signal?.aborted === true) throw abortError(signal)
    if (!driver.hasRoute(to)) throw new UnknownPeerError(`No route to peer "${to}"`, { details: { peer: to } })
  }

  const sendReply = (request: MessageHeader, peer: string, reply: (frames: Uint8Array[]) => Promise<void>, result: OutboundMessage | undefined, err: unknown): void => {
    if (closed) return
    let encoded: { frames: Uint8Array[], tensorBytes: number }
    try {
      encoded = err === undefined
        ? encode(result ?? { type: request.type }, { re: request.req })
        : encode({ type: request.type }, { re: request.req, err: boundedWire(err) })
    } catch (encodeErr) {
      // A handler returned something unsendable: tell the requester instead of leaving it to time out.
      log.warn({ err: encodeErr, type: request.type }, 'reply could not be encoded')
      try {
        encoded = encode({ type: request.type }, { re: request.req, err: boundedWire(encodeErr) })
      } catch (fatal) {
        log.error({ err: fatal, type: request.type }, 'error reply could not be encoded')
        return
      }
    }
    const { frames, tensorBytes } = encoded
    reply(frames).then(() => {
      stats.sent++
      stats.bytesSent += tensorBytes
    }, (replyErr: unknown) => {
      log.debug({ err: replyErr, peer, type: request.type }, 'reply could not be sent')
    })
  }

  const dispatch = (envelope: Envelope, reply: (frames: Uint8Array[]) => Promise<void>): void => {
    const { header, peer } = envelope
    if (header.re !== undefined) {
      const p = pending.get(header.re)
      if (p === undefined || p.peer !== peer) {
        log.debug({ peer, re: header.re }, 'reply to no pending request (late or misrouted)')
        return
      }
      pending.delete(header.re)
      if (header.err !== undefined) p.reject(fromWire(header.err))
      else p.resolve(envelope)
      return
    }
    const handler = handlers.get(header.type)
    const isRequest = header.req !== undefined
    if (handler === undefined) {
      const err = new UnhandledMessageError(`No handler for message type "${header.type}"`, { details: { type: header.type } })
      if (isRequest) sendReply(header, peer, reply, undefined, err)
      else reject(err, peer)
      return
    }
    let result: ReturnType<MessageHandler>
    try {
      result = handler(envelope, { signal: lifetime.signal })
    } catch (err) {
      onHandlerDone(header, peer, reply, undefined, err)
      return
    }
    if (result !== null && typeof result === 'object' && typeof (result as Promise<unknown>).then === 'function') {
      (result as Promise<OutboundMessage | undefined | void>).then(
        (value) => { onHandlerDone(header, peer, reply, value ?? undefined, undefined) },
        (err: unknown) => { onHandlerDone(header, peer, reply, undefined, err ?? new Error('Handler rejected')) }
      )
    } else {
      onHandlerDone(header, peer, reply, (result as OutboundMessage | undefined | void) ?? undefined, undefined)
    }
  }

  const onHandlerDone = (header: MessageHeader, peer: string, reply: (frames: Uint8Array[]) => Promise<void>, value: OutboundMessage | undefined, err: unknown): void => {
    if (header.req !== undefined) {
      sendReply(header, peer, reply, value, err)
    } else if (err !== undefined) {
      const e = err instanceof Error ? err : new Error(String(err))
      stats.rejected[e.name] = (stats.rejected[e.name] ?? 0) + 1
      log.warn({ err: e, type: header.type, peer }, 'message handler failed')
      emit('rejected', { reason: e.name, message: e.message, peer })
    }
  }

  const sink: DriverSink = {
    deliver (peer, frames, reply) {
      if (closed) return
      try {
        if (frames.length === 0) throw new MalformedMessageError('Empty message')
        if (frames.length > limits.maxFrames) throw new MessageTooLargeError(`Message of ${frames.length} frames exceeds the cap of ${limits.maxFrames}`)
        const head = frames[0] as Uint8Array
        if (head.byteLength > limits.maxHeaderBytes) throw new MessageTooLargeError(`Header of ${head.byteLength} bytes exceeds the cap of ${limits.maxHeaderBytes}`)
        let total = 0
        for (const f of frames) total += f.byteLength
        if (total > limits.maxMessageBytes) throw new MessageTooLargeError(`Message of ${total} bytes exceeds the cap of ${limits.maxMessageBytes}`)
        let decoded: unknown
        try {
          decoded = unpackr.unpack(head)
        } catch (cause) {
          throw new MalformedMessageError('Header is not valid msgpack', { cause })
        }
        const header = parseHeader(decoded)
        if (header.job !== job) throw new UnauthorizedPeerError(`Message of job "${header.job.slice(0, 64)}" sent to job "${job}"`)
        const tensorFrames = frames.slice(1)
        checkFrames(header, tensorFrames, limits)
        if (fence !== undefined && !fence.admit(header)) {
          const err = new StaleEpochError(`Message of epoch ${header.epoch} is older than epoch ${fence.epoch}`, { details: { epoch: header.epoch, current: fence.epoch } })
          const p = header.re === undefined ? undefined : pending.get(header.re)
          // A stale reply ends its request now instead of leaving it to time out.
          if (p !== undefined && p.peer === peer && header.re !== undefined) { pending.delete(header.re); p.reject(err) }
          throw err
        }
        stats.received++
        stats.bytesReceived += total - head.byteLength
        dispatch({ header, frames: tensorFrames, peer }, reply)
      } catch (err) {
        reject(err instanceof Error ? err : new MalformedMessageError(String(err)), peer)
      }
    },
    refuse (err, peer) {
      if (!closed) reject(err, peer)
    },
    peerDown (peer) {
      if (closed) return
      log.info({ peer }, 'peer disconnected')
      failPending(peer, () => new PeerUnreachableError(`Peer "${peer}" disconnected`, { details: { peer } }))
      emit('peer:disconnect', peer)
    }
  }

  driver = openDriver(sink, log)

  const endpoint: Endpoint = {
    id,
    get address () { return driver.address },
    get epoch () { return currentEpoch() },
    set epoch (value: number) {
      if (!Number.isInteger(value) || value < 0) throw new InvalidParametersError('epoch must be a non-negative integer')
      epoch = value
      fence?.advance(value)
    },

    connect (peer, address, options?: unknown) {
      if (closed) throw new ClosedError(`Endpoint ${id} is closed`)
      if (typeof peer !== 'string' || peer.length === 0) throw new InvalidParametersError('Peer id must be a non-empty string')
      driver.connect(peer, address, options)
    },

    disconnect (peer) {
      if (!driver.hasRoute(peer)) return
      driver.disconnect(peer)
      const err = (): Error => new PeerUnreachableError(`Route to peer "${peer}" was removed`, { details: { peer } })
      failQueued(peer, err)
      failPending(peer, err)
    },

    async send (to, message, options = {}) {
      checkSendable(to, options.signal)
      const { frames, tensorBytes } = encode(message, {})
      await enqueue(to, frames, tensorBytes, options.signal)
    },

    async request (to, message, options: RequestOptions = {}) {
      const { signal } = options
      checkSendable(to, signal)
      const timeoutMs = options.timeoutMs ?? settings.requestTimeoutMs
      const req = nextReq++
      const { frames, tensorBytes } = encode(message, { req })
      let timer: TimerHandle | undefined
      let onAbort: (() => void) | undefined
      try {
        // Registered before the first await so a fake clock advanced right after the call sees the timer.
        const reply = new Promise<Envelope>((resolve, rejectReply) => {
          pending.set(req, { peer: to, resolve, reject: rejectReply })
          timer = clock.setTimeout(() => {
            if (pending.delete(req)) rejectReply(new TimeoutError(`No reply from "${to}" to "${message.type}" within ${timeoutMs} ms`, { details: { peer: to, type: message.type, timeoutMs } }))
          }, timeoutMs)
          if (signal !== undefined) {
            onAbort = () => { if (pending.delete(req)) rejectReply(abortError(signal)) }
            signal.addEventListener('abort', onAbort, { once: true })
          }
        })
        // The reply may settle before the send does (or the send may fail): race both.
        const sent = enqueue(to, frames, tensorBytes, signal)
        sent.catch(() => {})
        return await Promise.race([reply, sent.then(async () => await reply, (err: unknown) => { pending.delete(req); throw err })])
      } finally {
        pending.delete(req)
        timer?.cancel()
        if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort)
      }
    },

    handle (type, handler) {
      if (handlers.has(type)) throw new InvalidParametersError(`A handler for "${type}" is already registered`)
      handlers.set(type, handler)
      return () => { if (handlers.get(type) === handler) handlers.delete(type) }
    },

    on (event, listener) {
      const set = listeners[event] as Set<typeof listener>
      set.add(listener)
      return () => { set.delete(listener) }
    },

    stats () {
      return { ...stats, rejected: { ...stats.rejected } }
    },

    async close (options = {}) {
      if (closing !== undefined) return await closing
      const lingerMs = options.lingerMs ?? DEFAULT_LINGER_MS
      closed = true
      lifetime.abort(new ClosedError(`Endpoint ${id} closed`))
      failPending(undefined, () => new ClosedError(`Endpoint ${id} closed while waiting for a reply`))
      closing = (async () => {
        let timer: TimerHandle | undefined
        const stopWaiting = new AbortController()
        try {
          // Let queued messages leave for at most lingerMs, then drop the rest.
          if (lingerMs > 0) await new Promise<void>((resolve) => {
            drainWaiters.push(resolve)
            timer = clock.setTimeout(resolve, lingerMs)
            options.signal?.addEventListener('abort', () => { resolve() }, { once: true, signal: stopWaiting.signal })
            notifyDrained()
          })
        } finally {
          timer?.cancel()
          stopWaiting.abort()
          drainWaiters = []
        }
        failQueued(undefined, () => new ClosedError(`Endpoint ${id} closed before the message left`))
        await driver.close(lingerMs)
        for (const set of Object.values(listeners)) set.clear()
        handlers.clear()
        log.debug({}, 'endpoint closed')
      })()
      return await closing
    },

    async [Symbol.asyncDispose] () {
      await endpoint.close()
    }
  }
  return { endpoint, sink }
}
