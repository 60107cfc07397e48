import {
  ChecksumMismatchError, CorruptCheckpointError, InvalidParametersError, NotFoundError, TimeoutError,
  componentLogger, createStateDict, shapeSize, systemClock, throwIfAborted,
  type AbortOptions, type Clock, type Logger, type NamedTensor, type StateDict, type StateMeta
} from '@phalanx/core'
import {
  DEFAULT_CHUNK_BYTES, buildShardFile, chunkCrcs, layoutOf, layoutSize, parseShardHeader, readHeaderLength, verifyChunks,
  type LayoutEntry, type ShardHeader, type ShardPieceSpec
} from './format.js'
import { encodeManifest, parseManifest, shardRecordSchema, type CheckpointManifest, type ManifestTensor, type ShardRecord } from './manifest.js'
import { createLocalStorage, type CheckpointStorage, type LocalStorageInit } from './storage.js'
import { piecesOfRange } from './reshard.js'

/** Tunables of {@link createCheckpointStore}. */
export interface CheckpointStoreInit {
  /** Directory of the store (used when no `storage` component is given). */
  dir?: string
  /**
   * Number of committed checkpoints kept; older ones are deleted after each commit.
   * @default 3
   */
  keep?: number
  /**
   * Size of a checksummed chunk, bytes.
   * @default 4 MiB
   */
  chunkBytes?: number
  /**
   * How long rank 0's {@link CheckpointStore.commit} waits for the other ranks' records to appear.
   * @default 60000
   */
  commitTimeoutMs?: number
  /**
   * Poll interval while waiting for other ranks' records in a shared directory.
   * @default 100
   */
  pollIntervalMs?: number
}

/** Collaborators of {@link createCheckpointStore}. */
export interface CheckpointStoreComponents {
  /** Where files go. @default a local directory at `init.dir` */
  storage?: CheckpointStorage
  /** @default silent */
  logger?: Logger
  /** @default the system clock */
  clock?: Clock
}

/** Summary of a committed checkpoint. */
export interface CheckpointInfo {
  readonly id: string
  readonly step: number
  readonly epoch: number
  readonly createdAt: number
  readonly worldSize: number
  /** Bytes of all data files. */
  readonly bytes: number
  /** Number of logical tensors. */
  readonly tensors: number
  /** Elements of the whole state. */
  readonly elements: number
}

/** A part of the state one rank writes: pieces (with data) of the tensors of `layout`. */
export interface ShardInput {
  readonly step: number
  readonly meta: StateMeta
  /** @default 0 */
  readonly rank?: number
  /** @default 1 */
  readonly worldSize?: number
  /** The whole logical state's layout (from {@link layoutOf}). */
  readonly layout: readonly LayoutEntry[]
  readonly pieces: ReadonlyArray<ShardPieceSpec & { data: Float32Array }>
}

/** A shard file already built in memory (the snapshotter's staging image) with its checksums. */
export interface ShardImage {
  readonly header: ShardHeader
  readonly dataStart: number
  /** The whole file. */
  readonly bytes: Uint8Array
  readonly chunkBytes: number
  readonly crcs: readonly number[]
}

/** Result of {@link CheckpointStore.verify}. */
export interface VerifyReport {
  readonly id: string
  readonly files: number
  readonly chunks: number
  readonly bytes: number
}

/** A checkpoint that {@link CheckpointStore.restore} passed over, and why. */
export interface SkippedCheckpoint {
  readonly id: string
  readonly error: { name: string, message: string, details?: Record<string, unknown> }
}

/**
 * What another thread needs to open the same store (see {@link CheckpointStore.portable}): the
 * store's tunables and the options of its local storage. Plain data, so it crosses `postMessage`.
 */
export interface PortableStore {
  readonly storage: LocalStorageInit
  readonly keep: number
  readonly chunkBytes: number
  readonly commitTimeoutMs: number
  readonly pollIntervalMs: number
}

