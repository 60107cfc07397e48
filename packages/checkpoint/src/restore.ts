import { NotFoundError, componentLogger, throwIfAborted, type AbortOptions, type Logger, type StateDict } from '@phalanx/core'
import type { HolderClient } from './holder-client.js'
import type { CheckpointStore } from './store.js'

/**
 * The L1 tier: erasure-coded in-memory snapshots spread over peers. Only the contract lives here;
 * the Reed-Solomon / XOR implementation comes with the `./erasure` codecs.
 */
export interface L1Source {
  /** Step of the newest snapshot committed by a quorum that can still be decoded, or undefined. */
  latestStep(options?: AbortOptions): Promise<number | undefined>
  /** Fetches enough shards from peers, decodes and verifies the newest decodable snapshot. */
  restore(options?: AbortOptions): Promise<{ step: number, state: StateDict }>
}

/** The tiers {@link restoreBest} may restore from; any may be absent. */
export interface RestoreSources {
  /** L0: this host's snapshot holder. */
  holder?: HolderClient
  /** L1: erasure-coded snapshots on peers. */
  l1?: L1Source
  /** L2: durable checkpoints. */
  store?: CheckpointStore
}

/** A tier's name. */
export type Tier = 'L0' | 'L1' | 'L2'

/** What {@link restoreBest} restored, and what it passed over. */
export interface BestRestore {
  readonly tier: Tier
  readonly step: number
  readonly state: StateDict
  /** Tiers that were unreachable, empty, or failed verification, with the reason. */
  readonly skipped: ReadonlyArray<{ tier: Tier, step?: number, error: string }>
}

const RANK: Record<Tier, number> = { L0: 0, L1: 1, L2: 2 }

/**
 * Restores the newest committed state: every tier reports its newest step, the highest step wins,
 * and on a tie the fastest tier (L0, then L1, then L2). A candidate that fails (unreachable holder,
 * corrupt data) is logged and the next one is tried. Throws `NotFoundError` when nothing restores.
 */
export async function restoreBest (sources: RestoreSources, options: AbortOptions & { logger?: Logger } = {}): Promise<BestRestore> {
  const log = componentLogger(options.logger, 'restore')
  const skipped: Array<{ tier: Tier, step?: number, error: string }> = []
  const candidates: Array<{ tier: Tier, step: number, load: () => Promise<{ step: number, state: StateDict }> }> = []
  const describe = (err: unknown): string => `${(err as Error).name}: ${(err as Error).message}`

  const probe = async (tier: Tier, fn: () => Promise<void>): Promise<void> => {
    try {
      await fn()
    } catch (err) {
      if ((err as Error).name === 'AbortError') throw err
      skipped.push({ tier, error: describe(err) })
      log.warn({ tier, err: describe(err) }, 'tier unavailable')
    }
  }
  const { holder, l1, store } = sources
  await Promise.all([
    holder === undefined
      ? undefined
      : probe('L0', async () => {
        const h = await holder.latest(options)
        if (h !== undefined) candidates.push({ tier: 'L0', step: h.step, load: async () => { const r = await holder.restore(options); return { step: r.held.step, state: r.state } } })
      }),
    l1 === undefined
      ? undefined
      : probe('L1', async () => {
        const step = await l1.latestStep(options)
        if (step !== undefined) candidates.push({ tier: 'L1', step, load: async () => await l1.restore(options) })
      }),
    store === undefined
      ? undefined
      : probe('L2', async () => {
        for (const info of await store.list(options)) {
          candidates.push({ tier: 'L2', step: info.step, load: async () => { const r = await store.restore({ ...options, id: info.id }); return { step: r.info.step, state: r.state } } })
        }
      })
  ])
  candidates.sort((a, b) => b.step - a.step || RANK[a.tier] - RANK[b.tier])
  for (const c of candidates) {
    throwIfAborted(options.signal)
    try {
      const { step, state } = await c.load()
      log.info({ tier: c.tier, step }, 'state restored')
      return { tier: c.tier, step, state, skipped }
    } catch (err) {
      if ((err as Error).name === 'AbortError') throw err
      skipped.push({ tier: c.tier, step: c.step, error: describe(err) })
      log.error({ tier: c.tier, step: c.step, err: describe(err) }, 'restore candidate failed, trying the next')
    }
  }
  throw new NotFoundError('No tier holds a restorable state', { details: { skipped: skipped.map((s) => `${s.tier}${s.step === undefined ? '' : `@${s.step}`}: ${s.error}`) } })
}
