/**
 * The on-disk (and in-tmpfs) format shared by L2 rank files and L0 holder slots.
 *
 * A **shard file** is safetensors-like:
 * `[8 B magic "PHXSHRD1"][u64 LE header length][JSON header][pad to 64 B][tensor bytes, each 64 B aligned]`.
 * Entry offsets in the header are relative to the 64 B aligned data start, so the header never has
 * to know its own length; every tensor is readable as a `Float32Array` view without a copy.
 *
 * The whole file (header included) is covered by CRC-32C checksums of fixed-size chunks, recorded in
 * the checkpoint manifest (L2) or the slot manifest (L0), never in the file itself: a file is only
 * trusted through a manifest that was written after it.
 *
 * @module
 */
import { z } from 'zod'
import {
  CorruptCheckpointError, ChecksumMismatchError, InvalidParametersError, crc32c, shapeSize,
  type JsonValue, type StateMeta, type TensorSpec
} from '@phalanx/core'

/** Magic bytes opening every shard file. */
export const SHARD_MAGIC = 'PHXSHRD1'
/** Alignment of the data region and of every tensor in it, bytes. */
export const ALIGN = 64
/** Default size of a checksummed chunk, bytes. */
export const DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
const PREAMBLE = 16
/** Largest header accepted when parsing (guards against a corrupted length field). */
const MAX_HEADER_BYTES = 64 * 1024 * 1024

/** Rounds `n` up to a multiple of {@link ALIGN}. */
export function align64 (n: number): number {
  return Math.ceil(n / ALIGN) * ALIGN
}

/** A tensor of the whole (logical) state and where it starts in the flat coordinate space. */
export interface LayoutEntry extends TensorSpec {
  /** Element offset of the tensor's first value in the flat concatenation of all tensors. */
  readonly globalOffset: number
}

/** A contiguous piece of one tensor stored in a shard file. */
export interface ShardEntry {
  readonly name: string
  /** Byte offset relative to the data start (64 B aligned). */
  readonly offset: number
  /** Number of float32 elements. */
  readonly length: number
  /** Element offset of this piece within its tensor. */
  readonly tensorOffset: number
  /** Element offset of this piece in the flat coordinate space of the whole state. */
  readonly globalOffset: number
}

/** The JSON header of a shard file. */
export interface ShardHeader {
  readonly format: 'phalanx-shard/1'
  readonly rank: number
  readonly worldSize: number
  readonly meta: StateMeta
  readonly layout: readonly LayoutEntry[]
  readonly entries: readonly ShardEntry[]
}

const jsonValue: z.ZodType<JsonValue> = z.lazy(() => z.union([z.null(), z.boolean(), z.number(), z.string(), z.array(jsonValue), z.record(z.string(), jsonValue)]))
const metaSchema = z.object({ step: z.number().int().nonnegative(), epoch: z.number().int().nonnegative() }).catchall(jsonValue.optional())
const nonneg = z.number().int().nonnegative()
const layoutSchema = z.object({ name: z.string().min(1), shape: z.array(nonneg), dtype: z.literal('float32'), globalOffset: nonneg }).strict()
const entrySchema = z.object({ name: z.string().min(1), offset: nonneg, length: nonneg, tensorOffset: nonneg, globalOffset: nonneg }).strict()

/** Schema of {@link ShardHeader}. */
export const shardHeaderSchema = z.object({
  format: z.literal('phalanx-shard/1'),
  rank: nonneg,
  worldSize: z.number().int().positive(),
  meta: metaSchema,
  layout: z.array(layoutSchema),
  entries: z.array(entrySchema)
}).strict()

/** Where a shard's pieces go in its file, computed before any byte is written. */
export interface ShardLayout {
  readonly header: ShardHeader
  /** Encoded header JSON. */
  readonly headerBytes: Uint8Array
  /** Absolute byte offset of the data region (64 B aligned). */
  readonly dataStart: number
  /** Total file size in bytes (a multiple of 64). */
  readonly totalBytes: number
}

