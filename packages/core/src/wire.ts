/**
 * The wire format shared by every transport.
 *
 * A message is a list of frames. Frame 0 is a small msgpack-encoded {@link MessageHeader}, validated
 * against {@link messageHeaderSchema} on receipt. Frames 1..n carry the raw little-endian bytes of the
 * tensors the header describes in {@link MessageHeader.tensors}, in order, each tensor split into
 * frames of at most {@link WireLimits.maxFrameBytes}. A receiver reads each frame as a `Float32Array`
 * view without copying (frames are 4-byte aligned); {@link decodeTensors} joins multi-frame tensors.
 *
 * @module
 */
import { z } from 'zod'
import { bytesOf } from './checksum.js'
import { MalformedMessageError, MessageTooLargeError, ProtocolVersionError, type WireError } from './errors.js'
import { shapeSize, type NamedTensor } from './state-dict.js'

/** The protocol version this build speaks; headers with another `v` are rejected. */
export const PROTOCOL_VERSION = 1

/** Size caps applied to every received message before anything else is done with it. */
export interface WireLimits {
  /**
   * Largest single frame, in bytes (tensors are split into frames of at most this size).
   * @default 8 MiB
   */
  maxFrameBytes: number
  /**
   * Largest whole message (all frames), in bytes.
   * @default 1 GiB
   */
  maxMessageBytes: number
  /**
   * Largest header frame, in bytes.
   * @default 64 KiB
   */
  maxHeaderBytes: number
  /**
   * Most frames in one message, header included.
   * @default 4097
   */
  maxFrames: number
}

/** The defaults of {@link WireLimits}. */
export const DEFAULT_WIRE_LIMITS: Readonly<WireLimits> = Object.freeze({
  maxFrameBytes: 8 * 1024 * 1024,
  maxMessageBytes: 1024 * 1024 * 1024,
  maxHeaderBytes: 64 * 1024,
  maxFrames: 4097
})

const MAX_DIMS = 8

/** Describes one tensor carried in the frames after the header. */
export const tensorDescriptorSchema = z.object({
  name: z.string().min(1).max(256),
  shape: z.array(z.number().int().nonnegative()).max(MAX_DIMS),
  dtype: z.literal('float32'),
  /** Number of frames this tensor occupies. */
  frames: z.number().int().nonnegative()
}).strict()

/** One tensor's entry in a header. */
export type TensorDescriptor = z.infer<typeof tensorDescriptorSchema>

const wireErrorSchema = z.object({
  name: z.string().max(128),
  message: z.string().max(4096),
  retryable: z.boolean(),
  details: z.record(z.string(), z.unknown()).optional()
})

/** The schema every received header must pass. Unknown keys are rejected. */
export const messageHeaderSchema = z.object({
  /** Protocol version, {@link PROTOCOL_VERSION}. */
  v: z.number().int(),
  /** Message type, e.g. `'heartbeat'`, `'grad-shard'`; routes the message to its handler. */
  type: z.string().min(1).max(64),
  /** Job id: an endpoint drops messages of other jobs. */
  job: z.string().max(128),
  /** Membership epoch the sender was in. */
  epoch: z.number().int().nonnegative(),
  /** Training step the message belongs to (0 when not step-related). */
  step: z.number().int().nonnegative(),
  /** Sender id (informational: transports authenticate the sender separately). */
  from: z.string().min(1).max(128),
  /** Per-sender sequence number, increasing by one per message. */
  seq: z.number().int().nonnegative(),
  /** Request id when the sender awaits a reply. */
  req: z.number().int().nonnegative().optional(),
  /** The request id this message replies to. */
  re: z.number().int().nonnegative().optional(),
  /** Set on a reply when the request failed. */
  err: wireErrorSchema.optional(),
  /** Tensors carried in frames 1..n, in order. */
  tensors: z.array(tensorDescriptorSchema).max(4096).optional(),
  /** Small msgpack-able body (no tensors: those go in frames). */
  body: z.unknown().optional()
}).strict()

/** A validated message header (frame 0). */
export type MessageHeader = z.infer<typeof messageHeaderSchema> & { err?: WireError }

/** A received message: the validated header, its raw frames and the transport-authenticated sender. */
export interface Envelope {
  readonly header: MessageHeader
  /** Frames 1..n (the header frame excluded). */
  readonly frames: readonly Uint8Array[]
  /** Who sent it, as established by the transport (routing id or CURVE identity), not by the header. */
  readonly peer: string
}

/** What a caller hands to `Endpoint.send`/`request`; the endpoint fills in `v`, `job`, `from`, `seq`. */
export interface OutboundMessage {
  type: string
  /** Defaults to the endpoint's current epoch. */
  epoch?: number
  /** @default 0 */
  step?: number
  body?: unknown
  /** Tensors to send as raw frames. Their arrays must not be changed until the send resolves. */
  tensors?: readonly NamedTensor[]
}

/**
 * Validates a decoded header object. Throws {@link ProtocolVersionError} for another version and
 * {@link MalformedMessageError} (with the schema issues in `details`) for anything else wrong.
 */
