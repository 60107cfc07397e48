/**
 * Worker-thread entry of {@link createChecksumWorker}: computes per-chunk CRC-32C over a range of a
 * SharedArrayBuffer so the trainer's event loop never spends CPU on checksums.
 *
 * @module
 */
import { parentPort } from 'node:worker_threads'
import { crc32c } from '@phalanx/core'

interface CrcJob { id: number, buffer: SharedArrayBuffer, byteOffset: number, byteLength: number, chunkBytes: number, touch?: boolean }

parentPort?.on('message', (job: CrcJob) => {
  try {
    const bytes = new Uint8Array(job.buffer, job.byteOffset, job.byteLength)
    if (job.touch === true) {
      // First-touch page faults of fresh staging memory happen here instead of on the trainer's thread.
      for (let off = 0; off < bytes.byteLength; off += 4096) bytes[off] = 0
      parentPort?.postMessage({ id: job.id, crcs: [] })
      return
    }
    const crcs: number[] = []
    for (let off = 0; off < bytes.byteLength; off += job.chunkBytes) crcs.push(crc32c(bytes.subarray(off, Math.min(off + job.chunkBytes, bytes.byteLength))))
    parentPort?.postMessage({ id: job.id, crcs })
  } catch (err) {
    parentPort?.postMessage({ id: job.id, error: String(err) })
  }
})
