import {
  InsufficientShardsError, componentLogger, systemClock, throwIfAborted,
  type AbortOptions, type Clock, type Endpoint, type PeerId, type StateDict
} from '@phalanx/core'
import type { L1Source } from '../restore.js'
import type { ErasureCodec } from './codec.js'
import {
  ERASURE_MESSAGES, envelopeBytes, fetchReplySchema, memberIndex, parseBody, versionsReplySchema, type ExchangeGroup
} from './exchange.js'
import { createSchemeCodec, dataStripesOf, stripeRoles, type SchemeCodecComponents } from './placement.js'
import { decodeStripe, joinPieces, parseStripeHeader, type DecodedStripe, type IndexedShard, type StripeHeader } from './stripe.js'
import { decodeSnapshot } from './snapshot-format.js'

/** Tunables of {@link createErasureL1Source}. */
export interface ErasureL1SourceInit {
  readonly group: ExchangeGroup
  /** The member whose snapshot to rebuild (a lost host, or this host after a restart). */
  readonly owner: PeerId
  /** Addresses to connect the endpoint to, by member id. @default none (the caller connected it) */
  readonly addresses?: Readonly<Record<PeerId, string>>
  /**
   * How long a member may take to answer the probe before it counts as lost, ms.
   * @default 1000
   */
  readonly probeTimeoutMs?: number
  /**
   * Reply deadline of one shard fetch, ms.
   * @default 30000
   */
  readonly fetchTimeoutMs?: number
  /**
   * Members the failure detector already declared lost: not probed (a probe of a dead peer costs a
   * whole `probeTimeoutMs`). @default none
   */
  readonly lost?: readonly PeerId[]
  /** Turns the rebuilt bytes into a state. @default {@link decodeSnapshot} */
  readonly decode?: (bytes: Uint8Array) => StateDict
}

/** Collaborators of {@link createErasureL1Source}. */
export interface ErasureL1SourceComponents extends SchemeCodecComponents {
  readonly endpoint: Endpoint
  /** The group's codec. @default from the scheme */
  readonly codec?: ErasureCodec
  readonly clock?: Clock
}

/** What a rebuild did. */
export interface RecoveryReport {
  readonly version: number
  readonly bytes: Uint8Array
  /** Members that answered the probe. */
  readonly alive: readonly PeerId[]
  /** Shards fetched, and how many failed their CRC (treated as missing). */
  readonly shardsFetched: number
  readonly shardsCorrupt: number
  /** Bytes of shards received. */
  readonly bytesFetched: number
  /** Wall time of the fetches and of decoding, ms. */
  readonly fetchMs: number
  readonly reconstructMs: number
}

/** The L1 tier of {@link restoreBest} over one erasure group, plus the raw rebuild. */
export interface ErasureL1Source extends L1Source {
  /** Rebuilds the owner's newest committed snapshot bytes from k shards per stripe. */
  recover(options?: AbortOptions): Promise<RecoveryReport>
}

interface Probe { id: PeerId, committed: number[], complete: number[] }

/**
 * Rebuilds a lost member's state from the surviving members of its group: probes who is alive and
 * which versions they hold, picks the newest version some member committed, fetches every surviving
 * shard of each stripe the owner has data in (in parallel), checks every shard's CRC (a corrupt one
 * counts as missing) and decodes. When more than m members are lost it fails fast with
 * `InsufficientShardsError` and an error log line, so `restoreBest` falls back to L2.
 */
