import {
  ClosedError, InvalidParametersError, componentLogger, raceSignal, systemClock,
  type AbortOptions, type Clock, type Logger, type PinnedState
} from '@phalanx/core'
import { DEFAULT_CHUNK_BYTES, layoutOf, planShard, writeShardPreamble, type ShardEntry } from './format.js'
import { createChecksumWorker, type ChecksumWorker } from './checksum-worker.js'
import type { CheckpointInfo, CheckpointStore, PortableStore, ShardImage } from './store.js'

/** Where the L0 tier of a snapshot goes (the snapshot holder client implements it). */
export interface SnapshotSink {
  /** Stores a staged snapshot image; resolves once it is committed on the other side. */
  put(image: ShardImage, options?: AbortOptions): Promise<void>
}

/** Tunables of {@link createSnapshotter}. */
export interface SnapshotterInit {
  /**
   * Every Nth completed snapshot also goes to the L2 store (0: never).
   * @default 10
   */
  l2Every?: number
  /**
   * Size of a checksummed chunk, bytes (at most 8 MiB so a chunk fits a wire frame).
   * @default 4 MiB
   */
  chunkBytes?: number
  /**
   * Largest overhead, as a fraction of wall time, the snapshot drains may cost: a capture arriving
   * sooner than `lastDrainMs / overheadBudget` after the previous one is skipped (CheckFreq's
   * adaptive interval). Undefined: only skip while a drain is in flight.
   */
  overheadBudget?: number
  /**
   * Compute checksums in a worker thread (staging lives in a SharedArrayBuffer).
   * @default true
   */
  checksumWorker?: boolean
  /**
   * Write and commit L2 checkpoints in the checksum worker thread: the data file write and fsync,
   * the rank record, manifest, renames, directory fsyncs, `LATEST` and pruning all run there, by the
   * store's own code on a store opened from {@link CheckpointStore.portable}; the staging image is
   * shared with the thread, not copied, and only the checkpoint's summary comes back. Used when the
   * store can be opened there (a plain local or shared directory, no injected clock) and
   * `checksumWorker` is on; otherwise the store's methods run on this thread.
   * @default true
   */
  l2Thread?: boolean
  /**
   * Longest stretch, ms, the drain copies on the trainer's thread before it yields to the event
   * loop. When the pinned state has `readRange` (the tf bridge and `pinStateDict` do), tensors are
   * copied in pieces sized from the measured copy rate to fit what is left of the slice, so a slice
   * stays within this budget whatever the tensor sizes; without it a whole tensor is one piece.
   * Yielding per tensor instead made a 165-tensor model need ~170 event-loop turns, so a busy
   * trainer (one turn per step) almost never finished a snapshot.
   * @default 1
   */
  sliceMs?: number
}

/** Collaborators of {@link createSnapshotter}. */
export interface SnapshotterComponents {
  /** L0 sink: the snapshot holder of this host. */
  holder?: SnapshotSink
  /** L2 sink: a durable store; this process commits its snapshots as single-rank checkpoints. */
  store?: CheckpointStore
  /** @default silent */
  logger?: Logger
  /** @default the system clock */
  clock?: Clock
}

/** What {@link Snapshotter.capture} decided. */
export interface CaptureResult {
  /** False when the snapshot was skipped (the pinned state is released at once). */
  readonly accepted: boolean
  readonly step: number
  /** Why it was skipped: a drain still in flight, or the overhead budget. */
  readonly reason?: 'busy' | 'budget'
}

/** Counters of a {@link Snapshotter}. */
export interface SnapshotterStats {
  captured: number
  skipped: number
  completed: number
  failed: number
  /** Snapshots committed by the L0 holder. */
  l0: number
  /** Snapshots committed to the L2 store. */
  l2: number
  /** Of {@link l2}, those written and committed in the worker thread (see `SnapshotterInit.l2Thread`). */
  l2InThread: number
  /** Step of the last snapshot that reached at least one sink. */
  lastStep: number | undefined
  /** Wall time of the last drain, ms. */
  lastDrainMs: number
  /** Longest slice of copies of any drain on the caller's thread, ms. */
  maxSliceMs: number
  /** Longest slice of copies of the last drain, ms. */
  lastMaxSliceMs: number
  /**
   * Longest synchronous stretch of any drain on the caller's thread, ms: a slice of copies, or the
   * drain's own bookkeeping together with the synchronous part of a call into a sink (the holder
   * client's request encoding and ZeroMQ send, the store's file calls) or the checksum thread.
   * Work a sink does later in callbacks of its own (e.g. decoding a reply) is not included.
   */
  maxSyncMs: number
  /** {@link maxSyncMs} of the last drain, ms. */
  lastMaxSyncMs: number
  /** Total time drains ran on the caller's thread (copies, bookkeeping, synchronous parts of sink calls), ms. */
  mainThreadMs: number
  /** Total time spent inside {@link Snapshotter.capture}, ms. */
  captureMs: number
}

