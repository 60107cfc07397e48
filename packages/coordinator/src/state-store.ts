import { closeSync, fsyncSync, openSync, readFileSync, renameSync, truncateSync, writeSync, existsSync, mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { bytesOf, ClosedError, componentLogger, crc32c, InvalidParametersError, throwIfAborted, type AbortOptions, type Logger } from '@phalanx/core'

/** A member as the store remembers it, so a restarted coordinator can call it back. */
export interface StoredMember {
  id: string
  address: string
}

/**
 * One durable fact of the job. `commit` records are what the two-phase commit relies on: a step is
 * committed exactly when its record is durable. `epoch` records keep epochs increasing across
 * coordinator restarts. `snapshot` replaces everything before it (written by compaction).
 */
export type StoreRecord =
  | { type: 'commit', step: number, epoch: number, cursor: number }
  | { type: 'epoch', epoch: number, members: StoredMember[] }
  | { type: 'snapshot', epoch: number, committed: number, cursor: number, members: StoredMember[] }

/** Options of {@link StateStore.append}. */
export interface AppendOptions extends AbortOptions {
  /** Wait until the record is on stable storage (fsync) before resolving. @default false */
  sync?: boolean
}

/**
 * Durable, ordered record of the coordinator's decisions. Small on purpose so an etcd (or Raft)
 * implementation can follow: append, read everything back, replace everything by a snapshot.
 */
export interface StateStore {
  /** Appends one record; with `sync` it is durable when the promise resolves. */
  append(record: StoreRecord, options?: AppendOptions): Promise<void>
  /** Every record still in the store, oldest first (a `snapshot` first after compaction). */
  replay(options?: AbortOptions): Promise<StoreRecord[]>
  /** Atomically replaces the whole store by `snapshot`. */
  compact(snapshot: Extract<StoreRecord, { type: 'snapshot' }>, options?: AbortOptions): Promise<void>
  /** Releases the file. Idempotent. */
  close(): Promise<void>
}

/** The job state a store's records add up to. */
export interface RecoveredState {
  /** Highest epoch recorded (0 when none). */
  epoch: number
  /** Committed steps. */
  committed: number
  /** Global sample cursor after the last committed step. */
  cursor: number
  /** Members of the last recorded epoch. */
  members: StoredMember[]
}

/** Folds records into the state they describe. */
export function recoverState (records: readonly StoreRecord[]): RecoveredState {
  const state: RecoveredState = { epoch: 0, committed: 0, cursor: 0, members: [] }
  for (const r of records) {
    if (r.type === 'snapshot') {
      Object.assign(state, { epoch: r.epoch, committed: r.committed, cursor: r.cursor, members: r.members })
    } else if (r.type === 'epoch') {
      state.epoch = Math.max(state.epoch, r.epoch)
      state.members = r.members
    } else if (r.step + 1 > state.committed) {
      state.committed = r.step + 1
      state.cursor = r.cursor
      state.epoch = Math.max(state.epoch, r.epoch)
    }
  }
  return state
}

/** A store that keeps records in memory: for tests and throw-away runs (nothing survives the process). */
export function createMemoryStateStore (): StateStore {
  let records: StoreRecord[] = []
  return {
    async append (record) { records.push(structuredClone(record)) },
    async replay () { return structuredClone(records) },
    async compact (snapshot) { records = [structuredClone(snapshot)] },
    async close () {}
  }
}

/** Options of {@link createWalStateStore}. */
export interface WalStateStoreInit {
  /** Path of the log file; created (with its directory) when missing. */
  path: string
  /**
   * Largest record payload accepted, bytes; a length field above it marks a corrupt tail.
   * @default 1 MiB
   */
  maxRecordBytes?: number
}

const HEADER_BYTES = 8

function isRecord (value: unknown): value is StoreRecord {
  if (typeof value !== 'object' || value === null) return false
  const t = (value as { type?: unknown }).type
  return t === 'commit' || t === 'epoch' || t === 'snapshot'
}

function encode (record: StoreRecord): Buffer {
  const payload = Buffer.from(JSON.stringify(record), 'utf8')
  const out = Buffer.allocUnsafe(HEADER_BYTES + payload.length)
  out.writeUInt32LE(payload.length, 0)
  out.writeUInt32LE(crc32c(bytesOf(payload)), 4)
  payload.copy(out, HEADER_BYTES)
  return out
}

/** Parses a log image; returns the good records and the byte length they span. */
function parse (data: Buffer, maxRecordBytes: number): { records: StoreRecord[], goodBytes: number, problem?: string } {
  const records: StoreRecord[] = []
  let off = 0
  while (off < data.length) {
    if (data.length - off < HEADER_BYTES) return { records, goodBytes: off, problem: 'torn record header' }
    const length = data.readUInt32LE(off)
    const crc = data.readUInt32LE(off + 4)
    if (length > maxRecordBytes) return { records, goodBytes: off, problem: `record length ${length} exceeds the cap` }
    if (data.length - off - HEADER_BYTES < length) return { records, goodBytes: off, problem: 'torn record payload' }
    const payload = data.subarray(off + HEADER_BYTES, off + HEADER_BYTES + length)
    if (crc32c(payload) !== crc) return { records, goodBytes: off, problem: 'record checksum mismatch' }
    let value: unknown
    try { value = JSON.parse(payload.toString('utf8')) } catch { return { records, goodBytes: off, problem: 'record is not JSON' } }
    if (!isRecord(value)) return { records, goodBytes: off, problem: 'record has an unknown type' }
    records.push(value)
    off += HEADER_BYTES + length
  }
  return { records, goodBytes: off }
}

/**
 * The embedded {@link StateStore}: an append-only write-ahead log, one record per
 * `[u32 length][u32 crc32c][JSON payload]` (little-endian). On open a torn or corrupt tail (a crash in
 * the middle of a write, a flipped bit) is detected, logged and truncated, keeping every whole record
 * before it. `sync` appends are fsynced; compaction writes a temporary file, fsyncs it, renames it
 * over the log and fsyncs the directory.
 */
export function createWalStateStore (init: WalStateStoreInit, components: { logger?: Logger } = {}): StateStore {
  const log = componentLogger(components.logger, 'wal')
  const maxRecordBytes = init.maxRecordBytes ?? 1024 * 1024
  if (init.path.length === 0) throw new InvalidParametersError('WAL path must not be empty')
  mkdirSync(dirname(init.path), { recursive: true })
  let records: StoreRecord[] = []
  if (existsSync(init.path)) {
    const parsed = parse(readFileSync(init.path), maxRecordBytes)
    records = parsed.records
    if (parsed.problem !== undefined) {
      log.warn({ path: init.path, keptRecords: records.length, truncatedAt: parsed.goodBytes, problem: parsed.problem }, 'WAL tail is torn or corrupt; truncating it')
      truncateSync(init.path, parsed.goodBytes)
    }
  }
  let fd: number | undefined = openSync(init.path, 'a')

  const syncDir = (): void => {
    const dfd = openSync(dirname(init.path), 'r')
    try { fsyncSync(dfd) } finally { closeSync(dfd) }
  }
  const openFd = (): number => {
    if (fd === undefined) throw new ClosedError('WAL is closed')
    return fd
  }

  return {
    async append (record, options = {}) {
      throwIfAborted(options.signal)
      const f = openFd()
      const buf = encode(record)
      // Sync writes: the records are small and the commit record must be durable before the broadcast.
      let off = 0
      while (off < buf.length) off += writeSync(f, buf, off, buf.length - off)
      if (options.sync === true) fsyncSync(f)
      records.push(structuredClone(record))
    },
    async replay (options = {}) {
      throwIfAborted(options.signal)
      return structuredClone(records)
    },
    async compact (snapshot, options = {}) {
      throwIfAborted(options.signal)
      openFd()
      const tmp = `${init.path}.tmp`
      const tfd = openSync(tmp, 'w')
      try {
        const buf = encode(snapshot)
        let off = 0
        while (off < buf.length) off += writeSync(tfd, buf, off, buf.length - off)
        fsyncSync(tfd)
      } finally { closeSync(tfd) }
      closeSync(openFd())
      fd = undefined
      renameSync(tmp, init.path)
      syncDir()
      fd = openSync(init.path, 'a')
      records = [structuredClone(snapshot)]
    },
    async close () {
      if (fd !== undefined) { closeSync(fd); fd = undefined }
    }
  }
}
