import { setMaxListeners } from 'node:events'
import { z } from 'zod'
import {
  ClosedError, InvalidParametersError, MalformedMessageError, NotFoundError, TimeoutError,
  bytesOf, componentLogger, decodeTensors, raceSignal, systemClock, throwIfAborted,
  type AbortOptions, type Clock, type Endpoint, type Envelope, type NamedTensor, type PeerId
} from '@phalanx/core'
import { alignUp, type ErasureCodec } from './codec.js'
import { createSchemeCodec, dataStripesOf, stripeRoles, type ErasureScheme, type SchemeCodecComponents } from './placement.js'
import { assertCodecMatches, encodePieces, parseStripeHeader, type StripeHeader } from './stripe.js'

/** Message types of the shard exchange between the holders of one group. */
export const ERASURE_MESSAGES = Object.freeze({
  /** data member → parity holder (request): one piece of the sender's snapshot; reply: the stripe header once encoded. */
  piece: 'ec.piece',
  /** member → every member: this member's pieces of a version are all encoded (phase 1 vote). */
  prepared: 'ec.prepared',
  /** any → member (request): the versions it holds. */
  versions: 'ec.versions',
  /** rebuilder → member (request): its shard of one stripe of a version. */
  fetch: 'ec.fetch'
})

/** One protection group as the exchange sees it: member endpoint ids in stripe order and the scheme. */
export interface ExchangeGroup {
  /** Endpoint ids of the members' holders; a member's index is its position here. */
  readonly members: readonly PeerId[]
  readonly scheme: ErasureScheme
}

/** Counters and gauges of a member, for logs and metrics export. */
export interface ErasureMetrics {
  /** Bytes of own snapshots held (all kept versions). */
  snapshotBytes: number
  /** Bytes of parity shards held for others (all kept versions). */
  parityBytes: number
  /** Versions held (committed or in flight). */
  versionsHeld: number
  /** Newest committed version, or -1. */
  committedVersion: number
  snapshotsCommitted: number
  /** Snapshots not committed: a previous one still in flight, a peer unreachable or a timeout. */
  snapshotsSkipped: number
  /** Bytes of data encoded into parity and the time it took. */
  encodeBytes: number
  encodeMs: number
  /** Data shards served to rebuilders. */
  shardsServed: number
}

