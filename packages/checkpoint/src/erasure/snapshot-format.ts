import { CorruptCheckpointError, createStateDict, shapeSize, type NamedTensor, type StateDict, type StateMeta } from '@phalanx/core'

const MAGIC = 0x53584850 // 'PHXS' little-endian
const FORMAT = 1

/**
 * Serialises a state dict into one byte image for erasure coding:
 * `[u32 magic][u32 format][u32 headerBytes][u32 0][JSON header, padded to 8][float32 data of every tensor, in order]`.
 */
export function encodeSnapshot (state: StateDict): Uint8Array {
  const header = new TextEncoder().encode(JSON.stringify({ meta: state.meta, tensors: state.tensors.map((t) => ({ name: t.name, shape: t.shape })) }))
  const dataStart = 16 + Math.ceil(header.byteLength / 8) * 8
  let total = dataStart
  for (const t of state.tensors) total += t.data.byteLength
  const out = new Uint8Array(total)
  const view = new DataView(out.buffer)
  view.setUint32(0, MAGIC, true)
  view.setUint32(4, FORMAT, true)
  view.setUint32(8, header.byteLength, true)
  out.set(header, 16)
  let off = dataStart
  for (const t of state.tensors) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), off)
    off += t.data.byteLength
  }
  return out
}

/**
 * Parses an image of {@link encodeSnapshot}. By default the tensors get their own arrays; with
 * `copy: false` they are views of `bytes` (no copy; the caller must not reuse `bytes`), which needs
 * `bytes` to start 4-byte aligned. Throws `CorruptCheckpointError`.
 */
export function decodeSnapshot (bytes: Uint8Array, options: { copy?: boolean } = {}): StateDict {
  const copy = options.copy ?? true
  if (!copy && bytes.byteOffset % 4 !== 0) throw new CorruptCheckpointError('Snapshot image is not 4-byte aligned: tensors cannot be views of it')
  if (bytes.byteLength < 16) throw new CorruptCheckpointError('Snapshot image is truncated')
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (view.getUint32(0, true) !== MAGIC || view.getUint32(4, true) !== FORMAT) throw new CorruptCheckpointError('Not a snapshot image (bad magic or format)')
  const headerBytes = view.getUint32(8, true)
  if (16 + headerBytes > bytes.byteLength) throw new CorruptCheckpointError('Snapshot header is truncated')
  let header: { meta: StateMeta, tensors: Array<{ name: string, shape: number[] }> }
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(16, 16 + headerBytes))) as typeof header
  } catch (err) {
    throw new CorruptCheckpointError('Snapshot header is not JSON', { cause: err })
  }
  if (typeof header !== 'object' || header === null || !Array.isArray(header.tensors) || typeof header.meta !== 'object') throw new CorruptCheckpointError('Snapshot header has the wrong shape')
  let off = 16 + Math.ceil(headerBytes / 8) * 8
  const tensors: NamedTensor[] = header.tensors.map((t) => {
    const n = shapeSize(t.shape)
    if (off + n * 4 > bytes.byteLength) throw new CorruptCheckpointError(`Tensor "${t.name}" runs past the end of the snapshot`)
    let data: Float32Array
    if (copy) {
      data = new Float32Array(n)
      new Uint8Array(data.buffer).set(bytes.subarray(off, off + n * 4))
    } else {
      data = new Float32Array(bytes.buffer, bytes.byteOffset + off, n)
    }
    off += n * 4
    return { name: t.name, shape: t.shape, dtype: 'float32' as const, data }
  })
  if (off !== bytes.byteLength) throw new CorruptCheckpointError(`Snapshot has ${bytes.byteLength - off} trailing bytes`)
  return createStateDict(tensors, header.meta)
}