/** Reads a committed checkpoint; every byte returned has been checked against its chunk CRC. */
export interface CheckpointReader {
  readonly manifest: CheckpointManifest
  readonly info: CheckpointInfo
  /**
   * Reads `length` elements of the flat state starting at `globalOffset` (the concatenation of all
   * tensors in layout order), whatever world size wrote them: the primitive of resharding.
   */
  readSlice(globalOffset: number, length: number, options?: AbortOptions & { out?: Float32Array }): Promise<Float32Array>
  /** Reads one whole tensor. */
  readTensor(name: string, options?: AbortOptions): Promise<Float32Array>
  /** Reads the whole state. */
  readState(options?: AbortOptions): Promise<StateDict>
}

/**
 * Durable (L2) checkpoints: per-rank data files plus a manifest committed last with
 * tmp + fsync + rename + directory fsync, a `LATEST` pointer updated the same way, and the last
 * `keep` checkpoints kept. A crash at any point leaves the previous checkpoint intact.
 */
export interface CheckpointStore {
  readonly storage: CheckpointStorage
  /** Saves a whole state as a single-rank checkpoint (write, fsync, commit). */
  save(state: StateDict, options?: AbortOptions & { step?: number }): Promise<CheckpointInfo>
  /** Writes and fsyncs this rank's data file of checkpoint `input.step`; returns what rank 0 needs to commit. */
  writeShard(input: ShardInput, options?: AbortOptions): Promise<ShardRecord>
  /** Writes a shard already built in memory (its checksums computed elsewhere, e.g. in a worker thread). */
  writeShardImage(step: number, image: ShardImage, options?: AbortOptions): Promise<ShardRecord>
  /**
   * Commits checkpoint `step` (rank 0 only) once every rank wrote its data file: from the given
   * records, or, in a shared directory, from the records the ranks left next to their files.
   * Rejects with `TimeoutError` when ranks are missing after `commitTimeoutMs`.
   */
  commit(step: number, options: AbortOptions & { worldSize: number, records?: readonly ShardRecord[] }): Promise<CheckpointInfo>
  /** Committed checkpoints with a readable manifest, newest first. */
  list(options?: AbortOptions): Promise<CheckpointInfo[]>
  /** The id `LATEST` points at, if any. */
  latestId(): Promise<string | undefined>
  /** Reads a checkpoint's manifest; throws `NotFoundError` or `CorruptCheckpointError`. */
  manifest(id: string, options?: AbortOptions): Promise<CheckpointManifest>
  /**
   * Checks every byte of every data file against its chunk CRC and every file's size.
   * Throws `ChecksumMismatchError` (naming file and chunk) or `CorruptCheckpointError` (truncated, missing).
   */
  verify(id: string, options?: AbortOptions): Promise<VerifyReport>
  /** Opens a checkpoint for (verified) reading. */
  open(id: string, options?: AbortOptions): Promise<CheckpointReader>
  /**
   * Restores the newest checkpoint that verifies (or `id`), logging an error for each one skipped.
   * Throws `NotFoundError` when none does.
   */
  restore(options?: AbortOptions & { id?: string }): Promise<{ info: CheckpointInfo, state: StateDict, skipped: SkippedCheckpoint[] }>
  /** Deletes a checkpoint. */
  remove(id: string): Promise<void>
  /**
   * How another thread opens a store that behaves exactly as this one (the snapshotter's writer
   * thread commits through it), or undefined when none can: the storage is not a plain local
   * directory ({@link CheckpointStorage.describe}), a clock was injected, or this is a decorator
   * inheriting from or copying the store.
   */
  portable?(): PortableStore | undefined
}

/** The directory name of the checkpoint of `step`. */
export function checkpointId (step: number): string {
  return `step-${String(step).padStart(12, '0')}`
}

const ID_RE = /^step-(\d{12})$/
const TMP_RE = /^step-(\d{12})\.tmp$/
const TRASH_RE = /^step-\d{12}\.trash-/
const rankFile = (rank: number): string => `rank-${String(rank).padStart(5, '0')}.bin`
const rankRecord = (rank: number): string => `rank-${String(rank).padStart(5, '0')}.json`

function infoOf (m: CheckpointManifest): CheckpointInfo {
  return {
    id: m.id,
    step: m.step,
    epoch: m.epoch,
    createdAt: m.createdAt,
    worldSize: m.worldSize,
    bytes: m.files.reduce((a, f) => a + f.bytes, 0),
    tensors: m.layout.length,
    elements: layoutSize(m.layout)
  }
}

