import { mkdir, open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import {
  CorruptCheckpointError, InvalidParametersError, NotFoundError, crc32c,
  componentLogger, systemClock, decodeTensors,
  type AbortOptions, type Clock, type Endpoint, type EndpointInit, type Logger, type OutboundMessage, type Transport
} from '@phalanx/core'
import { encodeManifest, decodeManifestBody } from './manifest.js'

/** Message types of the holder protocol. */
export const HOLDER_MESSAGES = Object.freeze({
  prepare: 'snap.prepare',
  chunk: 'snap.chunk',
  commit: 'snap.commit',
  latest: 'snap.latest',
  read: 'snap.read',
  list: 'snap.list'
})

/** A committed snapshot as the holder describes it. */
export interface HeldSnapshot {
  readonly owner: string
  readonly slot: number
  readonly step: number
  readonly bytes: number
  readonly chunkBytes: number
  readonly crcs: readonly number[]
  /** Unix ms of the commit. */
  readonly committedAt: number
}

/** Tunables of {@link createSnapshotHolder}. */
export interface SnapshotHolderInit {
  /**
   * Directory of the slot files: `<dir>/<owner>/slot-<i>.bin` with `slot-<i>.json` manifests. Use
   * tmpfs so snapshots cost RAM bandwidth, not disk, and survive any process crash.
   * @default `/dev/shm/phalanx-<job>` (the caller passes the job)
   */
  dir: string
  /**
   * Slots per owner: the newest committed snapshot is never overwritten, so with 2 slots the last two
   * committed snapshots are kept except while a new one is being received.
   * @default 2
   */
  slots?: number
  /**
   * Largest snapshot accepted, bytes.
   * @default 64 GiB
   */
  maxSnapshotBytes?: number
}

/** Collaborators of {@link createSnapshotHolder}. */
export interface SnapshotHolderComponents {
  /** The endpoint trainers reach the holder at (an `ipc://` ZeroMQ endpoint in production). */
  endpoint: Endpoint
  /** @default silent */
  logger?: Logger
  /** @default the system clock */
  clock?: Clock
}

/**
 * The per-host snapshot holder (REFT's snapshot management process): it lives outside the trainers'
 * process group, receives snapshots with a prepare / chunk / commit protocol (a snapshot counts only
 * once committed; a trainer dying mid-transfer leaves the previous one), keeps each owner's newest
 * committed snapshots in tmpfs slot files, and serves restores. On start it re-indexes the slots
 * from their manifests, so a restarted holder serves what the previous one committed.
 */
export interface SnapshotHolder extends AsyncDisposable {
  /** Re-indexes slots and registers the protocol handlers. Idempotent. */
  start(options?: AbortOptions): Promise<void>
  /** Unregisters handlers and closes open slot files (the endpoint stays open). Idempotent. */
  stop(options?: AbortOptions): Promise<void>
  /** Committed snapshots, per owner, newest first. */
  list(): HeldSnapshot[]
}

const OWNER_RE = /^[A-Za-z0-9._-]{1,64}$/
const nonneg = z.number().int().nonnegative()
const prepareSchema = z.object({ owner: z.string().regex(OWNER_RE), step: nonneg, bytes: nonneg, chunkBytes: z.number().int().min(64).max(8 * 1024 * 1024), crcs: z.array(nonneg) }).strict()
const chunkSchema = z.object({ owner: z.string().regex(OWNER_RE), transfer: nonneg, offset: nonneg }).strict()
const commitSchema = z.object({ owner: z.string().regex(OWNER_RE), transfer: nonneg }).strict()
const ownerSchema = z.object({ owner: z.string().regex(OWNER_RE) }).strict()
const readSchema = z.object({ owner: z.string().regex(OWNER_RE), step: nonneg, offset: nonneg, length: z.number().int().positive().max(8 * 1024 * 1024) }).strict()
const slotManifestSchema = z.object({ owner: z.string(), slot: nonneg, step: nonneg, bytes: nonneg, chunkBytes: z.number().int().positive(), crcs: z.array(nonneg), committedAt: z.number() }).strict()

function parse<T> (schema: z.ZodType<T>, value: unknown, what: string): T {
  const r = schema.safeParse(value)
  if (!r.success) throw new InvalidParametersError(`Invalid ${what} request`, { details: { issues: r.error.issues.slice(0, 3).map((i) => `${i.path.join('.')}: ${i.message}`) } })
  return r.data
}

interface Transfer {
  id: number
  slot: number
  step: number
  bytes: number
  chunkBytes: number
  crcs: number[]
  received: Uint8Array
  remaining: number
  fh: FileHandle
}

interface OwnerState {
  slots: Array<HeldSnapshot | undefined>
  transfer: Transfer | undefined
}

/** Creates a {@link SnapshotHolder} serving on `components.endpoint`. */
export function createSnapshotHolder (init: SnapshotHolderInit, components: SnapshotHolderComponents): SnapshotHolder {
  const slotCount = init.slots ?? 2
  if (!Number.isInteger(slotCount) || slotCount < 2) throw new InvalidParametersError('A holder needs at least 2 slots')
  const maxBytes = init.maxSnapshotBytes ?? 64 * 2 ** 30
  const endpoint = components.endpoint
  const log = componentLogger(components.logger, 'snapshot-holder')
  const clock = components.clock ?? systemClock()
  const owners = new Map<string, OwnerState>()
  let unhandle: Array<() => void> = []
  let nextTransfer = 1
  let started = false

  const slotBin = (owner: string, slot: number): string => join(init.dir, owner, `slot-${slot}.bin`)
  const slotJson = (owner: string, slot: number): string => join(init.dir, owner, `slot-${slot}.json`)

  const ownerState = (owner: string): OwnerState => {
    let s = owners.get(owner)
    if (s === undefined) {
      s = { slots: Array.from({ length: slotCount }, () => undefined), transfer: undefined }
      owners.set(owner, s)
    }
    return s
  }

  const newest = (s: OwnerState): HeldSnapshot | undefined => {
    let best: HeldSnapshot | undefined
    for (const h of s.slots) if (h !== undefined && (best === undefined || h.committedAt > best.committedAt || (h.committedAt === best.committedAt && h.step > best.step))) best = h
    return best
  }

  const abandon = async (s: OwnerState): Promise<void> => {
    const t = s.transfer
    if (t === undefined) return
    s.transfer = undefined
    await t.fh.close().catch(() => {})
  }

  const reindex = async (): Promise<void> => {
    let names: string[] = []
    try {
      names = await readdir(init.dir)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    for (const owner of names.filter((n) => OWNER_RE.test(n))) {
      const s = ownerState(owner)
      for (let slot = 0; slot < slotCount; slot++) {
        try {
          const bytes = await readSmall(slotJson(owner, slot))
          if (bytes === undefined) continue
          const m = slotManifestSchema.parse(decodeManifestBody(bytes, slotJson(owner, slot)))
          const size = (await stat(slotBin(owner, slot))).size
          if (size !== m.bytes || m.owner !== owner || m.slot !== slot) throw new CorruptCheckpointError(`Slot ${slot} of ${owner} has ${size} bytes, manifest says ${m.bytes}`)
          s.slots[slot] = m
        } catch (err) {
          log.warn({ owner, slot, err: { name: (err as Error).name, message: (err as Error).message } }, 'slot not re-indexed')
        }
      }
    }
    log.info({ owners: owners.size, snapshots: api.list().length }, 'slots re-indexed')
  }

  const onPrepare = async (body: unknown): Promise<OutboundMessage> => {
    const req = parse(prepareSchema, body, 'prepare')
    if (req.bytes > maxBytes) throw new InvalidParametersError(`Snapshot of ${req.bytes} bytes exceeds the holder's cap of ${maxBytes}`)
    if (req.crcs.length !== Math.ceil(req.bytes / req.chunkBytes)) throw new InvalidParametersError('Checksum count does not match the snapshot size')
    const s = ownerState(req.owner)
    await abandon(s)
    const keepSlot = newest(s)?.slot
    // Prefer an empty slot, then the oldest committed one; never the newest committed snapshot.
    let slot = s.slots.findIndex((h, i) => h === undefined && i !== keepSlot)
    if (slot < 0) {
      let oldest: HeldSnapshot | undefined
      for (const h of s.slots) if (h !== undefined && h.slot !== keepSlot && (oldest === undefined || h.committedAt < oldest.committedAt)) oldest = h
      slot = (oldest as HeldSnapshot).slot
    }
    s.slots[slot] = undefined
    await mkdir(join(init.dir, req.owner), { recursive: true })
    // The manifest goes first: from here on the slot's bytes are not a committed snapshot.
    await rm(slotJson(req.owner, slot), { force: true })
    const fh = await open(slotBin(req.owner, slot), 'a+').then(async (h) => { await h.close(); return await open(slotBin(req.owner, slot), 'r+') })
    await fh.truncate(req.bytes)
    const chunks = req.crcs.length
    const t: Transfer = { id: nextTransfer++, slot, step: req.step, bytes: req.bytes, chunkBytes: req.chunkBytes, crcs: req.crcs, received: new Uint8Array(chunks), remaining: chunks, fh }
    s.transfer = t
    log.debug({ owner: req.owner, step: req.step, slot, bytes: req.bytes }, 'snapshot transfer prepared')
    return { type: 'snap.prepared', body: { transfer: t.id, slot } }
  }

  const onChunk = async (body: unknown, frames: readonly Uint8Array[]): Promise<OutboundMessage> => {
    const req = parse(chunkSchema, body, 'chunk')
    const t = owners.get(req.owner)?.transfer
    if (t === undefined || t.id !== req.transfer) throw new NotFoundError(`No transfer ${req.transfer} for ${req.owner}`)
    const data = frames[0]
    if (frames.length !== 1 || data === undefined) throw new InvalidParametersError('A chunk message carries exactly one frame')
    if (req.offset % t.chunkBytes !== 0 || req.offset + data.byteLength > t.bytes) throw new InvalidParametersError(`Chunk at ${req.offset} of ${data.byteLength} bytes is outside the snapshot`)
    for (let off = 0; off < data.byteLength; off += t.chunkBytes) {
      const index = (req.offset + off) / t.chunkBytes
      const piece = data.subarray(off, Math.min(off + t.chunkBytes, data.byteLength))
      const full = Math.min(t.chunkBytes, t.bytes - index * t.chunkBytes)
      if (piece.byteLength !== full) throw new InvalidParametersError(`Chunk ${index} is partial`)
      const crc = crc32c(piece)
      if (crc !== t.crcs[index]) throw new CorruptCheckpointError(`Chunk ${index} of ${req.owner}'s step ${t.step} fails its CRC-32C`, { details: { owner: req.owner, chunk: index } })
    }
    let done = 0
    while (done < data.byteLength) {
      const { bytesWritten } = await t.fh.write(data, done, data.byteLength - done, req.offset + done)
      done += bytesWritten
    }
    for (let off = 0; off < data.byteLength; off += t.chunkBytes) {
      const index = (req.offset + off) / t.chunkBytes
      if (t.received[index] === 0) { t.received[index] = 1; t.remaining-- }
    }
    return { type: 'snap.chunk.ok' }
  }

  const onCommit = async (body: unknown): Promise<OutboundMessage> => {
    const req = parse(commitSchema, body, 'commit')
    const s = owners.get(req.owner)
    const t = s?.transfer
    if (s === undefined || t === undefined || t.id !== req.transfer) throw new NotFoundError(`No transfer ${req.transfer} for ${req.owner}`)
    if (t.remaining !== 0) throw new CorruptCheckpointError(`Commit of step ${t.step} with ${t.remaining} chunks missing`, { details: { owner: req.owner, missing: t.remaining } })
    s.transfer = undefined
    await t.fh.sync()
    await t.fh.close()
    const held: HeldSnapshot = { owner: req.owner, slot: t.slot, step: t.step, bytes: t.bytes, chunkBytes: t.chunkBytes, crcs: t.crcs, committedAt: Math.max(clock.now(), (newest(s)?.committedAt ?? 0) + 1e-3) }
    const tmp = `${slotJson(req.owner, t.slot)}.tmp`
    const fh = await open(tmp, 'w')
    try {
      await fh.writeFile(encodeManifest(held))
      await fh.sync()
    } finally {
      await fh.close()
    }
    await rename(tmp, slotJson(req.owner, t.slot))
    s.slots[t.slot] = held
    log.debug({ owner: req.owner, step: t.step, slot: t.slot }, 'snapshot committed')
    return { type: 'snap.committed', body: { step: t.step, slot: t.slot } }
  }

  const onLatest = (body: unknown): OutboundMessage => {
    const req = parse(ownerSchema, body, 'latest')
    const s = owners.get(req.owner)
    const h = s === undefined ? undefined : newest(s)
    if (h === undefined) throw new NotFoundError(`No committed snapshot for ${req.owner}`, { details: { owner: req.owner } })
    return { type: 'snap.latest.ok', body: { ...h, crcs: [...h.crcs] } }
  }

  const onRead = async (body: unknown): Promise<OutboundMessage> => {
    const req = parse(readSchema, body, 'read')
    const h = owners.get(req.owner)?.slots.find((x) => x?.step === req.step)
    if (h === undefined) throw new NotFoundError(`Step ${req.step} of ${req.owner} is not held`, { details: { owner: req.owner, step: req.step } })
    if (req.offset + req.length > h.bytes || req.length % 4 !== 0) throw new InvalidParametersError('Read outside the snapshot')
    const out = new Float32Array(req.length / 4)
    const fh = await open(slotBin(req.owner, h.slot), 'r')
    try {
      const bytes = new Uint8Array(out.buffer)
      let done = 0
      while (done < req.length) {
        const { bytesRead } = await fh.read(bytes, done, req.length - done, req.offset + done)
        if (bytesRead === 0) throw new CorruptCheckpointError(`Slot ${h.slot} of ${req.owner} is truncated`)
        done += bytesRead
      }
    } finally {
      await fh.close()
    }
    return { type: 'snap.read.ok', body: { step: h.step }, tensors: [{ name: 'bytes', shape: [out.length], dtype: 'float32', data: out }] }
  }

  const api: SnapshotHolder = {
    async start () {
      if (started) return
      started = true
      await mkdir(init.dir, { recursive: true })
      await reindex()
      unhandle = [
        endpoint.handle(HOLDER_MESSAGES.prepare, async (env) => await onPrepare(env.header.body)),
        endpoint.handle(HOLDER_MESSAGES.chunk, async (env) => await onChunk(env.header.body, env.frames)),
        endpoint.handle(HOLDER_MESSAGES.commit, async (env) => await onCommit(env.header.body)),
        endpoint.handle(HOLDER_MESSAGES.latest, (env) => onLatest(env.header.body)),
        endpoint.handle(HOLDER_MESSAGES.read, async (env) => await onRead(env.header.body)),
        endpoint.handle(HOLDER_MESSAGES.list, () => ({ type: 'snap.list.ok', body: { snapshots: api.list().map((h) => ({ ...h, crcs: [] })) } }))
      ]
    },
    async stop () {
      if (!started) return
      started = false
      for (const u of unhandle) u()
      unhandle = []
      for (const s of owners.values()) await abandon(s)
    },
    list () {
      const out: HeldSnapshot[] = []
      for (const s of owners.values()) out.push(...s.slots.filter((h): h is HeldSnapshot => h !== undefined).sort((a, b) => b.committedAt - a.committedAt))
      return out
    },
    async [Symbol.asyncDispose] () { await api.stop() }
  }
  return api
}

async function readSmall (path: string): Promise<Uint8Array | undefined> {
  let fh: FileHandle | undefined
  try {
    fh = await open(path, 'r')
    return new Uint8Array(await fh.readFile())
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  } finally {
    await fh?.close()
  }
}

/** Options of {@link runHolder}. */
export interface RunHolderOptions {
  /** Job id (also names the default directory). */
  job: string
  /** Where the holder listens, e.g. `ipc:///tmp/phalanx-<job>-holder.sock`. */
  listen: string
  /** The transport to open the endpoint with (ZeroMQ in production). */
  transport: Transport
  /** @default `/dev/shm/phalanx-<job>` */
  dir?: string
  /** @default `holder` */
  id?: string
  /** @default 2 */
  slots?: number
  /** Extra endpoint options (limits, queue sizes). */
  endpoint?: Partial<EndpointInit>
  logger?: Logger
  clock?: Clock
}

/** A running holder process part: its endpoint and the holder. */
export interface RunningHolder extends AsyncDisposable {
  readonly endpoint: Endpoint
  readonly holder: SnapshotHolder
  /** Stops the holder and closes the endpoint. Idempotent. */
  close(): Promise<void>
}

/** The default slot directory of a job's holder. */
export function defaultHolderDir (job: string): string {
  return join('/dev/shm', `phalanx-${job}`)
}

/**
 * Composes a holder process: opens the endpoint, starts the holder (re-indexing its slots). A CLI
 * or a test fixture passes the transport (`@phalanx/transport/zmq`).
 */
export async function runHolder (options: RunHolderOptions, abort: AbortOptions = {}): Promise<RunningHolder> {
  const endpoint = await options.transport.open({ ...options.endpoint, id: options.id ?? 'holder', job: options.job, listen: options.listen, ...(options.logger !== undefined ? { logger: options.logger } : {}) }, abort)
  const holder = createSnapshotHolder({ dir: options.dir ?? defaultHolderDir(options.job), slots: options.slots ?? 2 }, {
    endpoint, ...(options.logger !== undefined ? { logger: options.logger } : {}), ...(options.clock !== undefined ? { clock: options.clock } : {})
  })
  try {
    await holder.start(abort)
  } catch (err) {
    await endpoint.close()
    throw err
  }
  let closed = false
  const running: RunningHolder = {
    endpoint,
    holder,
    async close () {
      if (closed) return
      closed = true
      await holder.stop()
      await endpoint.close()
    },
    async [Symbol.asyncDispose] () { await running.close() }
  }
  return running
}

/** Decodes the single raw-bytes frame of a holder read reply. */
export function frameBytes (envelope: Parameters<typeof decodeTensors>[0]): Uint8Array {
  const [t] = decodeTensors(envelope)
  if (t === undefined) throw new CorruptCheckpointError('Holder reply carries no data')
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)
}
