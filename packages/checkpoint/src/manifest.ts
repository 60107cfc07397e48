import { z } from 'zod'
import { CorruptCheckpointError, crc32c, type StateMeta } from '@phalanx/core'
import { shardHeaderSchema, type LayoutEntry, type ShardHeader } from './format.js'

/** One tensor piece of a checkpoint: where its bytes are and where they go in the flat state. */
export interface ManifestTensor {
  readonly name: string
  readonly shape: readonly number[]
  readonly dtype: 'float32'
  /** Data file, relative to the checkpoint directory. */
  readonly file: string
  /** Absolute byte offset in {@link file} (64 B aligned). */
  readonly offset: number
  /** Number of float32 elements. */
  readonly length: number
  /** Element offset of the piece within its tensor. */
  readonly tensorOffset: number
  /** Element offset of the piece in the flat coordinate space (what resharding reads by). */
  readonly globalOffset: number
}

/** A data file of a checkpoint with its per-chunk CRC-32C list. */
export interface ManifestFile {
  readonly file: string
  readonly rank: number
  readonly bytes: number
  readonly crcs: readonly number[]
}

/**
 * The manifest of an L2 checkpoint, written last: a checkpoint directory without a valid manifest
 * was never committed.
 */
export interface CheckpointManifest {
  readonly format: 'phalanx-checkpoint/1'
  readonly version: 1
  readonly id: string
  readonly step: number
  readonly epoch: number
  /** Unix milliseconds of the commit. */
  readonly createdAt: number
  readonly meta: StateMeta
  /** Number of ranks that wrote data files. */
  readonly worldSize: number
  /** Size of a checksummed chunk, bytes. */
  readonly chunkBytes: number
  /** The whole logical state: every tensor and its global offset. */
  readonly layout: readonly LayoutEntry[]
  readonly files: readonly ManifestFile[]
  readonly tensors: readonly ManifestTensor[]
}

/** What a rank reports after writing (and fsyncing) its data file; rank 0 commits from these. */
export interface ShardRecord {
  readonly rank: number
  /** Data file name within the checkpoint directory. */
  readonly file: string
  readonly bytes: number
  readonly chunkBytes: number
  readonly crcs: readonly number[]
  readonly dataStart: number
  readonly header: ShardHeader
}

const nonneg = z.number().int().nonnegative()
const manifestSchema = z.object({
  format: z.literal('phalanx-checkpoint/1'),
  version: z.literal(1),
  id: z.string().min(1),
  step: nonneg,
  epoch: nonneg,
  createdAt: z.number(),
  meta: z.record(z.string(), z.unknown()),
  worldSize: z.number().int().positive(),
  chunkBytes: z.number().int().positive(),
  layout: z.array(z.object({ name: z.string(), shape: z.array(nonneg), dtype: z.literal('float32'), globalOffset: nonneg }).strict()),
  files: z.array(z.object({ file: z.string().regex(/^[A-Za-z0-9._-]+$/), rank: nonneg, bytes: nonneg, crcs: z.array(nonneg) }).strict()),
  tensors: z.array(z.object({
    name: z.string(), shape: z.array(nonneg), dtype: z.literal('float32'), file: z.string(), offset: nonneg, length: nonneg, tensorOffset: nonneg, globalOffset: nonneg
  }).strict())
}).strict()

/** Schema of a {@link ShardRecord}. */
export const shardRecordSchema = z.object({
  rank: nonneg, file: z.string().regex(/^[A-Za-z0-9._-]+$/), bytes: nonneg, chunkBytes: z.number().int().positive(), crcs: z.array(nonneg), dataStart: nonneg, header: shardHeaderSchema
}).strict()

/** Encodes a manifest with a CRC-32C of its body, so a flipped byte in the manifest itself is caught. */
export function encodeManifest (manifest: unknown): Uint8Array {
  const body = JSON.stringify(manifest)
  return new TextEncoder().encode(`{"crc32c":${crc32c(new TextEncoder().encode(body))},"manifest":${body}}\n`)
}

/** Decodes and checks a manifest written by {@link encodeManifest}; throws {@link CorruptCheckpointError}. */
export function decodeManifestBody (bytes: Uint8Array, file: string): unknown {
  let outer: unknown
  try {
    outer = JSON.parse(new TextDecoder().decode(bytes))
  } catch (cause) {
    throw new CorruptCheckpointError(`${file}: manifest is not valid JSON`, { cause, details: { file } })
  }
  const o = outer as { crc32c?: unknown, manifest?: unknown } | null
  if (typeof o !== 'object' || o === null || typeof o.crc32c !== 'number' || o.manifest === undefined) {
    throw new CorruptCheckpointError(`${file}: manifest envelope is malformed`, { details: { file } })
  }
  const actual = crc32c(new TextEncoder().encode(JSON.stringify(o.manifest)))
  if (actual !== o.crc32c) throw new CorruptCheckpointError(`${file}: manifest fails its CRC-32C`, { details: { file, expected: o.crc32c, actual } })
  return o.manifest
}

/** Parses and validates an L2 manifest file's bytes. */
export function parseManifest (bytes: Uint8Array, file: string): CheckpointManifest {
  const parsed = manifestSchema.safeParse(decodeManifestBody(bytes, file))
  if (!parsed.success) {
    throw new CorruptCheckpointError(`${file}: manifest failed validation`, { details: { file, issues: parsed.error.issues.slice(0, 5).map((i) => `${i.path.join('.')}: ${i.message}`) } })
  }
  return parsed.data as unknown as CheckpointManifest
}