function errorSummary (err: unknown): SkippedCheckpoint['error'] {
  const e = err as { name?: string, message?: string, details?: Record<string, unknown> }
  const out: SkippedCheckpoint['error'] = { name: e.name ?? 'Error', message: e.message ?? String(err) }
  if (e.details !== undefined && Object.keys(e.details).length > 0) out.details = e.details
  return out
}

/** Checks that the pieces of all records tile the flat state exactly once. */
function checkCoverage (layout: readonly LayoutEntry[], tensors: readonly ManifestTensor[]): void {
  const total = layoutSize(layout)
  const sorted = [...tensors].sort((a, b) => a.globalOffset - b.globalOffset)
  let at = 0
  for (const t of sorted) {
    if (t.length === 0) continue
    if (t.globalOffset !== at) {
      throw new CorruptCheckpointError(t.globalOffset > at ? `Elements ${at}..${t.globalOffset} of the state are in no shard` : `Element ${t.globalOffset} is in two shards`,
        { details: { at, next: t.globalOffset } })
    }
    at += t.length
  }
  if (at !== total) throw new CorruptCheckpointError(`Shards cover ${at} of ${total} elements`, { details: { covered: at, total } })
}

/** Builds a state dict from verified pieces: views when a tensor is one piece, copies otherwise. */
export function assembleState (layout: readonly LayoutEntry[], meta: StateMeta, pieces: ReadonlyArray<{ name: string, tensorOffset: number, data: Float32Array }>): StateDict {
  const byName = new Map<string, Array<{ tensorOffset: number, data: Float32Array }>>()
  for (const p of pieces) {
    const list = byName.get(p.name) ?? []
    list.push(p)
    byName.set(p.name, list)
  }
  const tensors: NamedTensor[] = layout.map((l) => {
    const size = shapeSize(l.shape)
    const list = byName.get(l.name) ?? []
    const only = list[0]
    let data: Float32Array
    if (list.length === 1 && only !== undefined && only.tensorOffset === 0 && only.data.length === size) {
      data = only.data
    } else {
      data = new Float32Array(size)
      let covered = 0
      for (const p of list) { data.set(p.data, p.tensorOffset); covered += p.data.length }
      if (covered !== size) throw new CorruptCheckpointError(`Tensor "${l.name}" has ${covered} of ${size} values`, { details: { tensor: l.name } })
    }
    return { name: l.name, shape: [...l.shape], dtype: 'float32', data }
  })
  return createStateDict(tensors, structuredClone(meta))
}

/** Reads a whole shard file held in memory (an L0 image, or `restoreCheckpoint`'s output) into a state dict. */
export function stateFromShardFile (bytes: Uint8Array, file = 'shard'): StateDict {
  const { header, dataStart } = parseShardHeader(bytes, file)
  const pieces = header.entries.map((e) => {
    if (dataStart + e.offset + e.length * 4 > bytes.byteLength) throw new CorruptCheckpointError(`${file}: tensor "${e.name}" runs past the end`, { details: { file } })
    const at = bytes.byteOffset + dataStart + e.offset
    // Views need 4-byte alignment; a file read into an unaligned buffer is copied once.
    const data = at % 4 === 0 ? new Float32Array(bytes.buffer, at, e.length) : new Float32Array(bytes.slice(dataStart + e.offset, dataStart + e.offset + e.length * 4).buffer)
    return { name: e.name, tensorOffset: e.tensorOffset, data }
  })
  return assembleState(header.layout, header.meta, pieces)
}

