import { InvalidParametersError, shapeSize, type NamedTensor } from '@phalanx/core'
import type { LayoutEntry, ShardPieceSpec } from './format.js'

/** A contiguous range of the flat coordinate space. */
export interface FlatRange {
  /** First element. */
  readonly offset: number
  /** Number of elements. */
  readonly length: number
}

/**
 * The flat range rank `rank` of `worldSize` owns when `total` elements are split as evenly as
 * possible (the first `total % worldSize` ranks get one more). The default sharding of optimizer
 * state and of replicated-state writes.
 */
export function shardRange (total: number, rank: number, worldSize: number): FlatRange {
  if (!Number.isInteger(worldSize) || worldSize < 1 || !Number.isInteger(rank) || rank < 0 || rank >= worldSize) {
    throw new InvalidParametersError(`Invalid rank ${rank} of world size ${worldSize}`)
  }
  const base = Math.floor(total / worldSize)
  const extra = total % worldSize
  const offset = rank * base + Math.min(rank, extra)
  return { offset, length: base + (rank < extra ? 1 : 0) }
}

/**
 * Splits the flat range `[offset, offset + length)` at tensor boundaries into pieces of the tensors of
 * `layout`. When `tensors` (the whole state, in layout order) is given each piece carries a view of
 * its data; otherwise `source` (the range's values, flat) is sliced into views.
 */
export function piecesOfRange (layout: readonly LayoutEntry[], range: FlatRange, data: { tensors?: readonly NamedTensor[], source?: Float32Array }): Array<ShardPieceSpec & { data: Float32Array }> {
  const end = range.offset + range.length
  const pieces: Array<ShardPieceSpec & { data: Float32Array }> = []
  for (let i = 0; i < layout.length; i++) {
    const l = layout[i] as LayoutEntry
    const size = shapeSize(l.shape)
    const a = Math.max(range.offset, l.globalOffset)
    const b = Math.min(end, l.globalOffset + size)
    if (b <= a) continue
    const tensorOffset = a - l.globalOffset
    let view: Float32Array
    if (data.tensors !== undefined) {
      const t = data.tensors[i]
      if (t === undefined || t.name !== l.name || t.data.length !== size) throw new InvalidParametersError(`Tensor ${i} does not match layout entry "${l.name}"`)
      view = t.data.subarray(tensorOffset, tensorOffset + (b - a))
    } else if (data.source !== undefined) {
      if (data.source.length !== range.length) throw new InvalidParametersError(`Source has ${data.source.length} values, range needs ${range.length}`)
      view = data.source.subarray(a - range.offset, b - range.offset)
    } else {
      throw new InvalidParametersError('piecesOfRange needs tensors or source')
    }
    pieces.push({ name: l.name, tensorOffset, length: b - a, data: view })
  }
  return pieces
}