/** Result of one drained snapshot. */
export interface SnapshotOutcome {
  readonly step: number
  readonly l0: boolean
  readonly l2?: CheckpointInfo
}

/**
 * Lazy asynchronous snapshots. {@link capture} takes a pinned state and returns at once; a background
 * drain copies it, in bounded pieces, into a preallocated double-buffered staging pool (yielding to
 * the event loop every `sliceMs`), checksums it in a worker thread, and hands it to the L0 holder and,
 * every `l2Every`th time, to the L2 store, whose write and commit run in that same worker thread
 * (`l2Thread`). A capture that arrives while a drain is in flight is skipped and counted: the trainer
 * never waits.
 */
export interface Snapshotter extends AsyncDisposable {
  /** Starts the checksum thread ahead of the first capture. Idempotent. */
  start(options?: AbortOptions): void
  /** Accepts or skips a snapshot of `pinned`. Never blocks on I/O. */
  capture(pinned: PinnedState): CaptureResult
  /** Resolves when the drain in flight (if any) finished, with its outcome. */
  flush(options?: AbortOptions): Promise<SnapshotOutcome | undefined>
  stats(): SnapshotterStats
  /**
   * Aborts the drain in flight, releases its pinned state and stops the thread, after an L2 commit
   * running there has stopped at its next abort check (the previous checkpoint stays intact).
   * Idempotent.
   */
  stop(options?: AbortOptions): Promise<void>
}

const MAX_CHUNK = 8 * 1024 * 1024
/** Smallest piece a range copy takes, floats (64 KiB: tens of microseconds of memcpy), so a drain always progresses. */
const MIN_PIECE = 16 * 1024
/** Largest piece, floats (16 MiB), whatever the measured rate. */
const MAX_PIECE = 4 * 1024 * 1024

