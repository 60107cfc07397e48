import { setMaxListeners } from 'node:events'
import { z } from 'zod'
import {
  ChecksumMismatchError, ClosedError, InvalidParametersError, MalformedMessageError, NotFoundError, TimeoutError,
  bytesOf, componentLogger, crc32c, decodeTensors, raceSignal, systemClock, throwIfAborted,
  type AbortOptions, type Clock, type Endpoint, type Envelope, type NamedTensor, type PeerId
} from '@phalanx/core'
import type { ErasureCodec } from './codec.js'
import {
  DEFAULT_CHUNK_BYTES, chunkCount, chunkRange, encodeOwnPieces, parsePieceLayout, pieceBytes, type PieceLayout
} from './layout.js'
import { createSchemeCodec, pieceHolder, type ErasureScheme, type SchemeCodecComponents } from './placement.js'
import { assertCodecMatches } from './stripe.js'

/** Message types of the piece exchange between the holders of one group. */
export const ERASURE_MESSAGES = Object.freeze({
  /** owner → holder (request): one piece of the owner's snapshot and its layout; reply: an ack once stored and verified. */
  piece: 'ec.piece',
  /** member → every member: all pieces of this member's snapshot of a version are stored (phase 1 vote). */
  prepared: 'ec.prepared',
  /** any → member (request): the versions it holds. */
  versions: 'ec.versions',
  /** rebuilder → holder (request): the layout of the piece it holds of an owner's version. */
  layout: 'ec.layout',
  /** rebuilder → holder (request): one chunk of the piece it holds of an owner's version. */
  fetch: 'ec.fetch'
})

/** One protection group as the exchange sees it: member endpoint ids in order and the scheme. */
export interface ExchangeGroup {
  /** Endpoint ids of the members' holders; a member's index is its position here. */
  readonly members: readonly PeerId[]
  readonly scheme: ErasureScheme
}

/** Counters and gauges of a member, for logs and metrics export. */
export interface ErasureMetrics {
  /** Bytes of own snapshots held whole (all kept versions, padding included). */
  snapshotBytes: number
  /** Bytes of other members' pieces held, data and parity (all kept versions). */
  pieceBytes: number
  /** Of {@link pieceBytes}, the parity pieces. */
  parityBytes: number
  /** Versions held (committed or in flight). */
  versionsHeld: number
  /** Newest committed version, or -1. */
  committedVersion: number
  snapshotsCommitted: number
  /** Snapshots not committed: a previous one still in flight, a peer unreachable or a timeout. */
  snapshotsSkipped: number
  /** Bytes of own snapshots encoded into parity, and the time encoding (and checksumming) took. */
  encodeBytes: number
  encodeMs: number
  /** Chunks served to rebuilders. */
  chunksServed: number
}

/** Tunables of {@link createErasureMember}. */
export interface ErasureMemberInit {
  readonly group: ExchangeGroup
  /** This member's endpoint id (must be in `group.members`). */
  readonly self: PeerId
  /** Addresses to connect the endpoint to, by member id. @default none (the caller connected the endpoint) */
  readonly addresses?: Readonly<Record<PeerId, string>>
  /**
   * How long a snapshot may take to be stored and voted by every member before it is skipped, ms.
   * @default 10000
   */
  readonly prepareTimeoutMs?: number
  /**
   * Committed versions kept (older ones are freed when a newer one commits).
   * @default 2
   */
  readonly keep?: number
  /**
   * Bytes of a chunk: the unit of CRC-32C checks, rebuild fetches and decoding (a multiple of 8, at
   * most one wire frame).
   * @default 8388608 (8 MiB)
   */
  readonly chunkBytes?: number
}

/** Collaborators of {@link createErasureMember}. */
export interface ErasureMemberComponents extends SchemeCodecComponents {
  readonly endpoint: Endpoint
  /** The codec; every member of a group must use the same one. @default from the scheme ({@link createSchemeCodec}) */
  readonly codec?: ErasureCodec
  readonly clock?: Clock
}

/** Outcome of {@link ErasureMember.snapshot}. */
export interface SnapshotOutcome {
  readonly version: number
  readonly committed: boolean
  /** Why it was not committed. */
  readonly reason?: string
}