/** A piece of a tensor to store: `data` holds `data.length` values starting at `tensorOffset`. */
export interface ShardPieceSpec {
  readonly name: string
  readonly tensorOffset: number
  readonly length: number
}

/** Builds the layout (global offsets) of a list of tensor specs. */
export function layoutOf (specs: readonly TensorSpec[]): LayoutEntry[] {
  let offset = 0
  const seen = new Set<string>()
  return specs.map((s) => {
    if (seen.has(s.name)) throw new InvalidParametersError(`Duplicate tensor name "${s.name}"`)
    seen.add(s.name)
    const e: LayoutEntry = { name: s.name, shape: [...s.shape], dtype: s.dtype, globalOffset: offset }
    offset += shapeSize(s.shape)
    return e
  })
}

/** Number of elements of the whole state described by `layout`. */
export function layoutSize (layout: readonly LayoutEntry[]): number {
  const last = layout[layout.length - 1]
  return last === undefined ? 0 : last.globalOffset + shapeSize(last.shape)
}

/** Plans a shard file holding `pieces` (in order) of the state described by `layout`. */
export function planShard (init: { rank: number, worldSize: number, meta: StateMeta, layout: readonly LayoutEntry[], pieces: readonly ShardPieceSpec[] }): ShardLayout {
  const byName = new Map(init.layout.map((l) => [l.name, l]))
  let offset = 0
  const entries: ShardEntry[] = init.pieces.map((p) => {
    const l = byName.get(p.name)
    if (l === undefined) throw new InvalidParametersError(`Piece of unknown tensor "${p.name}"`)
    const size = shapeSize(l.shape)
    if (!Number.isInteger(p.tensorOffset) || p.tensorOffset < 0 || p.tensorOffset + p.length > size) {
      throw new InvalidParametersError(`Piece [${p.tensorOffset}, +${p.length}) is outside tensor "${p.name}" of ${size} values`)
    }
    const e: ShardEntry = { name: p.name, offset, length: p.length, tensorOffset: p.tensorOffset, globalOffset: l.globalOffset + p.tensorOffset }
    offset = align64(offset + p.length * 4)
    return e
  })
  const header: ShardHeader = { format: 'phalanx-shard/1', rank: init.rank, worldSize: init.worldSize, meta: init.meta, layout: init.layout, entries }
  const headerBytes = new TextEncoder().encode(JSON.stringify(header))
  const dataStart = align64(PREAMBLE + headerBytes.byteLength)
  return { header, headerBytes, dataStart, totalBytes: dataStart + offset }
}

/** Writes the magic, header length and header of `layout` into the start of `file` (zeroing the padding). */
export function writeShardPreamble (file: Uint8Array, layout: ShardLayout): void {
  if (file.byteLength < layout.totalBytes) throw new InvalidParametersError(`Buffer of ${file.byteLength} bytes is smaller than the shard (${layout.totalBytes})`)
  const dv = new DataView(file.buffer, file.byteOffset, file.byteLength)
  for (let i = 0; i < 8; i++) file[i] = SHARD_MAGIC.charCodeAt(i)
  dv.setBigUint64(8, BigInt(layout.headerBytes.byteLength), true)
  file.set(layout.headerBytes, PREAMBLE)
  file.fill(0, PREAMBLE + layout.headerBytes.byteLength, layout.dataStart)
}

/** Reads the header length from the first 16 bytes of a shard file. */
export function readHeaderLength (preamble: Uint8Array, file = 'shard'): number {
  if (preamble.byteLength < PREAMBLE) throw new CorruptCheckpointError(`${file}: truncated before the header`, { details: { file } })
  for (let i = 0; i < 8; i++) {
    if (preamble[i] !== SHARD_MAGIC.charCodeAt(i)) throw new CorruptCheckpointError(`${file}: not a shard file (bad magic)`, { details: { file } })
  }
  const len = Number(new DataView(preamble.buffer, preamble.byteOffset, 16).getBigUint64(8, true))
  if (len <= 0 || len > MAX_HEADER_BYTES) throw new CorruptCheckpointError(`${file}: header length ${len} is invalid`, { details: { file } })
  return len
}

