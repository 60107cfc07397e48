/**
 * The messaging contract. Coordinator, workers, holders and pipeline stages talk only through
 * these interfaces; `@phalanx/transport` implements them in memory (`./memory`) and over ZeroMQ
 * (`./zmq`), and chaos decorators wrap them. Both implementations pass the same compliance suite
 * in `@phalanx/testing`.
 *
 * Guarantees every implementation gives:
 * - **Ordered delivery per peer**: messages from A to B arrive in the order A sent them.
 * - **Bounded memory**: each peer has a send queue of at most `sendQueueLimit` messages; a send that
 *   would exceed it rejects at once with `QueueFullError`.
 * - **Validated input**: a received message is size-checked, decoded and schema-checked before any
 *   handler sees it; anything malformed is dropped, counted in {@link EndpointStats.rejected} and
 *   reported as a {@link RejectedEvent}, never thrown into the event loop.
 * - **Epoch fencing**: with a {@link EpochFence}, messages from older epochs are dropped and counted.
 * - **Zero copy**: sent tensor arrays are not copied; do not change them until `send` resolves
 *   (ZeroMQ may still be reading them afterwards for a moment: never reuse a buffer you sent).
 *
 * @module
 */
import type { AbortOptions } from './abort.js'
import type { Logger } from './logger.js'
import type { Envelope, MessageHeader, OutboundMessage, WireLimits } from './wire.js'

/** Identity of an endpoint, unique within a job (e.g. `coordinator`, `worker-3`, `holder-host2`). */
export type PeerId = string

/** Options of {@link Endpoint.request}. */
export interface RequestOptions extends AbortOptions {
  /**
   * Rejects with `TimeoutError` when no reply arrived in time.
   * @default the endpoint's `requestTimeoutMs`
   */
  timeoutMs?: number
}

/**
 * Handles one message type. For a request, the returned message is sent back as the reply and a
 * thrown error is sent back in wire form (the requester's promise rejects with it). For a
 * fire-and-forget message the result is ignored and a thrown error is logged and counted.
 * The signal fires when the endpoint closes.
 */
export type MessageHandler = (envelope: Envelope, options: Required<AbortOptions>) => OutboundMessage | undefined | void | Promise<OutboundMessage | undefined | void>

/** A received message that was dropped before reaching a handler. */
export interface RejectedEvent {
  /** Error class name of the reason: `MalformedMessageError`, `MessageTooLargeError`, `StaleEpochError`, ... */
  reason: string
  /** Human-readable explanation. */
  message: string
  /** Transport-level sender, when known. */
  peer?: string
}

/** Counters kept by every endpoint. */
export interface EndpointStats {
  sent: number
  received: number
  /** Dropped inbound messages by reason (error class name). */
  rejected: Record<string, number>
  /** Bytes of tensor frames sent and received. */
  bytesSent: number
  bytesReceived: number
}

/** Listeners of an endpoint, by event name. */
export interface EndpointEvents {
  /** An inbound message was dropped (malformed, oversized, stale epoch, other job, unauthorised). */
  rejected: (event: RejectedEvent) => void
  /** A known peer's connection dropped (ZeroMQ socket event, or the memory peer closed). */
  'peer:disconnect': (peer: PeerId) => void
}

/**
 * One participant's messaging end: it listens at {@link address}, dials peers by id, sends
 * fire-and-forget messages and requests, and dispatches received messages to handlers by type.
 */
export interface Endpoint extends AsyncDisposable {
  /** This endpoint's id. */
  readonly id: PeerId
  /** The address others dial to reach this endpoint (with the real port when `:0` was asked for). */
  readonly address: string
  /** Epoch stamped on outgoing messages whose `epoch` is not set. */
  epoch: number

  /** Makes `peer` reachable at `address`. Idempotent; a new address replaces the old route. */
  connect(peer: PeerId, address: string): void
  /** Forgets the route to `peer`; its pending requests reject with `PeerUnreachableError`. */
  disconnect(peer: PeerId): void