/**
 * One host's L1 holder. It keeps its own snapshots whole, encodes each into k data pieces and m
 * parity pieces and stores n − 1 of them on the other members ({@link pieceHolder}); it holds one
 * piece of every other member's snapshot. A version commits in two phases (PREPARE: all its pieces
 * stored and verified by their holders, vote sent to every member; COMMIT: votes from all members).
 * The last `keep` committed versions are kept; it serves chunks of held pieces to a rebuilder
 * ({@link createErasureL1Source}).
 */
export interface ErasureMember extends AsyncDisposable {
  /** Registers the protocol handlers. Idempotent. */
  start(options?: AbortOptions): Promise<void>
  /** Unregisters handlers, fails waiting work with `ClosedError`, frees held data. Idempotent (the endpoint stays open). */
  stop(options?: AbortOptions): Promise<void>
  /**
   * Protects `bytes` as `version` (a step: strictly increasing). Resolves once committed or
   * skipped; a snapshot started while the previous is still in flight is skipped at once (counted),
   * never queued. `bytes` is copied.
   */
  snapshot(version: number, bytes: Uint8Array, options?: AbortOptions): Promise<SnapshotOutcome>
  /** Committed versions held, newest first. */
  committed(): number[]
  metrics(): ErasureMetrics
}

interface Deferred<T> { promise: Promise<T>, resolve: (v: T) => void, reject: (e: Error) => void }
function deferred<T> (): Deferred<T> {
  let resolve!: (v: T) => void
  let reject!: (e: Error) => void
  const promise = new Promise<T>((res, rej) => { resolve = res; reject = rej })
  promise.catch(() => {})
  return { promise, resolve, reject }
}

interface HeldPiece { readonly layout: PieceLayout, readonly piece: number, readonly bytes: Uint8Array }

interface VersionState {
  readonly version: number
  /** Own snapshot, padded (data pieces are views of it). */
  own?: { readonly padded: Uint8Array, readonly layout: PieceLayout }
  /** Pieces of other members' snapshots, by owner index. */
  readonly held: Map<number, HeldPiece>
  readonly prepared: Set<PeerId>
  readonly commit: Deferred<void>
  committed: boolean
}

const count = z.number().int().nonnegative()
const pieceBody = z.object({ version: count, piece: count, layout: z.unknown() }).strict()
const versionBody = z.object({ version: count }).strict()
const layoutBody = z.object({ version: count, owner: count }).strict()
const fetchBody = z.object({ version: count, owner: count, chunk: count }).strict()
/** Reply of `ec.versions`. */
export const versionsReplySchema = z.object({ committed: z.array(count).max(64), complete: z.array(count).max(64) }).strict()
/** Reply of `ec.layout`. */
export const layoutReplySchema = z.object({ piece: count, layout: z.unknown() }).strict()
/** Reply of `ec.fetch` (the chunk travels as one tensor frame). */
export const fetchReplySchema = z.object({ piece: count, chunk: count }).strict()

/** Parses a peer-supplied body; throws `MalformedMessageError`. */
export function parseBody<T> (schema: z.ZodType<T>, value: unknown, what: string): T {
  const r = schema.safeParse(value)
  if (!r.success) throw new MalformedMessageError(`Malformed ${what} body`, { details: { issues: r.error.issues.slice(0, 3).map((i) => `${i.path.join('.')}: ${i.message}`) } })
  return r.data
}

/** A byte buffer (length a multiple of 4, 4-aligned) as a tensor for the wire. */
export function bytesTensor (name: string, bytes: Uint8Array): NamedTensor {
  return { name, shape: [bytes.byteLength / 4], dtype: 'float32', data: new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4) }
}

/** The bytes of the single tensor of an envelope (a view of the frame when it has one frame). */
export function envelopeBytes (envelope: Envelope): Uint8Array {
  const t = decodeTensors(envelope)[0]
  if (t === undefined) throw new MalformedMessageError('Message carries no shard')
  return bytesOf(t.data)
}

/** Copies the tensor frames of an envelope into a new buffer of exactly `size` bytes; throws `MalformedMessageError` on another size. */
function copyFrames (envelope: Envelope, size: number): Uint8Array {
  let total = 0
  for (const f of envelope.frames) total += f.byteLength
  if (total !== size) throw new MalformedMessageError(`Piece carries ${total} bytes, its layout says ${size}`)
  const out = new Uint8Array(size)
  let off = 0
  for (const f of envelope.frames) { out.set(f, off); off += f.byteLength }
  return out
}