export function parseHeader (value: unknown): MessageHeader {
  const version = (value as { v?: unknown } | null)?.v
  if (typeof version === 'number' && version !== PROTOCOL_VERSION) {
    throw new ProtocolVersionError(`Protocol version ${version} is not supported (this build speaks ${PROTOCOL_VERSION})`)
  }
  const result = messageHeaderSchema.safeParse(value)
  if (!result.success) {
    throw new MalformedMessageError('Message header failed validation', {
      details: { issues: result.error.issues.slice(0, 5).map((i) => `${i.path.join('.')}: ${i.message}`) }
    })
  }
  return result.data as MessageHeader
}

/**
 * Splits tensors into frames of at most `maxFrameBytes` and returns their descriptors.
 * Frames are views over the tensors' memory: nothing is copied.
 */
export function encodeTensors (tensors: readonly NamedTensor[], maxFrameBytes: number = DEFAULT_WIRE_LIMITS.maxFrameBytes): { descriptors: TensorDescriptor[], frames: Uint8Array[] } {
  // Keep frame boundaries on whole floats so every frame is a valid Float32Array view.
  const step = Math.max(4, maxFrameBytes - (maxFrameBytes % 4))
  const descriptors: TensorDescriptor[] = []
  const frames: Uint8Array[] = []
  for (const t of tensors) {
    const bytes = bytesOf(t.data)
    let count = 0
    for (let off = 0; off < bytes.byteLength; off += step) {
      frames.push(bytes.subarray(off, Math.min(off + step, bytes.byteLength)))
      count++
    }
    descriptors.push({ name: t.name, shape: [...t.shape], dtype: t.dtype, frames: count })
  }
  return { descriptors, frames }
}

/**
 * Checks frame sizes and counts of a received message against its header and `limits`.
 * Throws {@link MessageTooLargeError} or {@link MalformedMessageError}.
 */
export function checkFrames (header: MessageHeader, frames: readonly Uint8Array[], limits: WireLimits = DEFAULT_WIRE_LIMITS): void {
  const descriptors = header.tensors ?? []
  let expectedFrames = 0
  for (const d of descriptors) {
    const bytes = shapeSize(d.shape) * 4
    if (bytes > limits.maxMessageBytes) throw new MessageTooLargeError(`Tensor "${d.name}" of ${bytes} bytes exceeds the message cap`)
    const minFrames = bytes === 0 ? 0 : Math.ceil(bytes / limits.maxFrameBytes)
    if (d.frames < minFrames) throw new MalformedMessageError(`Tensor "${d.name}" declares ${d.frames} frames, needs at least ${minFrames}`)
    expectedFrames += d.frames
  }
  if (frames.length !== expectedFrames) {
    throw new MalformedMessageError(`Header describes ${expectedFrames} tensor frames, message has ${frames.length}`)
  }
  let frameIndex = 0
  for (const d of descriptors) {
    let total = 0
    for (let k = 0; k < d.frames; k++) {
      const f = frames[frameIndex++] as Uint8Array
      if (f.byteLength > limits.maxFrameBytes) throw new MessageTooLargeError(`Frame of ${f.byteLength} bytes exceeds the cap of ${limits.maxFrameBytes}`)
      if (f.byteLength % 4 !== 0) throw new MalformedMessageError(`Frame of tensor "${d.name}" is not a whole number of float32 values`)
      total += f.byteLength
    }
    if (total !== shapeSize(d.shape) * 4) throw new MalformedMessageError(`Tensor "${d.name}" carries ${total} bytes, shape needs ${shapeSize(d.shape) * 4}`)
  }
}

/** A `Float32Array` over a frame: a view when the frame is 4-byte aligned, a copy otherwise. */
export function floatView (frame: Uint8Array): Float32Array {
  if (frame.byteOffset % 4 === 0) return new Float32Array(frame.buffer, frame.byteOffset, frame.byteLength / 4)
  return new Float32Array(frame.slice().buffer)
}

/**
 * Turns the frames of an envelope (already checked by {@link checkFrames}) back into tensors.
 * Single-frame tensors are views over the received frame; multi-frame tensors are joined into
 * `out(name, length)` when given (a reused buffer) or into a new array.
 */
export function decodeTensors (envelope: Pick<Envelope, 'header' | 'frames'>, out?: (name: string, length: number) => Float32Array | undefined): NamedTensor[] {
  const tensors: NamedTensor[] = []
  let frameIndex = 0
  for (const d of envelope.header.tensors ?? []) {
    const length = shapeSize(d.shape)
    let data: Float32Array
    if (d.frames === 1) {
      data = floatView(envelope.frames[frameIndex] as Uint8Array)
    } else {
      data = out?.(d.name, length) ?? new Float32Array(length)
      if (data.length !== length) throw new MalformedMessageError(`Reused buffer for "${d.name}" has ${data.length} elements, needs ${length}`)
      const target = bytesOf(data)
      let off = 0
      for (let k = 0; k < d.frames; k++) {
        const f = envelope.frames[frameIndex + k] as Uint8Array
        target.set(f, off)
        off += f.byteLength
      }
    }
    frameIndex += d.frames
    tensors.push({ name: d.name, shape: d.shape, dtype: d.dtype, data })
  }
  return tensors
}