/** Parses and validates the header of a shard file from its first bytes (at least the whole header). */
export function parseShardHeader (start: Uint8Array, file = 'shard'): { header: ShardHeader, dataStart: number } {
  const len = readHeaderLength(start, file)
  if (start.byteLength < PREAMBLE + len) throw new CorruptCheckpointError(`${file}: truncated inside the header`, { details: { file } })
  let value: unknown
  try {
    value = JSON.parse(new TextDecoder().decode(start.subarray(PREAMBLE, PREAMBLE + len)))
  } catch (cause) {
    throw new CorruptCheckpointError(`${file}: header is not valid JSON`, { cause, details: { file } })
  }
  const parsed = shardHeaderSchema.safeParse(value)
  if (!parsed.success) {
    throw new CorruptCheckpointError(`${file}: header failed validation`, { details: { file, issues: parsed.error.issues.slice(0, 5).map((i) => `${i.path.join('.')}: ${i.message}`) } })
  }
  return { header: parsed.data as ShardHeader, dataStart: align64(PREAMBLE + len) }
}

/** CRC-32C of every `chunkBytes` chunk of `bytes` (the last one may be shorter). */
export function chunkCrcs (bytes: Uint8Array, chunkBytes: number = DEFAULT_CHUNK_BYTES): number[] {
  const out: number[] = []
  for (let off = 0; off < bytes.byteLength; off += chunkBytes) out.push(crc32c(bytes.subarray(off, Math.min(off + chunkBytes, bytes.byteLength))))
  return out
}

/** Number of chunks a file of `bytes` bytes has. */
export function chunkCount (bytes: number, chunkBytes: number): number {
  return Math.ceil(bytes / chunkBytes)
}

/**
 * Checks `data`, which holds the file's bytes from `start` (a chunk boundary), against the recorded
 * chunk checksums. Throws {@link ChecksumMismatchError} naming the first bad chunk.
 */
export function verifyChunks (file: string, data: Uint8Array, start: number, chunkBytes: number, crcs: readonly number[]): void {
  if (start % chunkBytes !== 0) throw new InvalidParametersError(`Verification must start on a chunk boundary (${start})`)
  for (let off = 0; off < data.byteLength; off += chunkBytes) {
    const index = (start + off) / chunkBytes
    const expected = crcs[index]
    const actual = crc32c(data.subarray(off, Math.min(off + chunkBytes, data.byteLength)))
    if (expected !== actual) {
      throw new ChecksumMismatchError(`${file}: chunk ${index} (bytes ${start + off}..${Math.min(start + off + chunkBytes, start + data.byteLength)}) fails its CRC-32C`, {
        details: { file, chunk: index, offset: start + off, expected: expected ?? null, actual }
      })
    }
  }
}

/** Builds a complete shard file in memory (or into `into`) from pieces with data. Synchronous. */
export function buildShardFile (
  init: { rank: number, worldSize: number, meta: StateMeta, layout: readonly LayoutEntry[], pieces: ReadonlyArray<ShardPieceSpec & { data: Float32Array }> },
  into?: Uint8Array
): { plan: ShardLayout, bytes: Uint8Array } {
  const plan = planShard(init)
  const bytes = into === undefined ? new Uint8Array(plan.totalBytes) : into.subarray(0, plan.totalBytes)
  writeShardPreamble(bytes, plan)
  init.pieces.forEach((p, i) => {
    const e = plan.header.entries[i] as ShardEntry
    const at = plan.dataStart + e.offset
    bytes.set(new Uint8Array(p.data.buffer, p.data.byteOffset, p.length * 4), at)
    const end = plan.dataStart + align64(e.offset + e.length * 4)
    bytes.fill(0, at + e.length * 4, Math.min(end, plan.totalBytes))
  })
  return { plan, bytes }
}
