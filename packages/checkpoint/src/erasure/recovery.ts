import { setMaxListeners } from 'node:events'
import {
  ChecksumMismatchError, InsufficientShardsError, InvalidParametersError, componentLogger, crc32c, systemClock, throwIfAborted,
  type AbortOptions, type Clock, type Endpoint, type PeerId, type StateDict
} from '@phalanx/core'
import type { L1Source } from '../restore.js'
import type { ErasureCodec } from './codec.js'
import {
  ERASURE_MESSAGES, envelopeBytes, fetchReplySchema, layoutReplySchema, memberIndex, parseBody, versionsReplySchema, type ExchangeGroup
} from './exchange.js'
import { chunkCount, chunkRange, parsePieceLayout, type PieceLayout } from './layout.js'
import { createSchemeCodec, pieceHolder, type SchemeCodecComponents } from './placement.js'
import { assertCodecMatches } from './stripe.js'
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
   * Reply deadline of one chunk fetch, ms.
   * @default 30000
   */
  readonly fetchTimeoutMs?: number
  /**
   * Chunk requests in flight to each holder at once: enough to keep the link busy while the holder
   * serves the next one, few enough to bound the memory of replies waiting to be copied.
   * @default 4
   */
  readonly inFlightPerHolder?: number
  /**
   * Members the failure detector already declared lost: not probed (a probe of a dead peer costs a
   * whole `probeTimeoutMs`). @default none
   */
  readonly lost?: readonly PeerId[]
  /**
   * Turns the rebuilt bytes into a state. The bytes belong to the rebuild and are not reused, so
   * the default makes tensors that are views of them, without a copy.
   * @default `decodeSnapshot(bytes, { copy: false })` ({@link decodeSnapshot})
   */
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
  /** The owner's snapshot bytes (padding removed). */
  readonly bytes: Uint8Array
  /** Members that answered the probe. */
  readonly alive: readonly PeerId[]
  /** Chunks fetched (data and parity), and how many failed their CRC (treated as missing). */
  readonly chunksFetched: number
  readonly chunksCorrupt: number
  /** Data chunks rebuilt by the codec (0 when every data piece survived). */
  readonly chunksRebuilt: number
  /** Bytes of chunks received. */
  readonly bytesFetched: number
  /** Wall time of the whole rebuild after the probe (fetches, checks, copies and decoding overlap), ms. */
  readonly fetchMs: number
  /** Time spent in the codec, summed over decoded chunks, ms. */
  readonly reconstructMs: number
}

/** The L1 tier of {@link restoreBest} over one erasure group, plus the raw rebuild. */
export interface ErasureL1Source extends L1Source {
  /** Rebuilds the owner's newest committed snapshot bytes from k of its pieces. */
  recover(options?: AbortOptions): Promise<RecoveryReport>
}

interface Probe { id: PeerId, committed: number[], complete: number[] }

/** Runs at most `limit` tasks at once per key. */
function limiter (limit: number): <T>(fn: () => Promise<T>) => Promise<T> {
  let active = 0
  const waiting: Array<() => void> = []
  return async <T>(fn: () => Promise<T>): Promise<T> => {
    if (active >= limit) await new Promise<void>((resolve) => { waiting.push(resolve) })
    active++
    try {
      return await fn()
    } finally {
      active--
      waiting.shift()?.()
    }
  }
}

