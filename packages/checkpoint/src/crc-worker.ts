/**
 * Worker-thread entry of {@link createChecksumWorker}: computes per-chunk CRC-32C over a range of a
 * SharedArrayBuffer, faults in fresh staging pages, and writes and commits L2 checkpoints from
 * staged images, so the trainer's event loop spends no CPU on checksums and sees neither the file
 * system calls of a commit nor their completions.
 *
 * @module
 */
import { parentPort } from 'node:worker_threads'
import { crc32c, toWire } from '@phalanx/core'
import type { ShardHeader } from './format.js'
import type { CheckpointStore, PortableStore } from './store.js'

interface Span { id: number, buffer: SharedArrayBuffer, byteOffset: number, byteLength: number }
type Job =
  | (Span & { kind: 'crc', chunkBytes: number })
  | (Span & { kind: 'touch' })
  | (Span & { kind: 'l2', store: PortableStore, step: number, header: ShardHeader, dataStart: number, chunkBytes: number, crcs: number[] })
  | { kind: 'abort', id: number }

function serve (port: NonNullable<typeof parentPort>): void {
  // One store per description, opened on the first L2 job: a thread that only checksums never loads
  // the store's code.
  const stores = new Map<string, Promise<CheckpointStore>>()
  const controllers = new Map<number, AbortController>()

  const fail = (id: number, err: unknown): void => {
    const wire = toWire(err)
    // Node system errors (ENOSPC, EIO) keep their code for the caller's log.
    const code = (err as { code?: unknown }).code
    port.postMessage({ id, error: typeof code === 'string' ? { ...wire, details: { ...wire.details, code } } : wire })
  }

  const storeFor = async (p: PortableStore): Promise<CheckpointStore> => {
    const key = JSON.stringify(p)
    let s = stores.get(key)
    if (s === undefined) {
      s = Promise.all([import('./store.js'), import('./storage.js')]).then(([{ createCheckpointStore }, { createLocalStorage }]) => createCheckpointStore(
        { keep: p.keep, chunkBytes: p.chunkBytes, commitTimeoutMs: p.commitTimeoutMs, pollIntervalMs: p.pollIntervalMs },
        { storage: createLocalStorage(p.storage) }
      ))
      // A failed load is not cached: the next job tries again.
      s.catch(() => { stores.delete(key) })
      stores.set(key, s)
    }
    return await s
  }

  const l2 = async (job: Extract<Job, { kind: 'l2' }>, signal: AbortSignal): Promise<void> => {
    const store = await storeFor(job.store)
    const image = { header: job.header, dataStart: job.dataStart, bytes: new Uint8Array(job.buffer, job.byteOffset, job.byteLength), chunkBytes: job.chunkBytes, crcs: job.crcs }
    const record = await store.writeShardImage(job.step, image, { signal })
    const info = await store.commit(job.step, { worldSize: 1, records: [record], signal })
    port.postMessage({ id: job.id, info })
  }

  port.on('message', (job: Job) => {
    if (job.kind === 'abort') {
      controllers.get(job.id)?.abort()
      return
    }
    try {
      if (job.kind === 'l2') {
        const c = new AbortController()
        controllers.set(job.id, c)
        l2(job, c.signal).catch((err: unknown) => { fail(job.id, err) }).finally(() => { controllers.delete(job.id) })
        return
      }
      const bytes = new Uint8Array(job.buffer, job.byteOffset, job.byteLength)
      if (job.kind === 'touch') {
        // First-touch page faults of fresh staging memory happen here instead of on the trainer's thread.
        for (let off = 0; off < bytes.byteLength; off += 4096) bytes[off] = 0
        port.postMessage({ id: job.id, crcs: [] })
        return
      }
      const crcs: number[] = []
      for (let off = 0; off < bytes.byteLength; off += job.chunkBytes) crcs.push(crc32c(bytes.subarray(off, Math.min(off + job.chunkBytes, bytes.byteLength))))
      port.postMessage({ id: job.id, crcs })
    } catch (err) {
      fail(job.id, err)
    }
  })
}

if (parentPort !== null) serve(parentPort)
