/**
 * Every error Phalanx throws on purpose, one class per condition.
 *
 * Check an error by its name, never with `instanceof` (errors cross package copies, worker threads
 * and the wire): `if (err.name === TimeoutError.name) { ... }`.
 *
 * Errors cross process boundaries in their {@link WireError} form: {@link PhalanxError.toWire} on the
 * sending side, {@link fromWire} on the receiving side, which rebuilds the same class when it knows
 * the name and a {@link RemoteError} otherwise.
 *
 * Whether an operation that failed with an error may be tried again is decided in one place only:
 * {@link isRetryable}.
 *
 * @module
 */

/** The serialisable form of an error, as carried in a reply header. */
export interface WireError {
  /** The error class name, e.g. `'TimeoutError'`. */
  name: string
  message: string
  /** The sender's {@link isRetryable} verdict. */
  retryable: boolean
  /** Small JSON-able context; never tensors or peer-supplied objects. */
  details?: Record<string, unknown>
}

/** Options accepted by every Phalanx error constructor. */
export interface PhalanxErrorOptions {
  /** The underlying error, kept as ES2022 `cause`. */
  cause?: unknown
  /** Small JSON-able context that is logged and sent on the wire. */
  details?: Record<string, unknown>
}

/**
 * Base class of every Phalanx error. Subclasses only set `name` and a default message.
 */
export class PhalanxError extends Error {
  static override name = 'PhalanxError'
  /** Small JSON-able context. */
  readonly details: Record<string, unknown>

  constructor (message: string, options: PhalanxErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = (this.constructor as { name: string }).name
    this.details = options.details ?? {}
  }

  /** The form of this error that crosses the wire. */
  toWire (): WireError {
    return toWire(this)
  }
}

/** A function or factory was called with arguments that cannot work. */
export class InvalidParametersError extends PhalanxError {
  static override name = 'InvalidParametersError'
  constructor (message = 'Invalid parameters', options?: PhalanxErrorOptions) { super(message, options) }
}

/** A configuration (file, flags or object) failed validation; `details.issues` lists every problem. */
export class InvalidConfigError extends PhalanxError {
  static override name = 'InvalidConfigError'
  constructor (message = 'Invalid configuration', options?: PhalanxErrorOptions) { super(message, options) }
}

/** A received message could not be decoded: bad msgpack, a header failing the schema, wrong frame count. */
export class MalformedMessageError extends PhalanxError {
  static override name = 'MalformedMessageError'
  constructor (message = 'Malformed message', options?: PhalanxErrorOptions) { super(message, options) }
}

/** A frame or message exceeds the configured size caps. */
export class MessageTooLargeError extends PhalanxError {
  static override name = 'MessageTooLargeError'
  constructor (message = 'Message too large', options?: PhalanxErrorOptions) { super(message, options) }
}

/** The header's protocol version is not one this build speaks. */
export class ProtocolVersionError extends PhalanxError {
  static override name = 'ProtocolVersionError'
  constructor (message = 'Unsupported protocol version', options?: PhalanxErrorOptions) { super(message, options) }
}

/** A bounded send queue is full: the caller must wait or drop, memory is never allowed to grow unbounded. */
export class QueueFullError extends PhalanxError {
  static override name = 'QueueFullError'
  constructor (message = 'Send queue is full', options?: PhalanxErrorOptions) { super(message, options) }
}

/** An operation did not finish within its deadline. */
export class TimeoutError extends PhalanxError {
  static override name = 'TimeoutError'
  constructor (message = 'Operation timed out', options?: PhalanxErrorOptions) { super(message, options) }
}

/** An operation was cancelled through its `AbortSignal`. Same name as the DOM's `AbortError`. */
export class AbortError extends PhalanxError {
  static override name = 'AbortError'
  constructor (message = 'Operation was aborted', options?: PhalanxErrorOptions) { super(message, options) }
}