/** Creates a {@link CheckpointStore}. */
export function createCheckpointStore (init: CheckpointStoreInit, components: CheckpointStoreComponents = {}): CheckpointStore {
  const storage = components.storage ?? (init.dir !== undefined ? createLocalStorage({ dir: init.dir }) : undefined)
  if (storage === undefined) throw new InvalidParametersError('createCheckpointStore needs init.dir or a storage component')
  const keep = init.keep ?? 3
  if (!Number.isInteger(keep) || keep < 1) throw new InvalidParametersError(`keep must be a positive integer, got ${keep}`)
  const chunkBytes = init.chunkBytes ?? DEFAULT_CHUNK_BYTES
  if (!Number.isInteger(chunkBytes) || chunkBytes < 64 || chunkBytes % 64 !== 0) throw new InvalidParametersError('chunkBytes must be a multiple of 64')
  const commitTimeoutMs = init.commitTimeoutMs ?? 60_000
  const pollIntervalMs = init.pollIntervalMs ?? 100
  const log = componentLogger(components.logger, 'checkpoint-store')
  const clock = components.clock ?? systemClock()

  const tmpDir = (step: number): string => `${checkpointId(step)}.tmp`

  const writeImage = async (step: number, image: ShardImage, options: AbortOptions): Promise<ShardRecord> => {
    const dir = tmpDir(step)
    await storage.mkdir(dir)
    const rank = image.header.rank
    const file = rankFile(rank)
    await storage.writeFile(`${dir}/${file}`, [image.bytes], options)
    const record: ShardRecord = { rank, file, bytes: image.bytes.byteLength, chunkBytes: image.chunkBytes, crcs: [...image.crcs], dataStart: image.dataStart, header: image.header }
    // The record is what a shared-directory rank 0 commits from, so it too must be all-or-nothing.
    await storage.writeAtomic(`${dir}/${rankRecord(rank)}`, new TextEncoder().encode(JSON.stringify(record)), options)
    log.debug({ step, rank, bytes: record.bytes }, 'shard written')
    return record
  }

  const readRecords = async (step: number, worldSize: number, options: AbortOptions): Promise<ShardRecord[]> => {
    const dir = tmpDir(step)
    const deadline = clock.now() + commitTimeoutMs
    for (;;) {
      throwIfAborted(options.signal)
      const names = new Set(await storage.list(dir))
      const missing = Array.from({ length: worldSize }, (_, r) => r).filter((r) => !names.has(rankRecord(r)))
      if (missing.length === 0) break
      if (clock.now() >= deadline) throw new TimeoutError(`Commit of step ${step}: ranks ${missing.join(', ')} did not write their shards in time`, { details: { step, missing } })
      await clock.sleep(pollIntervalMs, options)
    }
    const records: ShardRecord[] = []
    for (let r = 0; r < worldSize; r++) {
      const path = `${dir}/${rankRecord(r)}`
      const size = (await storage.size(path)) ?? 0
      const parsed = shardRecordSchema.safeParse(JSON.parse(new TextDecoder().decode(await storage.read(path, 0, size, options))))
      if (!parsed.success) throw new CorruptCheckpointError(`${path}: shard record failed validation`, { details: { file: path } })
      records.push(parsed.data as unknown as ShardRecord)
    }
    return records
  }

  const manifestOf = async (id: string, options: AbortOptions = {}): Promise<CheckpointManifest> => {
    const path = `${id}/manifest.json`
    const size = await storage.size(path)
    if (size === undefined) throw new NotFoundError(`Checkpoint ${id} has no manifest`, { details: { id } })
    const m = parseManifest(await storage.read(path, 0, size, options), path)
    if (m.id !== id) throw new CorruptCheckpointError(`${path}: manifest names ${m.id}`, { details: { id, file: path } })
    return m
  }

  const gc = async (committedStep: number): Promise<void> => {
    const names = await storage.list('.')
    const committed = names.filter((n) => ID_RE.test(n)).sort().reverse()
    for (const id of committed.slice(keep)) {
      await storage.remove(id)
      log.debug({ id }, 'old checkpoint removed')
    }
    for (const n of names) {
      const tmp = TMP_RE.exec(n)
      // Unfinished attempts at or before the committed step can never commit any more.
      if ((tmp !== null && Number(tmp[1]) <= committedStep) || TRASH_RE.test(n)) await storage.remove(n)
    }
  }

  const verifyFile = async (id: string, m: CheckpointManifest, f: CheckpointManifest['files'][number], options: AbortOptions): Promise<number> => {
    const path = `${id}/${f.file}`
    const size = await storage.size(path)
    if (size === undefined) throw new CorruptCheckpointError(`${path}: data file is missing`, { details: { id, file: f.file } })
    if (size !== f.bytes) throw new CorruptCheckpointError(`${path}: ${size} bytes, manifest says ${f.bytes} (truncated or extended)`, { details: { id, file: f.file, expected: f.bytes, actual: size } })
    if (f.crcs.length !== Math.ceil(f.bytes / m.chunkBytes)) throw new CorruptCheckpointError(`${path}: manifest lists ${f.crcs.length} chunk CRCs`, { details: { id, file: f.file } })
    // Read several chunks per call to keep the number of syscalls low on large files.
    const step = m.chunkBytes * Math.max(1, Math.floor((16 * 1024 * 1024) / m.chunkBytes))
    for (let off = 0; off < size; off += step) {
      throwIfAborted(options.signal)
      const data = await storage.read(path, off, Math.min(step, size - off), options)
      if (data.byteLength !== Math.min(step, size - off)) throw new CorruptCheckpointError(`${path}: short read at ${off}`, { details: { id, file: f.file, offset: off } })
      verifyChunks(path, data, off, m.chunkBytes, f.crcs)
    }
    return f.crcs.length
  }

  const openReader = async (id: string, options: AbortOptions = {}): Promise<CheckpointReader> => {
    const m = await manifestOf(id, options)
    const files = new Map(m.files.map((f) => [f.file, f]))
    for (const t of m.tensors) if (!files.has(t.file)) throw new CorruptCheckpointError(`${id}: tensor "${t.name}" is in unknown file ${t.file}`, { details: { id, file: t.file } })
    const info = infoOf(m)
    const total = layoutSize(m.layout)
    const sortedPieces = [...m.tensors].sort((a, b) => a.globalOffset - b.globalOffset)

    /** Reads bytes [a, b) of a data file, extended to chunk boundaries and verified. */
    const readVerified = async (file: string, a: number, b: number, o: AbortOptions): Promise<Uint8Array> => {
      const f = files.get(file) as CheckpointManifest['files'][number]
      const start = Math.floor(a / m.chunkBytes) * m.chunkBytes
      const end = Math.min(f.bytes, Math.ceil(b / m.chunkBytes) * m.chunkBytes)
      const path = `${id}/${file}`
      const data = await storage.read(path, start, end - start, o)
      if (data.byteLength !== end - start) throw new CorruptCheckpointError(`${path}: truncated (read ${start + data.byteLength} of ${end} bytes)`, { details: { id, file, offset: start + data.byteLength } })
      verifyChunks(path, data, start, m.chunkBytes, f.crcs)
      return data.subarray(a - start, b - start)
    }

    const readSlice: CheckpointReader['readSlice'] = async (globalOffset, length, o = {}) => {
      if (!Number.isInteger(globalOffset) || !Number.isInteger(length) || globalOffset < 0 || length < 0 || globalOffset + length > total) {
        throw new InvalidParametersError(`Slice [${globalOffset}, +${length}) is outside the state of ${total} elements`)
      }
      const out = o.out ?? new Float32Array(length)
      if (out.length !== length) throw new InvalidParametersError(`Output has ${out.length} elements, slice needs ${length}`)
      const end = globalOffset + length
      let covered = 0
      for (const p of sortedPieces) {
        const a = Math.max(globalOffset, p.globalOffset)
        const b = Math.min(end, p.globalOffset + p.length)
        if (b <= a) continue
        const bytes = await readVerified(p.file, p.offset + (a - p.globalOffset) * 4, p.offset + (b - p.globalOffset) * 4, o)
        new Uint8Array(out.buffer, out.byteOffset + (a - globalOffset) * 4, (b - a) * 4).set(bytes)
        covered += b - a
      }
      if (covered !== length) throw new CorruptCheckpointError(`${id}: slice covers ${covered} of ${length} elements`, { details: { id } })
      return out
    }

    return {
      manifest: m,
      info,
      readSlice,
      async readTensor (name, o = {}) {
        const l = m.layout.find((x) => x.name === name)
        if (l === undefined) throw new NotFoundError(`Checkpoint ${id} has no tensor "${name}"`, { details: { id, tensor: name } })
        return await readSlice(l.globalOffset, shapeSize(l.shape), o)
      },
      async readState (o = {}) {
        // One verified read per file; tensors stored whole in one piece become views of it.
        const pieces: Array<{ name: string, tensorOffset: number, data: Float32Array }> = []
        for (const f of m.files) {
          const bytes = await readVerified(f.file, 0, f.bytes, o)
          for (const t of m.tensors) {
            if (t.file !== f.file) continue
            if (t.offset + t.length * 4 > bytes.byteLength) throw new CorruptCheckpointError(`${id}: tensor "${t.name}" runs past the end of ${f.file}`, { details: { id, file: f.file } })
            pieces.push({ name: t.name, tensorOffset: t.tensorOffset, data: new Float32Array(bytes.buffer, bytes.byteOffset + t.offset, t.length) })
          }
        }
        return assembleState(m.layout, m.meta, pieces)
      }
    }
  }

  const store: CheckpointStore = {
    storage,
    async save (state, options = {}) {
      createStateDict(state.tensors, state.meta)
      const step = options.step ?? state.meta.step
      const layout = layoutOf(state.tensors)
      const pieces = piecesOfRange(layout, { offset: 0, length: layoutSize(layout) }, { tensors: state.tensors })
      await store.writeShard({ step, meta: state.meta, layout, pieces }, options)
      return await store.commit(step, { ...options, worldSize: 1 })
    },
    async writeShard (input, options = {}) {
      const rank = input.rank ?? 0
      const worldSize = input.worldSize ?? 1
      const { plan, bytes } = buildShardFile({ rank, worldSize, meta: input.meta, layout: input.layout, pieces: input.pieces })
      return await writeImage(input.step, { header: plan.header, dataStart: plan.dataStart, bytes, chunkBytes, crcs: chunkCrcs(bytes, chunkBytes) }, options)
    },
    async writeShardImage (step, image, options = {}) {
      if (image.crcs.length !== Math.ceil(image.bytes.byteLength / image.chunkBytes)) throw new InvalidParametersError('Image checksums do not match its size')
      return await writeImage(step, image, options)
    },
    async commit (step, options) {
      const worldSize = options.worldSize
      if (!Number.isInteger(worldSize) || worldSize < 1) throw new InvalidParametersError(`Invalid world size ${worldSize}`)
      const records = options.records !== undefined ? [...options.records] : await readRecords(step, worldSize, options)
      if (records.length !== worldSize) throw new InvalidParametersError(`Commit of step ${step} got ${records.length} records for world size ${worldSize}`)
      records.sort((a, b) => a.rank - b.rank)
      const first = records[0] as ShardRecord
      const chunk = first.chunkBytes
      const dir = tmpDir(step)
      const tensors: ManifestTensor[] = []
      // Linear in the number of tensors: a model with thousands of them must not make the commit quadratic.
      const firstLayout = JSON.stringify(first.header.layout)
      const byName = new Map(first.header.layout.map((l) => [l.name, l]))
      for (const r of records) {
        if (r.chunkBytes !== chunk) throw new InvalidParametersError('Ranks used different chunk sizes')
        if (r !== first && JSON.stringify(r.header.layout) !== firstLayout) throw new InvalidParametersError(`Rank ${r.rank} wrote a different layout`)
        const size = await storage.size(`${dir}/${r.file}`)
        if (size !== r.bytes) throw new CorruptCheckpointError(`${dir}/${r.file}: ${size ?? 'missing'} bytes, rank ${r.rank} reported ${r.bytes}`, { details: { step, rank: r.rank } })
        for (const e of r.header.entries) {
          const l = byName.get(e.name)
          if (l === undefined) throw new CorruptCheckpointError(`Rank ${r.rank} stored a piece of unknown tensor "${e.name}"`, { details: { step, rank: r.rank } })
          tensors.push({ name: e.name, shape: [...l.shape], dtype: 'float32', file: r.file, offset: r.dataStart + e.offset, length: e.length, tensorOffset: e.tensorOffset, globalOffset: e.globalOffset })
        }
      }
      checkCoverage(first.header.layout, tensors)
      const id = checkpointId(step)
      const manifest: CheckpointManifest = {
        format: 'phalanx-checkpoint/1',
        version: 1,
        id,
        step,
        epoch: first.header.meta.epoch,
        createdAt: Math.round(clock.now()),
        meta: first.header.meta,
        worldSize,
        chunkBytes: chunk,
        layout: first.header.layout,
        files: records.map((r) => ({ file: r.file, rank: r.rank, bytes: r.bytes, crcs: [...r.crcs] })),
        tensors
      }
      throwIfAborted(options.signal)
      await storage.writeAtomic(`${dir}/manifest.json`, encodeManifest(manifest))
      const existing = await storage.size(`${id}/manifest.json`)
      let trash: string | undefined
      if (existing !== undefined || (await storage.list(id)).length > 0) {
        // Re-committing a step (e.g. after a rollback): move the old one aside, never delete first.
        trash = `${id}.trash-${Math.round(clock.now())}`
        await storage.rename(id, trash)
      }
      await storage.rename(dir, id)
      await storage.writeAtomic('LATEST', new TextEncoder().encode(`${id}\n`))
      if (trash !== undefined) await storage.remove(trash)
      await gc(step)
      const info = infoOf(manifest)
      log.info({ id, step, bytes: info.bytes, worldSize }, 'checkpoint committed')
      return info
    },
    async list (options = {}) {
      const ids = (await storage.list('.')).filter((n) => ID_RE.test(n)).sort().reverse()
      const out: CheckpointInfo[] = []
      for (const id of ids) {
        try {
          out.push(infoOf(await manifestOf(id, options)))
        } catch (err) {
          log.warn({ id, err: errorSummary(err) }, 'checkpoint has no readable manifest')
        }
      }
      return out
    },
    async latestId () {
      const size = await storage.size('LATEST')
      if (size === undefined) return undefined
      const id = new TextDecoder().decode(await storage.read('LATEST', 0, size)).trim()
      return ID_RE.test(id) ? id : undefined
    },
    manifest: manifestOf,
    async verify (id, options = {}) {
      const m = await manifestOf(id, options)
      let chunks = 0
      for (const f of m.files) chunks += await verifyFile(id, m, f, options)
      for (const f of m.files) {
        // The header must agree with the manifest: a file swapped between checkpoints would pass its CRCs only if the manifest was forged.
        const path = `${id}/${f.file}`
        const len = readHeaderLength(await storage.read(path, 0, 16, options), path)
        const { header } = parseShardHeader(await storage.read(path, 0, 16 + len, options), path)
        if (header.meta.step !== m.step) throw new CorruptCheckpointError(`${id}/${f.file}: header is of step ${header.meta.step}`, { details: { id, file: f.file } })
      }
      return { id, files: m.files.length, chunks, bytes: m.files.reduce((a, f) => a + f.bytes, 0) }
    },
    open: openReader,
    async restore (options = {}) {
      const ids = options.id !== undefined ? [options.id] : (await storage.list('.')).filter((n) => ID_RE.test(n)).sort().reverse()
      const skipped: SkippedCheckpoint[] = []
      for (const id of ids) {
        throwIfAborted(options.signal)
        try {
          const reader = await openReader(id, options)
          const state = await reader.readState(options)
          if (skipped.length > 0) log.warn({ id, skipped: skipped.map((s) => s.id) }, 'restored an older checkpoint')
          return { info: reader.info, state, skipped }
        } catch (err) {
          const name = (err as Error).name
          if (name !== ChecksumMismatchError.name && name !== CorruptCheckpointError.name && name !== NotFoundError.name) throw err
          const summary = errorSummary(err)
          skipped.push({ id, error: summary })
          log.error({ id, err: summary }, 'skipping checkpoint that does not verify')
        }
      }
      throw new NotFoundError(skipped.length > 0 ? `No checkpoint verifies (${skipped.length} skipped)` : 'No committed checkpoint', { details: { skipped: skipped.map((s) => s.id) } })
    },
    async remove (id) {
      if (!ID_RE.test(id)) throw new InvalidParametersError(`Not a checkpoint id: ${id}`)
      await storage.remove(id)
    },
    portable (this: unknown) {
      // A clock (e.g. a test's fake one) cannot cross threads, and commits stamp `createdAt` with it.
      if (this !== store || components.clock !== undefined) return undefined
      const local = storage.describe?.()
      return local === undefined ? undefined : { storage: local, keep, chunkBytes, commitTimeoutMs, pollIntervalMs }
    }
  }
  return store
}