/**
 * Rebuilds a lost member's state from the pieces of its snapshot held by the surviving members of
 * its group: probes who is alive and which versions they hold, picks the newest version some member
 * committed, and fetches the chunks of the k data pieces from their holders in parallel (several
 * chunks in flight per holder) straight into one preallocated image. Every chunk's CRC-32C is
 * checked; a data chunk that is missing, unreachable or corrupt is decoded from the parity chunks of
 * the same column, so decoding happens only where data was lost. When more than m members are lost
 * it fails fast with `InsufficientShardsError` and an error log line, so `restoreBest` falls back to L2.
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
  const inFlightPerHolder = init.inFlightPerHolder ?? 4
  if (!Number.isInteger(inFlightPerHolder) || inFlightPerHolder < 1) throw new InvalidParametersError(`inFlightPerHolder must be a positive integer, got ${inFlightPerHolder}`)
  const decode = init.decode ?? ((bytes: Uint8Array) => decodeSnapshot(bytes, { copy: false }))
  for (const [id, address] of Object.entries(init.addresses ?? {})) if (id !== endpoint.id) endpoint.connect(id, address)
  const signalOpt = (options: AbortOptions): { signal?: AbortSignal } => options.signal === undefined ? {} : { signal: options.signal }

  const probe = async (options: AbortOptions): Promise<Probe[]> => {
    const others = group.members.filter((id) => id !== owner && !(init.lost ?? []).includes(id))
    const results = await Promise.all(others.map(async (id): Promise<Probe | undefined> => {
      try {
        const reply = await endpoint.request(id, { type: ERASURE_MESSAGES.versions }, { timeoutMs: probeTimeoutMs, ...signalOpt(options) })
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

  /** The layout most holders agree on (a corrupt copy loses the vote). */
  const fetchLayout = async (version: number, holders: ReadonlyMap<number, PeerId>, options: AbortOptions): Promise<PieceLayout> => {
    const votes = new Map<string, { layout: PieceLayout, count: number }>()
    await Promise.all([...holders].map(async ([piece, id]) => {
      try {
        const env = await endpoint.request(id, { type: ERASURE_MESSAGES.layout, step: version, body: { version, owner: ownerIndex } }, { timeoutMs: fetchTimeoutMs, ...signalOpt(options) })
        const body = parseBody(layoutReplySchema, env.header.body, 'layout reply')
        if (body.piece !== piece) throw new InvalidParametersError(`${id} holds piece ${body.piece}, expected ${piece}`)
        const layout = parsePieceLayout(body.layout)
        const key = JSON.stringify(layout)
        const v = votes.get(key)
        if (v === undefined) votes.set(key, { layout, count: 1 })
        else v.count++
      } catch (err) {
        if ((err as Error).name === 'AbortError') throw err
        log.warn({ peer: id, version, err: `${(err as Error).name}: ${(err as Error).message}` }, 'layout request failed')
      }
    }))
    const best = [...votes.values()].sort((a, b) => b.count - a.count)[0]
    if (best === undefined) throw new InsufficientShardsError(`No holder returned the layout of ${owner}'s version ${version}`)
    return best.layout
  }

  const rebuild = async (version: number, alive: readonly Probe[], options: AbortOptions): Promise<RecoveryReport> => {
    const codec = components.codec ?? createSchemeCodec(group.scheme, components)
    const t0 = clock.now()
    let fetched = 0
    let corrupt = 0
    let rebuiltChunks = 0
    let bytesFetched = 0
    let reconstructMs = 0
    try {
      const aliveIds = new Set(alive.filter((a) => a.complete.includes(version) || a.committed.includes(version)).map((a) => a.id))
      const holders = new Map<number, PeerId>()
      for (let q = 0; q < n - 1; q++) {
        const id = group.members[pieceHolder(group.scheme, ownerIndex, q)] as PeerId
        if (aliveIds.has(id)) holders.set(q, id)
      }
      if (holders.size < k) throw new InsufficientShardsError(`${holders.size} pieces of ${owner}'s version ${version} survive, ${k} needed`, { details: { pieces: holders.size, k } })
      // Aborted when one column fails, so the other columns' requests stop too.
      const inner = new AbortController()
      const signal = options.signal === undefined ? inner.signal : AbortSignal.any([inner.signal, options.signal])
      setMaxListeners(holders.size * inFlightPerHolder * 2 + 16, signal)
      options = { ...options, signal }
      const layout = await fetchLayout(version, holders, options)
      assertCodecMatches(codec, layout)
      const { pieceSize } = layout
      const image = new Uint8Array(k * pieceSize)
      const limits = new Map([...holders.values()].map((id) => [id, limiter(inFlightPerHolder)]))

      /** Fetches one chunk of piece `q` into `into` (or returns false when missing or corrupt). */
      const fetchChunk = async (q: number, chunk: number, into: Uint8Array): Promise<boolean> => {
        const id = holders.get(q)
        if (id === undefined) return false
        try {
          const got = await (limits.get(id) as ReturnType<typeof limiter>)(async () => {
            const env = await endpoint.request(id, { type: ERASURE_MESSAGES.fetch, step: version, body: { version, owner: ownerIndex, chunk } }, { timeoutMs: fetchTimeoutMs, ...signalOpt(options) })
            const body = parseBody(fetchReplySchema, env.header.body, 'fetch reply')
            if (body.piece !== q || body.chunk !== chunk) throw new InvalidParametersError(`${id} answered piece ${body.piece} chunk ${body.chunk}, asked ${q}/${chunk}`)
            return envelopeBytes(env)
          })
          fetched++
          bytesFetched += got.byteLength
          if (got.byteLength !== into.byteLength || crc32c(got) !== (layout.crcs[q] as readonly number[])[chunk]) {
            corrupt++
            log.warn({ peer: id, piece: q, chunk, version }, 'corrupt chunk treated as missing')
            return false
          }
          into.set(got)
          return true
        } catch (err) {
          if ((err as Error).name === 'AbortError') throw err
          log.warn({ peer: id, piece: q, chunk, version, err: `${(err as Error).name}: ${(err as Error).message}` }, 'chunk fetch failed')
          return false
        }
      }

      // The codec is called one column at a time: codecs reuse scratch memory between calls.
      let decodeChain: Promise<void> = Promise.resolve()
      const column = async (chunk: number): Promise<void> => {
        const { start, end } = chunkRange(layout, chunk)
        const size = end - start
        const dataViews = Array.from({ length: k }, (_, q) => image.subarray(q * pieceSize + start, q * pieceSize + end))
        const ok = await Promise.all(dataViews.map(async (view, q) => await fetchChunk(q, chunk, view)))
        const missing = ok.reduce((a, present) => a + (present ? 0 : 1), 0)
        if (missing === 0) return
        // Parity pieces k..n−2 are stored; fetch them until enough arrived for the missing data chunks.
        const parity: Array<Uint8Array | undefined> = new Array<Uint8Array | undefined>(m).fill(undefined)
        let have = 0
        for (let j = 0; j < m - 1 && have < missing; j++) {
          const buf = new Uint8Array(size)
          if (await fetchChunk(k + j, chunk, buf)) { parity[j] = buf; have++ }
        }
        if (have < missing) {
          throw new InsufficientShardsError(`Chunk ${chunk} of ${owner}'s version ${version}: ${missing} data chunks lost, ${have} parity chunks available`, { details: { chunk, missing, parity: have } })
        }
        const run = decodeChain.then(async () => {
          throwIfAborted(options.signal)
          const t1 = clock.now()
          await codec.reconstruct([...dataViews, ...parity], [...ok, ...parity.map((p) => p !== undefined)], options)
          reconstructMs += clock.now() - t1
        })
        decodeChain = run.catch(() => {})
        await run
        for (let q = 0; q < k; q++) {
          if (ok[q] === true) continue
          if (crc32c(dataViews[q] as Uint8Array) !== (layout.crcs[q] as readonly number[])[chunk]) {
            throw new ChecksumMismatchError(`Rebuilt chunk ${chunk} of piece ${q} of ${owner}'s version ${version} fails its CRC`)
          }
          rebuiltChunks++
        }
      }
      try {
        await Promise.all(Array.from({ length: chunkCount(layout) }, async (_, c) => { await column(c) }))
      } catch (err) {
        inner.abort(err)
        throw err
      }
      return {
        version,
        bytes: image.subarray(0, layout.length),
        alive: alive.map((a) => a.id),
        chunksFetched: fetched,
        chunksCorrupt: corrupt,
        chunksRebuilt: rebuiltChunks,
        bytesFetched,
        fetchMs: clock.now() - t0,
        reconstructMs
      }
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
          log.info({ version, bytes: report.bytes.byteLength, chunks: report.chunksFetched, corrupt: report.chunksCorrupt, rebuilt: report.chunksRebuilt, fetchMs: Math.round(report.fetchMs), reconstructMs: Math.round(report.reconstructMs) }, 'lost snapshot rebuilt from surviving pieces')
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
