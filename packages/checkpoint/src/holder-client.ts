import {
  CorruptCheckpointError, InvalidParametersError, NotFoundError, componentLogger, throwIfAborted,
  type AbortOptions, type Endpoint, type Logger, type PeerId, type StateDict
} from '@phalanx/core'
import { verifyChunks } from './format.js'
import { HOLDER_MESSAGES, frameBytes, type HeldSnapshot } from './holder.js'
import { stateFromShardFile, type ShardImage } from './store.js'
import type { SnapshotSink } from './snapshotter.js'

/** Tunables of {@link createHolderClient}. */
export interface HolderClientInit {
  /** Peer id of the holder. @default 'holder' */
  holder?: PeerId
  /** Address of the holder; when given the client connects the endpoint to it. */
  address?: string
  /** Whose snapshots these are: stable across trainer restarts (e.g. `rank-3`). */
  owner: string
  /**
   * Chunk messages in flight during a transfer or a restore.
   * @default 2
   */
  window?: number
  /**
   * Reply deadline per request, ms.
   * @default 30000
   */
  requestTimeoutMs?: number
}

/** Collaborators of {@link createHolderClient}. */
export interface HolderClientComponents {
  endpoint: Endpoint
  /** @default silent */
  logger?: Logger
}

/** A restored L0 snapshot. */
export interface HolderRestore {
  readonly held: HeldSnapshot
  readonly state: StateDict
}

/** The trainer's side of the holder protocol: an L0 {@link SnapshotSink} that also restores. */
export interface HolderClient extends SnapshotSink {
  /** The newest snapshot the holder committed for this owner, or undefined. */
  latest(options?: AbortOptions): Promise<HeldSnapshot | undefined>
  /** Reads the newest committed snapshot's file, every chunk verified. Throws `NotFoundError` when none. */
  readImage(options?: AbortOptions): Promise<{ held: HeldSnapshot, bytes: Uint8Array }>
  /** Restores the newest committed snapshot. Throws `NotFoundError` when none. */
  restore(options?: AbortOptions): Promise<HolderRestore>
}

const FRAME_BYTES = 8 * 1024 * 1024

/** Creates a {@link HolderClient}. */
export function createHolderClient (init: HolderClientInit, components: HolderClientComponents): HolderClient {
  const holder = init.holder ?? 'holder'
  const { endpoint } = components
  const owner = init.owner
  const window = init.window ?? 2
  const timeoutMs = init.requestTimeoutMs ?? 30_000
  const log = componentLogger(components.logger, 'holder-client')
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(owner)) throw new InvalidParametersError(`Invalid owner "${owner}"`)
  if (init.address !== undefined) endpoint.connect(holder, init.address)

  const latest = async (options: AbortOptions = {}): Promise<HeldSnapshot | undefined> => {
    try {
      const reply = await endpoint.request(holder, { type: HOLDER_MESSAGES.latest, body: { owner } }, { ...options, timeoutMs })
      return reply.header.body as HeldSnapshot
    } catch (err) {
      if ((err as Error).name === NotFoundError.name) return undefined
      throw err
    }
  }

  const readImage = async (options: AbortOptions = {}): Promise<{ held: HeldSnapshot, bytes: Uint8Array }> => {
    const held = await latest(options)
    if (held === undefined) throw new NotFoundError(`The holder has no snapshot of ${owner}`, { details: { owner } })
    const bytes = new Uint8Array(held.bytes)
    const per = Math.max(held.chunkBytes, Math.floor(FRAME_BYTES / held.chunkBytes) * held.chunkBytes)
    const offsets: number[] = []
    for (let off = 0; off < held.bytes; off += per) offsets.push(off)
    let next = 0
    // A window of reads in flight keeps the holder's disk reads, the transfer and our CRC checks overlapping.
    const reader = async (): Promise<void> => {
      while (next < offsets.length) {
        throwIfAborted(options.signal)
        const off = offsets[next++] as number
        const length = Math.min(per, held.bytes - off)
        const reply = await endpoint.request(holder, { type: HOLDER_MESSAGES.read, body: { owner, step: held.step, offset: off, length } }, { ...options, timeoutMs })
        const data = frameBytes(reply)
        if (data.byteLength !== length) throw new CorruptCheckpointError(`Holder returned ${data.byteLength} of ${length} bytes`)
        verifyChunks(`holder:${owner}/step-${held.step}`, data, off, held.chunkBytes, held.crcs)
        bytes.set(data, off)
      }
    }
    await Promise.all(Array.from({ length: Math.min(window, offsets.length) }, reader))
    return { held, bytes }
  }

  return {
    async put (image: ShardImage, options: AbortOptions = {}) {
      if (image.chunkBytes > FRAME_BYTES) throw new InvalidParametersError('Chunks larger than a frame cannot be sent to the holder')
      const total = image.bytes.byteLength
      const prepared = await endpoint.request(holder, {
        type: HOLDER_MESSAGES.prepare,
        step: image.header.meta.step,
        body: { owner, step: image.header.meta.step, bytes: total, chunkBytes: image.chunkBytes, crcs: [...image.crcs] }
      }, { ...options, timeoutMs })
      const transfer = (prepared.header.body as { transfer: number }).transfer
      const per = Math.floor(FRAME_BYTES / image.chunkBytes) * image.chunkBytes
      const offsets: number[] = []
      for (let off = 0; off < total; off += per) offsets.push(off)
      let next = 0
      const worker = async (): Promise<void> => {
        while (next < offsets.length) {
          const off = offsets[next++] as number
          const len = Math.min(per, total - off)
          const data = new Float32Array(image.bytes.buffer, image.bytes.byteOffset + off, len / 4)
          await endpoint.request(holder, { type: HOLDER_MESSAGES.chunk, body: { owner, transfer, offset: off }, tensors: [{ name: 'bytes', shape: [data.length], dtype: 'float32', data }] }, { ...options, timeoutMs })
        }
      }
      await Promise.all(Array.from({ length: Math.min(window, offsets.length) }, worker))
      await endpoint.request(holder, { type: HOLDER_MESSAGES.commit, body: { owner, transfer } }, { ...options, timeoutMs })
      log.debug({ owner, step: image.header.meta.step, bytes: total }, 'snapshot handed to the holder')
    },
    latest,
    readImage,
    async restore (options = {}) {
      const { held, bytes } = await readImage(options)
      return { held, state: stateFromShardFile(bytes, `holder:${owner}`) }
    }
  }
}
