import { Worker } from 'node:worker_threads'
import { ClosedError, InvalidParametersError, raceSignal, type AbortOptions } from '@phalanx/core'
import { chunkCrcs } from './format.js'

/** Computes chunk checksums of staged snapshots off the caller's thread. */
export interface ChecksumWorker extends AsyncDisposable {
  /**
   * Per-chunk CRC-32C of `bytes`. When `bytes` lives in a SharedArrayBuffer the work runs in a worker
   * thread (no copy); otherwise it runs inline.
   */
  crcs(bytes: Uint8Array, chunkBytes: number, options?: AbortOptions): Promise<number[]>
  /** Faults in the pages of fresh SharedArrayBuffer memory from the worker thread (zeroing it). */
  touch(bytes: Uint8Array, options?: AbortOptions): Promise<void>
  /** Terminates the thread; idempotent. Pending calls reject with `ClosedError`. */
  close(): Promise<void>
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

/** Starts a {@link ChecksumWorker}; the thread is spawned on first use and unref'd while idle. */
export function createChecksumWorker (): ChecksumWorker {
  let worker: Worker | undefined
  let closed = false
  let nextId = 0
  const pending = new Map<number, { resolve: (crcs: number[]) => void, reject: (err: Error) => void }>()

  const failAll = (err: Error): void => {
    for (const p of pending.values()) p.reject(err)
    pending.clear()
    worker = undefined
  }

  const ensure = (): Worker => {
    if (worker !== undefined) return worker
    const w = spawn()
    w.unref()
    w.on('message', (msg: { id: number, crcs?: number[], error?: string }) => {
      const p = pending.get(msg.id)
      if (p === undefined) return
      pending.delete(msg.id)
      if (pending.size === 0) w.unref()
      if (msg.crcs !== undefined) p.resolve(msg.crcs)
      else p.reject(new InvalidParametersError(`Checksum worker failed: ${msg.error ?? 'unknown'}`))
    })
    w.on('error', (err) => { failAll(err) })
    w.on('exit', (code) => { if (worker === w) failAll(new ClosedError(`Checksum worker exited with code ${code}`)) })
    worker = w
    return w
  }

  const run = async (bytes: Uint8Array, chunkBytes: number, touch: boolean, options: AbortOptions): Promise<number[]> => {
    const w = ensure()
    const id = nextId++
    const result = new Promise<number[]>((resolve, reject) => { pending.set(id, { resolve, reject }) })
    w.ref()
    w.postMessage({ id, buffer: bytes.buffer, byteOffset: bytes.byteOffset, byteLength: bytes.byteLength, chunkBytes, touch })
    try {
      return await raceSignal(result, options.signal)
    } finally {
      pending.delete(id)
      if (pending.size === 0) worker?.unref()
    }
  }

  const api: ChecksumWorker = {
    async crcs (bytes, chunkBytes, options = {}) {
      if (closed) throw new ClosedError('Checksum worker is closed')
      if (!(bytes.buffer instanceof SharedArrayBuffer)) return chunkCrcs(bytes, chunkBytes)
      return await run(bytes, chunkBytes, false, options)
    },
    async touch (bytes, options = {}) {
      if (closed) throw new ClosedError('Checksum worker is closed')
      if (bytes.buffer instanceof SharedArrayBuffer) await run(bytes, 1, true, options)
    },
    async close () {
      if (closed) return
      closed = true
      const w = worker
      failAll(new ClosedError('Checksum worker closed'))
      if (w !== undefined) await w.terminate()
    },
    async [Symbol.asyncDispose] () { await api.close() }
  }
  return api
}