/** The endpoint or component was closed while the operation was pending or before it started. */
export class ClosedError extends PhalanxError {
  static override name = 'ClosedError'
  constructor (message = 'Closed', options?: PhalanxErrorOptions) { super(message, options) }
}

/** A message was addressed to a peer the endpoint has no route to. */
export class UnknownPeerError extends PhalanxError {
  static override name = 'UnknownPeerError'
  constructor (message = 'Unknown peer', options?: PhalanxErrorOptions) { super(message, options) }
}

/** A peer could not be reached (connection refused, disconnected while waiting). */
export class PeerUnreachableError extends PhalanxError {
  static override name = 'PeerUnreachableError'
  constructor (message = 'Peer unreachable', options?: PhalanxErrorOptions) { super(message, options) }
}

/** A request arrived for a message type no handler is registered for. */
export class UnhandledMessageError extends PhalanxError {
  static override name = 'UnhandledMessageError'
  constructor (message = 'No handler for message type', options?: PhalanxErrorOptions) { super(message, options) }
}

/** A message or decision carried an epoch older than the current one and was fenced off. */
export class StaleEpochError extends PhalanxError {
  static override name = 'StaleEpochError'
  constructor (message = 'Stale epoch', options?: PhalanxErrorOptions) { super(message, options) }
}

/** A coordinator decision carried a fencing token older than the store's: a deposed leader acted. */
export class FencedError extends PhalanxError {
  static override name = 'FencedError'
  constructor (message = 'Fencing token is stale', options?: PhalanxErrorOptions) { super(message, options) }
}

/** A peer's credentials (CURVE key) are not on the allow-list, or it spoke plain text to a secure endpoint. */
export class UnauthorizedPeerError extends PhalanxError {
  static override name = 'UnauthorizedPeerError'
  constructor (message = 'Peer is not authorised', options?: PhalanxErrorOptions) { super(message, options) }
}

/** A chunk's checksum does not match its recorded value. */
export class ChecksumMismatchError extends PhalanxError {
  static override name = 'ChecksumMismatchError'
  constructor (message = 'Checksum mismatch', options?: PhalanxErrorOptions) { super(message, options) }
}

/** A checkpoint or snapshot is truncated, inconsistent or unreadable. */
export class CorruptCheckpointError extends PhalanxError {
  static override name = 'CorruptCheckpointError'
  constructor (message = 'Checkpoint is corrupt', options?: PhalanxErrorOptions) { super(message, options) }
}

/** A named thing (checkpoint, snapshot, peer state, key) does not exist. */
export class NotFoundError extends PhalanxError {
  static override name = 'NotFoundError'
  constructor (message = 'Not found', options?: PhalanxErrorOptions) { super(message, options) }
}

/** Two state dicts (or a state dict and a model) do not have the same tensor names, shapes or dtypes. */
export class LayoutMismatchError extends PhalanxError {
  static override name = 'LayoutMismatchError'
  constructor (message = 'Tensor layout mismatch', options?: PhalanxErrorOptions) { super(message, options) }
}

/** A compute backend was requested that is not available on this machine. */
export class BackendUnavailableError extends PhalanxError {
  static override name = 'BackendUnavailableError'
  constructor (message = 'Compute backend unavailable', options?: PhalanxErrorOptions) { super(message, options) }
}

/** Too few inputs for the number of faulty inputs an aggregator must tolerate (e.g. Krum needs n > 2f + 2). */
export class InsufficientInputsError extends PhalanxError {
  static override name = 'InsufficientInputsError'
  constructor (message = 'Not enough inputs for the tolerated number of faults', options?: PhalanxErrorOptions) { super(message, options) }
}

/** Fewer live members than the job's minimum: no quorum can be formed. */
export class QuorumLostError extends PhalanxError {
  static override name = 'QuorumLostError'
  constructor (message = 'Quorum lost', options?: PhalanxErrorOptions) { super(message, options) }
}