/** Creates a {@link Snapshotter}. */
export function createSnapshotter (init: SnapshotterInit = {}, components: SnapshotterComponents = {}): Snapshotter {
  const l2Every = init.l2Every ?? 10
  const chunkBytes = init.chunkBytes ?? DEFAULT_CHUNK_BYTES
  const sliceMs = init.sliceMs ?? 1
  if (!(sliceMs >= 0)) throw new InvalidParametersError('sliceMs must be a non-negative number')
  if (!Number.isInteger(chunkBytes) || chunkBytes < 64 || chunkBytes % 64 !== 0 || chunkBytes > MAX_CHUNK) throw new InvalidParametersError('chunkBytes must be a multiple of 64 of at most 8 MiB')
  if (init.overheadBudget !== undefined && !(init.overheadBudget > 0 && init.overheadBudget <= 1)) throw new InvalidParametersError('overheadBudget must be in (0, 1]')
  const useWorker = init.checksumWorker ?? true
  const l2Thread = useWorker && (init.l2Thread ?? true)
  // Asked once: the store and its storage do not change. Null: not asked yet.
  let portable: PortableStore | undefined | null = null
  const log = componentLogger(components.logger, 'snapshotter')
  const clock = components.clock ?? systemClock()
  const now = (): number => performance.now()

  let crcWorker: ChecksumWorker | undefined
  // Two staging images: the one a sink may still be reading (zero-copy sends) and the one being filled.
  const staging: Array<Uint8Array | undefined> = [undefined, undefined]
  let nextStaging = 0
  let inflight: Promise<SnapshotOutcome | undefined> | undefined
  let controller: AbortController | undefined
  let lastAcceptedAt = Number.NEGATIVE_INFINITY
  let completedCount = 0
  let stopped = false
  // Copy rate out of pinned storage (floats per ms), measured by every piece and kept across drains
  // so the next drain sizes its first pieces right. Starts at a conservative 1 GB/s.
  let floatsPerMs = 250_000
  const stats: SnapshotterStats = { captured: 0, skipped: 0, completed: 0, failed: 0, l0: 0, l2: 0, l2InThread: 0, lastStep: undefined, lastDrainMs: 0, maxSliceMs: 0, lastMaxSliceMs: 0, maxSyncMs: 0, lastMaxSyncMs: 0, mainThreadMs: 0, captureMs: 0 }

  const acquire = async (bytes: number, signal: AbortSignal): Promise<Uint8Array> => {
    const i = nextStaging
    nextStaging = 1 - nextStaging
    let buf = staging[i]
    if (buf === undefined || buf.byteLength < bytes) {
      // Grow with headroom so a slightly larger state does not reallocate every time.
      const size = Math.ceil((bytes * 1.125) / 4096) * 4096
      buf = new Uint8Array(useWorker ? new SharedArrayBuffer(size) : new ArrayBuffer(size))
      staging[i] = buf
      crcWorker ??= createChecksumWorker()
      await crcWorker.touch(buf, { signal })
    }
    return buf.subarray(0, bytes)
  }

  const yieldLoop = async (): Promise<void> => { await new Promise<void>((resolve) => { setImmediate(resolve) }) }

  const drain = async (pinned: PinnedState, signal: AbortSignal): Promise<SnapshotOutcome | undefined> => {
    // capture() starts the drain; nothing of it may run in the trainer's turn that called capture.
    await yieldLoop()
    const started = now()
    let sliceStart = started
    stats.lastMaxSliceMs = 0
    stats.lastMaxSyncMs = 0
    const sync = (ms: number): void => {
      stats.mainThreadMs += ms
      if (ms > stats.maxSyncMs) stats.maxSyncMs = ms
      if (ms > stats.lastMaxSyncMs) stats.lastMaxSyncMs = ms
    }
    const slice = (): void => {
      const ms = now() - sliceStart
      sync(ms)
      if (ms > stats.maxSliceMs) stats.maxSliceMs = ms
      if (ms > stats.lastMaxSliceMs) stats.lastMaxSliceMs = ms
    }
    // Every call that leaves the trainer's thread is timed up to the promise it returns: that part
    // (request encoding, the ZeroMQ send, fs request setup) runs synchronously in this turn.
    let segStart = started
    const outside = async <T>(call: () => Promise<T>): Promise<T> => {
      const p = call()
      sync(now() - segStart)
      try {
        return await p
      } finally {
        segStart = now()
      }
    }
    const step = pinned.meta.step
    try {
      const layout = layoutOf(pinned.specs)
      const plan = planShard({ rank: 0, worldSize: 1, meta: pinned.meta, layout, pieces: layout.map((l) => ({ name: l.name, tensorOffset: 0, length: l.shape.reduce((a, b) => a * b, 1) })) })
      slice()
      const image = await acquire(plan.totalBytes, signal)
      if (signal.aborted) return undefined
      sliceStart = now()
      writeShardPreamble(image, plan)
      slice()
      await yieldLoop()
      if (signal.aborted) return undefined
      sliceStart = now()
      const readRange = pinned.readRange
      for (let i = 0; i < plan.header.entries.length; i++) {
        const e = plan.header.entries[i] as ShardEntry
        const at = plan.dataStart + e.offset
        const dst = new Float32Array(image.buffer, image.byteOffset + at, e.length)
        if (readRange === undefined) {
          // Whole tensors only: a large one overruns the slice by its own copy time.
          if (now() - sliceStart >= sliceMs) {
            slice()
            await yieldLoop()
            if (signal.aborted) return undefined
            sliceStart = now()
          }
          await pinned.read(i, dst)
        } else {
          for (let off = 0; off < e.length;) {
            let room = sliceMs - (now() - sliceStart)
            // Not even the smallest piece fits in what is left of this slice: give the loop a turn.
            if (room < MIN_PIECE / floatsPerMs) {
              slice()
              await yieldLoop()
              if (signal.aborted) return undefined
              sliceStart = now()
              room = sliceMs
            }
            // Half of what the room holds at the measured rate: margin for a slower piece.
            const n = Math.min(e.length - off, MAX_PIECE, Math.max(MIN_PIECE, Math.floor((room * floatsPerMs) / 2)))
            const t0 = now()
            await readRange.call(pinned, i, off, dst.subarray(off, off + n))
            const ms = now() - t0
            if (n >= MIN_PIECE && ms > 0) {
              // A slower piece lowers the estimate at once; a faster one raises it gradually.
              const rate = n / ms
              floatsPerMs = rate < floatsPerMs ? rate : floatsPerMs * 0.8 + rate * 0.2
            }
            off += n
          }
        }
        const next = plan.header.entries[i + 1]
        // Zero the alignment padding: staging is reused, stale bytes would make files differ run to run.
        image.fill(0, at + e.length * 4, next === undefined ? plan.totalBytes : plan.dataStart + next.offset)
      }
      slice()
      segStart = now()
      pinned.release()
      const crc = crcWorker ??= createChecksumWorker()
      const crcs = await outside(async () => await crc.crcs(image, chunkBytes, { signal }))
      const shard: ShardImage = { header: plan.header, dataStart: plan.dataStart, bytes: image, chunkBytes, crcs }
      let l0 = false
      let l2: CheckpointInfo | undefined
      const holder = components.holder
      if (holder !== undefined) {
        try {
          await outside(async () => { await holder.put(shard, { signal }) })
          l0 = true
          stats.l0++
        } catch (err) {
          if (signal.aborted) return undefined
          log.error({ step, err: { name: (err as Error).name, message: (err as Error).message } }, 'L0 snapshot to the holder failed')
        }
      }
      const store = components.store
      if (store !== undefined && l2Every > 0 && (completedCount + 1) % l2Every === 0) {
        try {
          if (portable === null) portable = l2Thread ? store.portable?.() : undefined
          const there = portable
          if (there !== undefined && image.buffer instanceof SharedArrayBuffer) {
            // The file system calls of a commit and their completions stay off this thread's loop.
            const info = await outside(async () => await crc.commitL2(there, step, shard, { signal }))
            l2 = info
            stats.l2InThread++
            log.info({ id: info.id, step, bytes: info.bytes, worldSize: info.worldSize }, 'checkpoint committed by the writer thread')
          } else {
            const record = await outside(async () => await store.writeShardImage(step, shard, { signal }))
            // Commit from the record just written: no re-read and re-validation of it from disk.
            l2 = await outside(async () => await store.commit(step, { worldSize: 1, records: [record], signal }))
          }
          stats.l2++
        } catch (err) {
          if (signal.aborted) return undefined
          log.error({ step, err: { name: (err as Error).name, message: (err as Error).message } }, 'L2 checkpoint failed')
        }
      }
      completedCount++
      sync(now() - segStart)
      stats.lastDrainMs = now() - started
      if (l0 || l2 !== undefined) { stats.completed++; stats.lastStep = step } else stats.failed++
      log.debug({ step, l0, l2: l2?.id, ms: stats.lastDrainMs }, 'snapshot drained')
      return l2 === undefined ? { step, l0 } : { step, l0, l2 }
    } catch (err) {
      if (signal.aborted) return undefined
      stats.failed++
      log.error({ step, err: { name: (err as Error).name, message: (err as Error).message } }, 'snapshot drain failed')
      return undefined
    } finally {
      pinned.release()
    }
  }

  const api: Snapshotter = {
    start () {
      if (stopped) throw new ClosedError('Snapshotter is stopped')
      if (useWorker) crcWorker ??= createChecksumWorker()
    },
    capture (pinned) {
      const t0 = now()
      try {
        const step = pinned.meta.step
        if (stopped) {
          pinned.release()
          throw new ClosedError('Snapshotter is stopped')
        }
        if (inflight !== undefined) {
          stats.skipped++
          pinned.release()
          return { accepted: false, step, reason: 'busy' }
        }
        const at = clock.now()
        if (init.overheadBudget !== undefined && at - lastAcceptedAt < stats.lastDrainMs / init.overheadBudget) {
          stats.skipped++
          pinned.release()
          return { accepted: false, step, reason: 'budget' }
        }
        lastAcceptedAt = at
        stats.captured++
        const c = new AbortController()
        controller = c
        const p = drain(pinned, c.signal).finally(() => { if (inflight === p) { inflight = undefined; controller = undefined } })
        inflight = p
        return { accepted: true, step }
      } finally {
        stats.captureMs += now() - t0
      }
    },
    async flush (options = {}) {
      const p = inflight
      if (p === undefined) return undefined
      return await raceSignal(p, options.signal)
    },
    stats: () => ({ ...stats }),
    async stop (options = {}) {
      if (stopped) return
      stopped = true
      controller?.abort()
      await inflight
      await crcWorker?.close(options)
      staging[0] = undefined
      staging[1] = undefined
    },
    async [Symbol.asyncDispose] () { await api.stop() }
  }
  return api
}