export function createErasureL1Source (init: ErasureL1SourceInit, components: ErasureL1SourceComponents): ErasureL1Source {
  const { group, owner } = init
  const ownerIndex = memberIndex(group, owner)
  const { k, m } = group.scheme
  const n = k + m
  const { endpoint } = components
  const clock = components.clock ?? systemClock()
  const log = componentLogger(components.logger, 'erasure-recovery').child({ owner })
  const probeTimeoutMs = init.probeTimeoutMs ?? 1000
  const fetchTimeoutMs = init.fetchTimeoutMs ?? 30_000
  const decode = init.decode ?? decodeSnapshot
  for (const [id, address] of Object.entries(init.addresses ?? {})) if (id !== endpoint.id) endpoint.connect(id, address)

  const probe = async (options: AbortOptions): Promise<Probe[]> => {
    const others = group.members.filter((id) => id !== owner && !(init.lost ?? []).includes(id))
    const results = await Promise.all(others.map(async (id): Promise<Probe | undefined> => {
      try {
        const reply = await endpoint.request(id, { type: ERASURE_MESSAGES.versions }, { timeoutMs: probeTimeoutMs, ...(options.signal === undefined ? {} : { signal: options.signal }) })
        return { id, ...parseBody(versionsReplySchema, reply.header.body, 'versions reply') }
      } catch (err) {
        if ((err as Error).name === 'AbortError') throw err
        log.warn({ peer: id, err: (err as Error).name }, 'group member did not answer')
        return undefined
      }
    }))
    const alive = results.filter((r): r is Probe => r !== undefined)
    const lost = n - alive.length
    if (lost > m) {
      const lostIds = group.members.filter((id) => !alive.some((a) => a.id === id))
      log.error({ lost: lostIds, tolerated: m, scheme: `${group.scheme.kind}(${k},${m})` },
        `L1 cannot rebuild: ${lost} of ${n} members of the group are lost and the code tolerates ${m}; fall back to the L2 checkpoint`)
      throw new InsufficientShardsError(`${lost} of ${n} members of the erasure group are lost (${lostIds.join(', ')}); ${group.scheme.kind}(${k},${m}) tolerates ${m}: the in-memory snapshot cannot be rebuilt, restore from L2`,
        { details: { lost: lostIds, tolerated: m, k, m } })
    }
    return alive
  }

  const candidates = (alive: readonly Probe[]): number[] => [...new Set(alive.flatMap((a) => a.committed))].sort((a, b) => b - a)

  const rebuild = async (version: number, alive: readonly Probe[], options: AbortOptions): Promise<RecoveryReport> => {
    const codec = components.codec ?? createSchemeCodec(group.scheme, components)
    let fetched = 0
    let corrupt = 0
    let bytesFetched = 0
    let fetchMs = 0
    let reconstructMs = 0
    try {
      const holders = new Set(alive.filter((a) => a.complete.includes(version) || a.committed.includes(version)).map((a) => a.id))
      const pieces: Uint8Array[] = []
      for (const stripe of dataStripesOf(group.scheme, ownerIndex)) {
        throwIfAborted(options.signal)
        const roles = stripeRoles(group.scheme, stripe)
        const members = [...roles.data, ...roles.parity].map((i) => group.members[i] as PeerId).filter((id) => id !== owner && holders.has(id))
        if (members.length < k) throw new InsufficientShardsError(`Stripe ${stripe} of version ${version} has ${members.length} surviving holders, ${k} needed`)
        const t0 = clock.now()
        const fetchOne = async (id: PeerId): Promise<{ header: StripeHeader, shard: IndexedShard } | undefined> => {
          try {
            const env = await endpoint.request(id, { type: ERASURE_MESSAGES.fetch, step: version, body: { version, stripe } }, { timeoutMs: fetchTimeoutMs, ...(options.signal === undefined ? {} : { signal: options.signal }) })
            const body = parseBody(fetchReplySchema, env.header.body, 'fetch reply')
            return { header: parseStripeHeader(body.header), shard: { index: body.index, bytes: envelopeBytes(env) } }
          } catch (err) {
            if ((err as Error).name === 'AbortError') throw err
            log.warn({ peer: id, stripe, version, err: `${(err as Error).name}: ${(err as Error).message}` }, 'shard fetch failed')
            return undefined
          }
        }
        // k shards are enough; the others are fetched only when one of the first k fails or is corrupt.
        const replies = await Promise.all(members.slice(0, k).map(fetchOne))
        fetchMs += clock.now() - t0
        const decodeFrom = async (all: ReadonlyArray<{ header: StripeHeader, shard: IndexedShard } | undefined>): Promise<DecodedStripe> => {
          const got = all.filter((r): r is { header: StripeHeader, shard: IndexedShard } => r !== undefined)
          // Members hold the same header; take the one most of them agree on (a corrupt copy loses the vote).
          const votes = new Map<string, { header: StripeHeader, count: number }>()
          for (const g of got) {
            const key = JSON.stringify(g.header)
            const v = votes.get(key)
            if (v === undefined) votes.set(key, { header: g.header, count: 1 })
            else v.count++
          }
          const header = [...votes.values()].sort((a, b) => b.count - a.count)[0]?.header
          if (header === undefined) throw new InsufficientShardsError(`No member returned a shard of stripe ${stripe} of version ${version}`)
          const shards: IndexedShard[] = []
          const seen = new Set<number>()
          for (const g of got) {
            if (seen.has(g.shard.index)) continue
            seen.add(g.shard.index)
            shards.push(g.shard)
          }
          const t1 = clock.now()
          const out = await decodeStripe(codec, header, shards, options)
          reconstructMs += clock.now() - t1
          fetched += shards.length
          for (const sh of shards) bytesFetched += sh.bytes.byteLength
          return out
        }
        let out: DecodedStripe
        try {
          out = await decodeFrom(replies)
        } catch (err) {
          if ((err as Error).name !== InsufficientShardsError.name || members.length <= k) throw err
          log.warn({ stripe, version, err: (err as Error).message }, 'first k shards not enough, fetching the others')
          const t2 = clock.now()
          replies.push(...await Promise.all(members.slice(k).map(fetchOne)))
          fetchMs += clock.now() - t2
          out = await decodeFrom(replies)
        }
        corrupt += out.corrupt.length
        if (out.corrupt.length > 0) log.warn({ stripe, version, corrupt: out.corrupt }, 'corrupt shards treated as missing')
        pieces.push(out.pieces[roles.data.indexOf(ownerIndex)] as Uint8Array)
      }
      return { version, bytes: joinPieces(pieces), alive: alive.map((a) => a.id), shardsFetched: fetched, shardsCorrupt: corrupt, bytesFetched, fetchMs, reconstructMs }
    } finally {
      if (components.codec === undefined) codec.close()
    }
  }

  const source: ErasureL1Source = {
    async latestStep (options = {}) {
      const alive = await probe(options)
      return candidates(alive)[0]
    },
    async recover (options = {}) {
      const alive = await probe(options)
      const versions = candidates(alive)
      if (versions.length === 0) throw new InsufficientShardsError('No surviving member holds a committed snapshot version', { details: { alive: alive.map((a) => a.id) } })
      let last: unknown
      for (const version of versions) {
        try {
          const report = await rebuild(version, alive, options)
          log.info({ version, bytes: report.bytes.byteLength, shards: report.shardsFetched, corrupt: report.shardsCorrupt, fetchMs: Math.round(report.fetchMs), reconstructMs: Math.round(report.reconstructMs) }, 'lost snapshot rebuilt from surviving shards')
          return report
        } catch (err) {
          if ((err as Error).name !== InsufficientShardsError.name) throw err
          last = err
          log.warn({ version, err: (err as Error).message }, 'version not rebuildable, trying an older one')
        }
      }
      throw last as Error
    },
    async restore (options = {}) {
      const report = await source.recover(options)
      return { step: report.version, state: decode(report.bytes) }
    }
  }
  return source
}