/** A training step was dropped by the two-phase commit and will be retried; nothing of it was applied. */
export class StepAbortedError extends PhalanxError {
  static override name = 'StepAbortedError'
  constructor (message = 'Step aborted', options?: PhalanxErrorOptions) { super(message, options) }
}

/** Too few intact erasure-coded shards survive to rebuild a stripe: more than m of its k+m holders were lost or corrupt. */
export class InsufficientShardsError extends PhalanxError {
  static override name = 'InsufficientShardsError'
  constructor (message = 'Too few shards survive to rebuild the data', options?: PhalanxErrorOptions) { super(message, options) }
}

/** Erasure-coded shards were made by another codec (or other k, m) than the one decoding them: they are not interchangeable. */
export class CodecMismatchError extends PhalanxError {
  static override name = 'CodecMismatchError'
  constructor (message = 'Shards were encoded by another codec', options?: PhalanxErrorOptions) { super(message, options) }
}

/** A remote error whose name this build does not know; `details.remoteName` keeps the original. */
export class RemoteError extends PhalanxError {
  static override name = 'RemoteError'
  constructor (message = 'Remote error', options?: PhalanxErrorOptions) { super(message, options) }
}

type ErrorClass = new (message?: string, options?: PhalanxErrorOptions) => PhalanxError

const KNOWN: ReadonlyMap<string, ErrorClass> = new Map<string, ErrorClass>([
  InvalidParametersError, InvalidConfigError, MalformedMessageError, MessageTooLargeError,
  ProtocolVersionError, QueueFullError, TimeoutError, AbortError, ClosedError, UnknownPeerError,
  PeerUnreachableError, UnhandledMessageError, StaleEpochError, FencedError, UnauthorizedPeerError,
  ChecksumMismatchError, CorruptCheckpointError, NotFoundError, LayoutMismatchError,
  BackendUnavailableError, InsufficientInputsError, QuorumLostError, StepAbortedError, RemoteError,
  InsufficientShardsError, CodecMismatchError
].map((cls) => [cls.name, cls]))

/**
 * Conditions worth trying again after a back-off: transient network and scheduling failures.
 * Everything else (bad input, corruption, authorisation, configuration) fails the same way twice.
 */
const RETRYABLE: ReadonlySet<string> = new Set([
  TimeoutError.name, QueueFullError.name, PeerUnreachableError.name, StaleEpochError.name,
  QuorumLostError.name, StepAbortedError.name, ClosedError.name
])

/**
 * The single retry policy of Phalanx: may the operation that failed with `err` be tried again?
 * A {@link RemoteError} keeps the verdict its sender made.
 */
export function isRetryable (err: unknown): boolean {
  if (!(err instanceof Error)) return false
  if (err.name === RemoteError.name) return (err as PhalanxError).details?.retryable === true
  return RETRYABLE.has(err.name)
}

/** Converts any thrown value to its {@link WireError} form. Non-errors become a generic `Error`. */
export function toWire (err: unknown): WireError {
  if (!(err instanceof Error)) return { name: 'Error', message: String(err), retryable: false }
  const details = (err as Partial<PhalanxError>).details
  const wire: WireError = { name: err.name, message: err.message, retryable: isRetryable(err) }
  if (details !== undefined && Object.keys(details).length > 0) wire.details = details
  return wire
}

/**
 * Rebuilds an error from its wire form: the same class when the name is known,
 * a {@link RemoteError} otherwise. Never trusts `wire` to be well-formed.
 */
export function fromWire (wire: unknown): PhalanxError {
  const w = (typeof wire === 'object' && wire !== null ? wire : {}) as Partial<WireError>
  const name = typeof w.name === 'string' ? w.name : 'Error'
  const message = typeof w.message === 'string' ? w.message : 'Remote error'
  const details = typeof w.details === 'object' && w.details !== null ? { ...w.details } : {}
  const cls = KNOWN.get(name)
  if (cls !== undefined && name !== RemoteError.name) return new cls(message, { details })
  return new RemoteError(message, { details: { ...details, remoteName: name, retryable: w.retryable === true } })
}