  /**
   * Queues a fire-and-forget message to `to`. Resolves once queued on the socket.
   * @throws `UnknownPeerError`, `QueueFullError`, `MessageTooLargeError`, `ClosedError`, `AbortError`
   */
  send(to: PeerId, message: OutboundMessage, options?: AbortOptions): Promise<void>

  /**
   * Sends a request and resolves with the reply envelope.
   * @throws as {@link send}, plus `TimeoutError`, `PeerUnreachableError` and whatever error the handler returned
   */
  request(to: PeerId, message: OutboundMessage, options?: RequestOptions): Promise<Envelope>

  /** Registers the handler of one message type (one per type). Returns a function that removes it. */
  handle(type: string, handler: MessageHandler): () => void

  /** Subscribes to an endpoint event. Returns a function that unsubscribes. */
  on<E extends keyof EndpointEvents>(event: E, listener: EndpointEvents[E]): () => void

  /** A snapshot of the counters. */
  stats(): EndpointStats

  /**
   * Stops receiving, rejects pending requests with `ClosedError`, and closes the sockets, waiting
   * at most `lingerMs` for queued messages to leave. Idempotent.
   */
  close(options?: { lingerMs?: number } & AbortOptions): Promise<void>
}

/** What an endpoint is opened with. */
export interface EndpointInit {
  /** Unique id within the job. */
  id: PeerId
  /** Job id stamped on every message; messages of other jobs are rejected. */
  job: string
  /**
   * Where to listen: `tcp://127.0.0.1:0` (a free port), `ipc:///path`, or any name for the memory transport.
   * @default a free loopback port (zmq) or the id (memory)
   */
  listen?: string
  /** Drops inbound messages from older epochs. */
  fence?: EpochFence
  /** Size caps for inbound messages; outbound tensors are framed with `maxFrameBytes`. */
  limits?: Partial<WireLimits>
  /**
   * Most messages queued per peer before `send` throws `QueueFullError`.
   * @default 64
   */
  sendQueueLimit?: number
  /**
   * Default reply deadline of `request`.
   * @default 5000
   */
  requestTimeoutMs?: number
  /** Logger for rejected input and connection events. @default silent */
  logger?: Logger
}

/** A way of opening endpoints: in memory, over ZeroMQ, or a decorated (chaos) version of either. */
export interface Transport {
  /** `'memory'`, `'zmq'`, or a decorator's name. */
  readonly name: string
  /** Opens an endpoint that listens at once. */
  open(init: EndpointInit, options?: AbortOptions): Promise<Endpoint>
}

/**
 * Epoch fencing. Every membership change bumps the epoch; a message from an older epoch describes a
 * world that no longer exists and is dropped (and counted), never applied.
 */
export interface EpochFence {
  /** The current epoch. */
  readonly epoch: number
  /** Number of messages dropped as stale so far. */
  readonly dropped: number
  /** Moves to `epoch` if it is newer; never goes back. */
  advance(epoch: number): void
  /** True when the message may be applied; counts it as dropped otherwise. */
  admit(header: Pick<MessageHeader, 'epoch' | 'type'>): boolean
}

/**
 * Creates an {@link EpochFence}. `exempt` lists message types that are valid whatever their epoch
 * (e.g. `join` and `heartbeat` from a worker that does not know the epoch yet).
 */
export function createEpochFence (init: { epoch?: number, exempt?: readonly string[] } = {}): EpochFence {
  let epoch = init.epoch ?? 0
  let dropped = 0
  const exempt = new Set(init.exempt ?? [])
  return {
    get epoch () { return epoch },
    get dropped () { return dropped },
    advance (next) { if (next > epoch) epoch = next },
    admit (header) {
      if (header.epoch >= epoch || exempt.has(header.type)) return true
      dropped++
      return false
    }
  }
}