/** Tunables of {@link createErasureMember}. */
export interface ErasureMemberInit {
  readonly group: ExchangeGroup
  /** This member's endpoint id (must be in `group.members`). */
  readonly self: PeerId
  /** Addresses to connect the endpoint to, by member id. @default none (the caller connected the endpoint) */
  readonly addresses?: Readonly<Record<PeerId, string>>
  /**
   * How long a snapshot may take to be encoded and voted by every member before it is skipped, ms.
   * @default 10000
   */
  readonly prepareTimeoutMs?: number
  /**
   * Committed versions kept (older ones are freed when a newer one commits).
   * @default 2
   */
  readonly keep?: number
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
 * One host's L1 holder: it keeps its own snapshots whole, sends their pieces to the stripes' parity
 * holders, holds the parity of the stripes it is parity for, and commits a version in two phases
 * (PREPARE: all its pieces encoded by their parity holders, vote sent to every member; COMMIT: votes
 * from all members received). The last `keep` committed versions are kept; it serves shards to a
 * rebuilder ({@link createErasureL1Source}).
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

interface OwnSnapshot { readonly padded: Uint8Array, readonly pieceSize: number, readonly length: number }

interface VersionState {
  readonly version: number
  own?: OwnSnapshot
  readonly headers: Map<number, StripeHeader>
  readonly parity: Map<number, Uint8Array>
  readonly pending: Map<number, { pieces: Array<Uint8Array | undefined>, done: Deferred<StripeHeader>, started: boolean }>
  readonly prepared: Set<PeerId>
  readonly commit: Deferred<void>
  committed: boolean
}

const count = z.number().int().nonnegative()
const pieceBody = z.object({ version: count, stripe: count, position: count, length: count }).strict()
const versionBody = z.object({ version: count }).strict()
const fetchBody = z.object({ version: count, stripe: count }).strict()
/** Reply of `ec.versions`. */
export const versionsReplySchema = z.object({ committed: z.array(count).max(64), complete: z.array(count).max(64) }).strict()
/** Reply of `ec.fetch` (the shard travels as a tensor frame). */
export const fetchReplySchema = z.object({ index: count, header: z.unknown() }).strict()

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

/** The bytes of the single tensor of an envelope. */
export function envelopeBytes (envelope: Envelope): Uint8Array {
  const t = decodeTensors(envelope)[0]
  if (t === undefined) throw new MalformedMessageError('Message carries no shard')
  return bytesOf(t.data)
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
  const myDataStripes = dataStripesOf(group.scheme, me)
  const versions = new Map<number, VersionState>()
  const metrics: ErasureMetrics = { snapshotBytes: 0, parityBytes: 0, versionsHeld: 0, committedVersion: -1, snapshotsCommitted: 0, snapshotsSkipped: 0, encodeBytes: 0, encodeMs: 0, shardsServed: 0 }
  let unhandle: Array<() => void> = []
  let running = false
  let inFlight = false
  let lifecycle = new AbortController()

  const stateOf = (version: number): VersionState => {
    let vs = versions.get(version)
    if (vs === undefined) {
      vs = { version, headers: new Map(), parity: new Map(), pending: new Map(), prepared: new Set(), commit: deferred<void>(), committed: false }
      versions.set(version, vs)
    }
    return vs
  }
  const refreshGauges = (): void => {
    let own = 0
    let parity = 0
    for (const vs of versions.values()) {
      own += vs.own?.length ?? 0
      for (const p of vs.parity.values()) parity += p.byteLength
    }
    metrics.snapshotBytes = own
    metrics.parityBytes = parity
    metrics.versionsHeld = versions.size
  }
  const drop = (vs: VersionState, why: string): void => {
    versions.delete(vs.version)
    for (const p of vs.pending.values()) p.done.reject(new NotFoundError(`Version ${vs.version} was dropped: ${why}`))
    vs.commit.reject(new NotFoundError(`Version ${vs.version} was dropped: ${why}`))
  }
  const collect = (): void => {
    const committed = [...versions.values()].filter((v) => v.committed).map((v) => v.version).sort((a, b) => b - a)
    const oldestKept = committed[Math.min(keep, committed.length) - 1]
    if (oldestKept === undefined) return
    for (const vs of [...versions.values()]) if (vs.version < oldestKept) drop(vs, 'superseded')
  }
  const complete = (vs: VersionState): boolean => {
    if (vs.own === undefined) return false
    for (let s = 0; s < n; s++) {
      const roles = stripeRoles(group.scheme, s)
      if (!vs.headers.has(s)) return false
      if (roles.parity.includes(me) && !vs.parity.has(s)) return false
    }
    return true
  }
  const maybeCommit = (vs: VersionState): void => {
    if (vs.committed || vs.prepared.size < n) return
    vs.committed = true
    metrics.snapshotsCommitted++
    metrics.committedVersion = Math.max(metrics.committedVersion, vs.version)
    collect()
    refreshGauges()
    log.info({ version: vs.version, snapshotBytes: metrics.snapshotBytes, parityBytes: metrics.parityBytes, versionsHeld: metrics.versionsHeld }, 'snapshot version committed')
    vs.commit.resolve()
  }

  const encodeStripe = async (vs: VersionState, stripe: number): Promise<void> => {
    const pend = vs.pending.get(stripe)
    if (pend === undefined || pend.started || pend.pieces.some((p) => p === undefined)) return
    pend.started = true
    const t0 = clock.now()
    try {
      const { header, shards } = await encodePieces(codec, pend.pieces as Uint8Array[])
      metrics.encodeMs += clock.now() - t0
      metrics.encodeBytes += header.shardSize * k
      const j = stripeRoles(group.scheme, stripe).parity.indexOf(me)
      vs.parity.set(stripe, (shards[k + j] as Uint8Array).slice())
      vs.headers.set(stripe, header)
      vs.pending.delete(stripe)
      refreshGauges()
      pend.done.resolve(header)
    } catch (err) {
      pend.done.reject(err as Error)
    }
  }

  const waitFor = async <T>(p: Promise<T>, ms: number, what: string, signal: AbortSignal): Promise<T> => {
    let timer: { cancel: () => void } | undefined
    try {
      return await raceSignal(Promise.race([p, new Promise<never>((_res, rej) => { timer = clock.setTimeout(() => { rej(new TimeoutError(`${what} did not finish in ${ms} ms`)) }, ms) })]), signal)
    } finally {
      timer?.cancel()
    }
  }

  const onPiece = async (env: Envelope, opts: { signal: AbortSignal }): Promise<{ type: string, body: unknown }> => {
    const body = parseBody(pieceBody, env.header.body, ERASURE_MESSAGES.piece)
    if (body.stripe >= n) throw new MalformedMessageError(`Stripe ${body.stripe} is outside 0..${n - 1}`)
    const roles = stripeRoles(group.scheme, body.stripe)
    if (!roles.parity.includes(me)) throw new InvalidParametersError(`Member ${me} holds no parity of stripe ${body.stripe}`)
    const sender = roles.data[body.position]
    if (sender === undefined || group.members[sender] !== env.header.from) throw new InvalidParametersError(`${env.header.from} is not data position ${body.position} of stripe ${body.stripe}`)
    const bytes = envelopeBytes(env)
    if (body.length > bytes.byteLength) throw new MalformedMessageError(`Piece claims ${body.length} bytes, carries ${bytes.byteLength}`)
    const newest = metrics.committedVersion
    if (body.version < newest) throw new InvalidParametersError(`Version ${body.version} is older than the committed ${newest}`)
    const vs = stateOf(body.version)
    let pend = vs.pending.get(body.stripe)
    const done = vs.headers.get(body.stripe)
    if (done !== undefined) return { type: 'ec.piece-ack', body: { header: done } }
    if (pend === undefined) {
      pend = { pieces: new Array<Uint8Array | undefined>(k).fill(undefined), done: deferred<StripeHeader>(), started: false }
      vs.pending.set(body.stripe, pend)
    }
    // Received frames may be views of the sender's memory (memory transport): copy what is kept.
    pend.pieces[body.position] = bytes.slice(0, body.length)
    void encodeStripe(vs, body.stripe)
    const header = await waitFor(pend.done.promise, prepareTimeoutMs, `Stripe ${body.stripe} of version ${body.version}`, opts.signal)
    return { type: 'ec.piece-ack', body: { header } }
  }

  const onPrepared = (env: Envelope): void => {
    const { version } = parseBody(versionBody, env.header.body, ERASURE_MESSAGES.prepared)
    if (!group.members.includes(env.header.from)) throw new InvalidParametersError(`${env.header.from} is not a member of the group`)
    if (version < metrics.committedVersion) return
    const vs = stateOf(version)
    vs.prepared.add(env.header.from)
    maybeCommit(vs)
  }

  const onVersions = (): { type: string, body: unknown } => {
    const held = [...versions.values()].sort((a, b) => b.version - a.version)
    return { type: 'ec.versions-reply', body: { committed: held.filter((v) => v.committed).map((v) => v.version), complete: held.filter(complete).map((v) => v.version) } }
  }

  const onFetch = (env: Envelope): { type: string, body: unknown, tensors: NamedTensor[] } => {
    const { version, stripe } = parseBody(fetchBody, env.header.body, ERASURE_MESSAGES.fetch)
    if (stripe >= n) throw new MalformedMessageError(`Stripe ${stripe} is outside 0..${n - 1}`)
    const vs = versions.get(version)
    const header = vs?.headers.get(stripe)
    if (vs === undefined || header === undefined) throw new NotFoundError(`No shard of stripe ${stripe} of version ${version} here`)
    const roles = stripeRoles(group.scheme, stripe)
    const j = roles.parity.indexOf(me)
    let index: number
    let shard: Uint8Array
    if (j >= 0) {
      index = k + j
      shard = vs.parity.get(stripe) as Uint8Array
    } else {
      index = roles.data.indexOf(me)
      const own = vs.own as OwnSnapshot
      const piece = myDataStripes.indexOf(stripe)
      shard = new Uint8Array(header.shardSize)
      shard.set(own.padded.subarray(piece * own.pieceSize, piece * own.pieceSize + (header.lengths[index] ?? 0)))
    }
    metrics.shardsServed++
    return { type: 'ec.fetch-reply', body: { index, header }, tensors: [bytesTensor('shard', shard)] }
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
        endpoint.handle(ERASURE_MESSAGES.fetch, onFetch)
      ]
      log.debug({ codec: codec.id, k, m, index: me }, 'erasure member started')
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
      // One listener per concurrent request (k·m pieces, n votes): more than the default warning threshold.
      setMaxListeners(4 * n * (m + 1), signal)
      try {
        const pieceSize = alignUp(Math.max(1, Math.ceil(bytes.byteLength / k)))
        const padded = new Uint8Array(pieceSize * k)
        padded.set(bytes)
        const vs = stateOf(version)
        vs.own = { padded, pieceSize, length: bytes.byteLength }
        refreshGauges()
        await Promise.all(myDataStripes.map(async (stripe, p) => {
          const roles = stripeRoles(group.scheme, stripe)
          const length = Math.max(0, Math.min(pieceSize, bytes.byteLength - p * pieceSize))
          const piece = padded.subarray(p * pieceSize, (p + 1) * pieceSize)
          const headers = await Promise.all(roles.parity.map(async (holder) => {
            const reply = await endpoint.request(group.members[holder] as PeerId, {
              type: ERASURE_MESSAGES.piece,
              step: version,
              body: { version, stripe, position: roles.data.indexOf(me), length },
              tensors: [bytesTensor('piece', piece)]
            }, { timeoutMs: prepareTimeoutMs, signal })
            return parseStripeHeader((reply.header.body as { header?: unknown } | undefined)?.header)
          }))
          const first = headers[0] as StripeHeader
          if (headers.some((h) => h.crcs.join() !== first.crcs.join())) throw new MalformedMessageError(`Parity holders of stripe ${stripe} disagree on its header`)
          assertCodecMatches(codec, first)
          vs.headers.set(stripe, first)
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

