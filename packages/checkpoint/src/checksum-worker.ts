import { Worker } from 'node:worker_threads'
import { ClosedError, InvalidParametersError, fromWire, raceSignal, type AbortOptions } from '@phalanx/core'
import { chunkCrcs } from './format.js'
import type { CheckpointInfo, PortableStore, ShardImage } from './store.js'

/**
 * The snapshotter's helper thread: chunk checksums of staged snapshots and, for stores that can be
 * opened from another thread, the whole L2 write and commit, off the caller's thread.
 */
export interface ChecksumWorker extends AsyncDisposable {
  /**
   * Per-chunk CRC-32C of `bytes`. When `bytes` lives in a SharedArrayBuffer the work runs in a worker
   * thread (no copy); otherwise it runs inline.
   */
  crcs(bytes: Uint8Array, chunkBytes: number, options?: AbortOptions): Promise<number[]>
  /** Faults in the pages of fresh SharedArrayBuffer memory from the worker thread (zeroing it). */
  touch(bytes: Uint8Array, options?: AbortOptions): Promise<void>
  /**
   * Writes `image` as the single-rank L2 checkpoint of `step` and commits it, in the worker thread,
   * with the store's own code on a store opened from `store` ({@link CheckpointStore.portable}):
   * data file write and fsync, rank record, manifest, renames and directory fsyncs, `LATEST`,
   * pruning. `image.bytes` must live in a SharedArrayBuffer (it is shared, not copied) and must not
   * change until this settles; only the checkpoint's summary comes back. On abort the caller's
   * promise rejects at once and the thread stops at the store's next abort check (a crash at any
   * point of a commit leaves the previous checkpoint intact, so stopping part-way is safe).
   */
  commitL2(store: PortableStore, step: number, image: ShardImage, options?: AbortOptions): Promise<CheckpointInfo>
  /**
   * Terminates the thread; idempotent. Pending calls reject with `ClosedError`. L2 commits still
   * running in the thread are aborted first and awaited (each stops within one write or fsync), so
   * nothing of this thread touches the checkpoint directory once this resolves. Aborting that wait
   * (`options.signal`) terminates the thread at once instead, as a crash would.
   */
  close(options?: AbortOptions): Promise<void>
}

function spawn (): Worker {
  const here = import.meta.url
  if (here.endsWith('.ts')) {
    // Running from sources (tests, tsx): the worker needs the TypeScript loader registered first.
    // (Resolved from the working directory: only source runs inside this repository take this path.)
    const entry = new URL('./crc-worker.ts', here).href
    return new Worker(`import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(entry)}) })`, {
      eval: true,
      // Only resolution flags: workers reject V8 flags such as --expose-gc that a parent may run with.
      execArgv: ['--conditions=@phalanx/source']
    })
  }
  return new Worker(new URL('./crc-worker.js', here))
}

/** A reply of the thread: `crcs` for checksum jobs, `info` for L2 commits, `error` in wire form. */
interface Reply { id: number, crcs?: number[], info?: CheckpointInfo, error?: unknown }

interface Pending { resolve: (value: unknown) => void, reject: (err: Error) => void }

/** Starts a {@link ChecksumWorker}; the thread is spawned on first use and unref'd while idle. */
export function createChecksumWorker (): ChecksumWorker {
  let worker: Worker | undefined
  let closed = false
  let nextId = 0
  const pending = new Map<number, Pending>()
  // L2 jobs the thread is still running, whether or not their caller still waits: close() waits
  // for them so no write of this thread outlives it.
  const running = new Map<number, { abort: () => void, settled: Promise<void>, settle: () => void }>()

  const failAll = (err: Error): void => {
    for (const p of pending.values()) p.reject(err)
    pending.clear()
    for (const r of running.values()) r.settle()
    running.clear()
    worker = undefined
  }

  const ensure = (): Worker => {
    if (worker !== undefined) return worker
    const w = spawn()
    w.unref()
    w.on('message', (msg: Reply) => {
      const r = running.get(msg.id)
      if (r !== undefined) { running.delete(msg.id); r.settle() }
      const p = pending.get(msg.id)
      if (p !== undefined) {
        pending.delete(msg.id)
        if (msg.error !== undefined) p.reject(typeof msg.error === 'string' ? new InvalidParametersError(`Checksum worker failed: ${msg.error}`) : fromWire(msg.error))
        else p.resolve(msg.crcs ?? msg.info)
      }
      if (pending.size === 0 && running.size === 0) w.unref()
    })
    w.on('error', (err) => { failAll(err) })
    w.on('exit', (code) => { if (worker === w) failAll(new ClosedError(`Checksum worker exited with code ${code}`)) })
    worker = w
    return w
  }

  const call = async <T>(id: number, job: Record<string, unknown>, options: AbortOptions, onAbort?: () => void): Promise<T> => {
    const w = ensure()
    const result = new Promise<unknown>((resolve, reject) => { pending.set(id, { resolve, reject }) })
    w.ref()
    w.postMessage({ ...job, id })
    try {
      return await raceSignal(result, options.signal) as T
    } catch (err) {
      if (options.signal?.aborted === true) onAbort?.()
      throw err
    } finally {
      pending.delete(id)
      if (pending.size === 0 && running.size === 0) worker?.unref()
    }
  }

  const view = (bytes: Uint8Array): Record<string, unknown> => ({ buffer: bytes.buffer, byteOffset: bytes.byteOffset, byteLength: bytes.byteLength })

  const api: ChecksumWorker = {
    async crcs (bytes, chunkBytes, options = {}) {
      if (closed) throw new ClosedError('Checksum worker is closed')
      if (!(bytes.buffer instanceof SharedArrayBuffer)) return chunkCrcs(bytes, chunkBytes)
      return await call<number[]>(nextId++, { kind: 'crc', ...view(bytes), chunkBytes }, options)
    },
    async touch (bytes, options = {}) {
      if (closed) throw new ClosedError('Checksum worker is closed')
      if (bytes.buffer instanceof SharedArrayBuffer) await call(nextId++, { kind: 'touch', ...view(bytes) }, options)
    },
    async commitL2 (store, step, image, options = {}) {
      if (closed) throw new ClosedError('Checksum worker is closed')
      if (!(image.bytes.buffer instanceof SharedArrayBuffer)) throw new InvalidParametersError('commitL2 needs an image in a SharedArrayBuffer')
      if (image.crcs.length !== Math.ceil(image.bytes.byteLength / image.chunkBytes)) throw new InvalidParametersError('Image checksums do not match its size')
      const id = nextId++
      let settle = (): void => {}
      const settled = new Promise<void>((resolve) => { settle = resolve })
      running.set(id, { abort: () => { worker?.postMessage({ kind: 'abort', id }) }, settled, settle })
      return await call<CheckpointInfo>(id, {
        kind: 'l2', ...view(image.bytes), store, step, header: image.header, dataStart: image.dataStart, chunkBytes: image.chunkBytes, crcs: image.crcs
      }, options, () => { running.get(id)?.abort() })
    },
    async close (options = {}) {
      if (closed) return
      closed = true
      const w = worker
      const inThread = [...running.values()]
      for (const r of inThread) r.abort()
      try {
        await raceSignal(Promise.all(inThread.map(async (r) => { await r.settled })), options.signal)
      } finally {
        // Also when the wait is aborted: the thread goes, whatever it was doing.
        failAll(new ClosedError('Checksum worker closed'))
        if (w !== undefined) await w.terminate()
      }
    },
    async [Symbol.asyncDispose] () { await api.close() }
  }
  return api
}