/** Validates a group and returns the index of `self` in it. */
export function memberIndex (group: ExchangeGroup, self: PeerId): number {
  const { k, m } = group.scheme
  if (group.scheme.kind === 'none' || m < 1) throw new InvalidParametersError('A group without parity cannot protect snapshots')
  if (group.members.length !== k + m) throw new InvalidParametersError(`Group has ${group.members.length} members, scheme ${k}+${m} needs ${k + m}`)
  if (new Set(group.members).size !== group.members.length) throw new InvalidParametersError('Group members must be distinct')
  const i = group.members.indexOf(self)
  if (i < 0) throw new InvalidParametersError(`"${self}" is not a member of the group`)
  return i
}

/** Creates an {@link ErasureMember}. */
export function createErasureMember (init: ErasureMemberInit, components: ErasureMemberComponents): ErasureMember {
  const { group } = init
  const me = memberIndex(group, init.self)
  const { k, m } = group.scheme
  const n = k + m
  const { endpoint } = components
  const clock = components.clock ?? systemClock()
  const log = componentLogger(components.logger, 'erasure-member').child({ member: init.self })
  const codec = components.codec ?? createSchemeCodec(group.scheme, components)
  const ownsCodec = components.codec === undefined
  assertCodecMatches(codec, { codec: codec.id, k, m })
  const prepareTimeoutMs = init.prepareTimeoutMs ?? 10_000
  const keep = init.keep ?? 2
  const chunkBytes = init.chunkBytes ?? DEFAULT_CHUNK_BYTES
  const versions = new Map<number, VersionState>()
  const metrics: ErasureMetrics = { snapshotBytes: 0, pieceBytes: 0, parityBytes: 0, versionsHeld: 0, committedVersion: -1, snapshotsCommitted: 0, snapshotsSkipped: 0, encodeBytes: 0, encodeMs: 0, chunksServed: 0 }
  let unhandle: Array<() => void> = []
  let running = false
  let inFlight = false
  let lifecycle = new AbortController()

  const stateOf = (version: number): VersionState => {
    let vs = versions.get(version)
    if (vs === undefined) {
      vs = { version, held: new Map(), prepared: new Set(), commit: deferred<void>(), committed: false }
      versions.set(version, vs)
    }
    return vs
  }
  const refreshGauges = (): void => {
    let own = 0
    let pieces = 0
    let parity = 0
    for (const vs of versions.values()) {
      own += vs.own?.padded.byteLength ?? 0
      for (const h of vs.held.values()) {
        pieces += h.bytes.byteLength
        if (h.piece >= k) parity += h.bytes.byteLength
      }
    }
    metrics.snapshotBytes = own
    metrics.pieceBytes = pieces
    metrics.parityBytes = parity
    metrics.versionsHeld = versions.size
  }
  const drop = (vs: VersionState, why: string): void => {
    versions.delete(vs.version)
    vs.commit.reject(new NotFoundError(`Version ${vs.version} was dropped: ${why}`))
  }
  const collect = (): void => {
    const committed = [...versions.values()].filter((v) => v.committed).map((v) => v.version).sort((a, b) => b - a)
    const oldestKept = committed[Math.min(keep, committed.length) - 1]
    if (oldestKept === undefined) return
    for (const vs of [...versions.values()]) if (vs.version < oldestKept) drop(vs, 'superseded')
  }
  const complete = (vs: VersionState): boolean => vs.own !== undefined && vs.held.size === n - 1
  const maybeCommit = (vs: VersionState): void => {
    if (vs.committed || vs.prepared.size < n) return
    vs.committed = true
    metrics.snapshotsCommitted++
    metrics.committedVersion = Math.max(metrics.committedVersion, vs.version)
    collect()
    refreshGauges()
    log.info({ version: vs.version, snapshotBytes: metrics.snapshotBytes, pieceBytes: metrics.pieceBytes, parityBytes: metrics.parityBytes, versionsHeld: metrics.versionsHeld }, 'snapshot version committed')
    vs.commit.resolve()
  }

  const waitFor = async <T>(p: Promise<T>, ms: number, what: string, signal: AbortSignal): Promise<T> => {
    let timer: { cancel: () => void } | undefined
    try {
      return await raceSignal(Promise.race([p, new Promise<never>((_res, rej) => { timer = clock.setTimeout(() => { rej(new TimeoutError(`${what} did not finish in ${ms} ms`)) }, ms) })]), signal)
    } finally {
      timer?.cancel()
    }
  }

  const ownerOf = (from: PeerId): number => {
    const o = group.members.indexOf(from)
    if (o < 0) throw new InvalidParametersError(`${from} is not a member of the group`)
    return o
  }

  const onPiece = (env: Envelope): { type: string, body: unknown } => {
    const body = parseBody(pieceBody, env.header.body, ERASURE_MESSAGES.piece)
    const owner = ownerOf(env.header.from)
    if (owner === me || body.piece >= n - 1 || pieceHolder(group.scheme, owner, body.piece) !== me) {
      throw new InvalidParametersError(`Member ${me} does not hold piece ${body.piece} of ${env.header.from}`)
    }
    const layout = parsePieceLayout(body.layout)
    assertCodecMatches(codec, layout)
    if (body.version < metrics.committedVersion) throw new InvalidParametersError(`Version ${body.version} is older than the committed ${metrics.committedVersion}`)
    // Frames may be views of the sender's memory (memory transport) or of ZeroMQ buffers: copy what is kept.
    const bytes = copyFrames(env, layout.pieceSize)
    const expected = layout.crcs[body.piece] as readonly number[]
    for (let c = 0; c < expected.length; c++) {
      const { start, end } = chunkRange(layout, c)
      if (crc32c(bytes.subarray(start, end)) !== expected[c]) throw new ChecksumMismatchError(`Chunk ${c} of piece ${body.piece} from ${env.header.from} failed its CRC in transit`)
    }
    stateOf(body.version).held.set(owner, { layout, piece: body.piece, bytes })
    refreshGauges()
    return { type: 'ec.piece-ack', body: {} }
  }

  const onPrepared = (env: Envelope): void => {
    const { version } = parseBody(versionBody, env.header.body, ERASURE_MESSAGES.prepared)
    ownerOf(env.header.from)
    if (version < metrics.committedVersion) return
    const vs = stateOf(version)
    vs.prepared.add(env.header.from)
    maybeCommit(vs)
  }

  const onVersions = (): { type: string, body: unknown } => {
    const held = [...versions.values()].sort((a, b) => b.version - a.version)
    return { type: 'ec.versions-reply', body: { committed: held.filter((v) => v.committed).map((v) => v.version), complete: held.filter(complete).map((v) => v.version) } }
  }

  const heldPiece = (version: number, owner: number): HeldPiece => {
    const h = versions.get(version)?.held.get(owner)
    if (h === undefined) throw new NotFoundError(`No piece of member ${owner}'s version ${version} here`)
    return h
  }

  const onLayout = (env: Envelope): { type: string, body: unknown } => {
    const { version, owner } = parseBody(layoutBody, env.header.body, ERASURE_MESSAGES.layout)
    const h = heldPiece(version, owner)
    return { type: 'ec.layout-reply', body: { piece: h.piece, layout: h.layout } }
  }

  const onFetch = (env: Envelope): { type: string, body: unknown, tensors: NamedTensor[] } => {
    const { version, owner, chunk } = parseBody(fetchBody, env.header.body, ERASURE_MESSAGES.fetch)
    const h = heldPiece(version, owner)
    if (chunk >= chunkCount(h.layout)) throw new MalformedMessageError(`Chunk ${chunk} is outside 0..${chunkCount(h.layout) - 1}`)
    const { start, end } = chunkRange(h.layout, chunk)
    metrics.chunksServed++
    // A view, not a copy: held pieces are never written after they are stored.
    return { type: 'ec.fetch-reply', body: { piece: h.piece, chunk }, tensors: [bytesTensor('chunk', h.bytes.subarray(start, end))] }
  }

  const member: ErasureMember = {
    async start (options = {}) {
      throwIfAborted(options.signal)
      if (running) return
      running = true
      lifecycle = new AbortController()
      for (const [id, address] of Object.entries(init.addresses ?? {})) if (id !== init.self) endpoint.connect(id, address)
      unhandle = [
        endpoint.handle(ERASURE_MESSAGES.piece, onPiece),
        endpoint.handle(ERASURE_MESSAGES.prepared, onPrepared),
        endpoint.handle(ERASURE_MESSAGES.versions, onVersions),
        endpoint.handle(ERASURE_MESSAGES.layout, onLayout),
        endpoint.handle(ERASURE_MESSAGES.fetch, onFetch)
      ]
      log.debug({ codec: codec.id, k, m, index: me, chunkBytes }, 'erasure member started')
    },
    async stop () {
      if (!running) return
      running = false
      for (const u of unhandle.splice(0)) u()
      lifecycle.abort(new ClosedError('Erasure member stopped'))
      for (const vs of [...versions.values()]) drop(vs, 'member stopped')
      refreshGauges()
      if (ownsCodec) codec.close()
    },
    async snapshot (version, bytes, options = {}) {
      if (!running) throw new ClosedError('Erasure member is not started')
      throwIfAborted(options.signal)
      if (!Number.isInteger(version) || version < 0) throw new InvalidParametersError(`Version must be a non-negative integer, got ${version}`)
      if (version <= metrics.committedVersion) throw new InvalidParametersError(`Version ${version} is not newer than the committed ${metrics.committedVersion}`)
      if (inFlight) {
        metrics.snapshotsSkipped++
        log.warn({ version, skipped: metrics.snapshotsSkipped }, 'snapshot skipped: the previous one is still in flight')
        return { version, committed: false, reason: 'previous snapshot still in flight' }
      }
      inFlight = true
      // Bound memory when commits fail: of the uncommitted versions older than this one keep only
      // the newest (others may still commit it; anything older is superseded).
      const stale = [...versions.values()].filter((v) => !v.committed && v.version < version).sort((a, b) => b.version - a.version)
      for (const vs of stale.slice(1)) drop(vs, 'superseded by a newer snapshot')
      const signal = AbortSignal.any([lifecycle.signal, ...(options.signal === undefined ? [] : [options.signal])])
      // One listener per concurrent request (n − 1 pieces, n votes): more than the default warning threshold.
      setMaxListeners(4 * n + 8, signal)
      try {
        const t0 = clock.now()
        const encoded = await encodeOwnPieces(codec, bytes, { chunkBytes, signal })
        metrics.encodeMs += clock.now() - t0
        if (m > 1) metrics.encodeBytes += encoded.padded.byteLength
        const vs = stateOf(version)
        vs.own = { padded: encoded.padded, layout: encoded.layout }
        refreshGauges()
        await Promise.all(Array.from({ length: n - 1 }, async (_, piece) => {
          const holder = group.members[pieceHolder(group.scheme, me, piece)] as PeerId
          await endpoint.request(holder, {
            type: ERASURE_MESSAGES.piece,
            step: version,
            body: { version, piece, layout: encoded.layout },
            tensors: [bytesTensor('piece', pieceBytes(encoded, piece))]
          }, { timeoutMs: prepareTimeoutMs, signal })
        }))
        vs.prepared.add(init.self)
        await Promise.all(group.members.filter((id) => id !== init.self).map(async (id) => {
          await endpoint.send(id, { type: ERASURE_MESSAGES.prepared, step: version, body: { version } }, { signal })
        }))
        maybeCommit(vs)
        await waitFor(vs.commit.promise, prepareTimeoutMs, `Commit of version ${version}`, signal)
        return { version, committed: true }
      } catch (err) {
        if ((err as Error).name === 'AbortError' && options.signal?.aborted === true) throw err
        metrics.snapshotsSkipped++
        const reason = `${(err as Error).name}: ${(err as Error).message}`
        log.warn({ version, reason, skipped: metrics.snapshotsSkipped }, 'snapshot not committed')
        return { version, committed: false, reason }
      } finally {
        inFlight = false
      }
    },
    committed: () => [...versions.values()].filter((v) => v.committed).map((v) => v.version).sort((a, b) => b - a),
    metrics: () => ({ ...metrics }),
    async [Symbol.asyncDispose] () { await member.stop() }
  }
  return member
}
