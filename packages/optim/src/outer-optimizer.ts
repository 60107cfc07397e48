/**
 * The stateful outer optimiser of one replica: anchor, momentum, counters, and the exchange with
 * its group over an injected {@link Endpoint} (pairs) or {@link AllReduce} (all replicas).
 *
 * @module
 */
import {
  AbortError, ClosedError, InvalidParametersError, LayoutMismatchError, MessageTooLargeError, PeerUnreachableError, QueueFullError,
  StaleEpochError, TimeoutError, UnknownPeerError,
  componentLogger, decodeTensors, flattenStateDict, stateDictSize, systemClock, unflattenInto,
  type AbortOptions, type Clock, type Endpoint, type Envelope, type Logger, type OutboundMessage, type PeerId, type StateDict
} from '@phalanx/core'
import { applyOuterStep, pairExchangeCost, ringAllReduceCost, type SyncCost } from './outer-step.js'
import { pairFor } from './pairing.js'
import { resolveOuterSpec, type OuterGroup, type OuterSpec, type OuterSpecInput } from './spec.js'

/** Options handed to an {@link AllReduce}. */
export interface AllReduceOptions extends AbortOptions {
  /** The outer round the reduce belongs to (the same on every replica). */
  round: number
}

/**
 * The all-replica mean used by `group: 'all'` (DiLoCo, local SGD): writes the mean over every
 * replica of `input` into `out` (same length). It may report its communication cost; when it
 * reports nothing, a ring all-reduce is assumed ({@link ringAllReduceCost}).
 */
export type AllReduce = (input: Float32Array, out: Float32Array, options: AllReduceOptions) => Promise<Partial<SyncCost> | undefined | void>

/**
 * Who pairs with whom, from an outer round on. Pairings are a function of `(round, members)`, so
 * replicas agree on their partners only if they use the same members for the same round: a
 * coordinator publishes each change with the round it takes effect at (a round boundary ahead of
 * every replica), and the view's `version` travels in every exchange so that a replica still on an
 * older view is refused instead of pairing by a different list.
 */
export interface MembershipView {
  /** Increases with every change (the coordinator's membership epoch). */
  readonly version: number
  /** First outer round the view applies to. */
  readonly round: number
  /** Replica ids in rank order. */
  readonly members: readonly PeerId[]
}

/** Options of {@link OuterOptimizer.setMembers}. */
export interface SetMembersOptions {
  /**
   * First outer round the new members apply to. A round this replica has already started or
   * finished means "from its next sync on" (counted in {@link OuterMetrics.lateViews}).
   * @default this replica's current round (its next sync)
   */
  round?: number
  /**
   * Version of the view; a view whose version is not above the newest one known is ignored, so a
   * repeated broadcast is harmless.
   * @default the newest version + 1
   */
  version?: number
}

/** What an {@link OuterOptimizer} is created with. */
export interface OuterOptimizerInit {
  /** Preset name, preset plus overrides, or a complete spec (validated by {@link resolveOuterSpec}). */
  spec: OuterSpecInput
  /** The starting weights: they become the first anchor φ₀ (copied). Later joiners then call `importState`. */
  initial: Float32Array | StateDict
  /**
   * Replica ids in rank order, identical on every replica (the coordinator's membership view);
   * needed by `group: 'pair'` and replaced with `setMembers` when membership changes.
   * @default []
   */
  members?: readonly PeerId[]
  /**
   * This replica's id among `members`.
   * @default the endpoint's id
   */
  self?: PeerId
  /**
   * Seed of the pairing permutation; must be the same on every replica.
   * @default 0
   */
  seed?: number
  /**
   * How long a pair exchange may take (waiting for the partner's weights and for its receipt of
   * ours) before the replica gives up and applies a local outer step.
   * @default 5000
   */
  exchangeTimeoutMs?: number
  /**
   * Message type of the pair exchange (change it to run several optimisers over one endpoint).
   * @default 'outer-exchange'
   */
  messageType?: string
}

/** Collaborators of an {@link OuterOptimizer}. */
export interface OuterOptimizerComponents {
  /** Needed by `group: 'pair'`: the replica's endpoint, already connected to the other members. */
  endpoint?: Endpoint
  /** Needed by `group: 'all'`: the elastic core's mean over every replica. */
  allReduce?: AllReduce
  /** @default systemClock() */
  clock?: Clock
  /** @default silent */
  logger?: Logger
}

/** What one synchronisation did. */
export interface SyncReport {
  /** The outer round (0-based) this sync was. */
  round: number
  group: OuterGroup
  /** The partner's id (pair groups, when one was assigned). */
  partner?: PeerId
  /**
   * How the target mean was formed: over the group, or `local` (no partner this round, group
   * `none`) or `fallback` (the exchange failed; the replica stepped towards its own weights).
   */
  mode: 'group' | 'local' | 'fallback'
  /** Error class name that caused a fallback. */
  reason?: string
  /** Set when the partner was already past this round: the replica's next round (rounds between are skipped). */
  resyncedTo?: number
  /** Version of the membership view the round was paired by. */
  view: number
  /** Bytes this replica sent in this sync. */
  bytesSent: number
  /** Sequential communication rounds this sync took. */
  rounds: number
  /** Wall-clock milliseconds of the sync (injected clock). */
  durationMs: number
}

/** Cumulative communication and fault counters of one replica. */
export interface OuterMetrics {
  /** Outer steps applied. */
  syncs: number
  /** Outer steps whose exchange failed and that fell back to a local step. */
  fallbacks: number
  /** Rounds with no partner (odd replica count). */
  sitOuts: number
  /** Bytes sent and received by the outer optimiser (tensor payload). */
  bytesSent: number
  bytesReceived: number
  /** Sequential communication rounds, summed over syncs. */
  rounds: number
  /** Inbound exchanges refused (stale or future round, wrong partner, wrong size). */
  rejected: number
  /** Exchanges where the partner's weights arrived but our own send was not acknowledged. */
  unacknowledged: number
  /** Rounds skipped to catch up with partners that were already past them. */
  skippedRounds: number
  /** Exchanges refused in either direction because the two replicas held different membership views for the round. */
  viewMismatches: number
  /** Views that arrived after the round they were meant to start at (applied from the next sync). */
  lateViews: number
  /** Syncs that fell back at once because the partner's connection had dropped (no send, no wait). */
  partnerDown: number
}

/**
 * One replica's outer optimiser. Call {@link OuterOptimizer.step} after every inner step (it
 * synchronises every `interval` steps) or {@link OuterOptimizer.sync} directly; both overwrite the
 * given weights with the new anchor (`θ ← φ`). The inner optimiser's state is not touched.
 */
export interface OuterOptimizer extends AsyncDisposable {
  /** The resolved spec. */
  readonly spec: OuterSpec
  /** Number of float32 parameters. */
  readonly size: number
  /** Index of the next outer round. */
  readonly round: number
  /** Inner steps counted by {@link step}. */
  readonly innerSteps: number
  /** Registers the pair-exchange handler (pair groups). Idempotent. */
  start(): void
  /** Removes the handler and aborts an exchange in flight. Idempotent. */
  stop(): Promise<void>
  /**
   * Installs a new membership view (ids in rank order, identical on every replica) from
   * `options.round` on; earlier rounds keep the view they had. Views with a version not above the
   * newest known are ignored.
   */
  setMembers(members: readonly PeerId[], options?: SetMembersOptions): void
  /** The view in force for `round` (default: the current round). */
  view(round?: number): MembershipView
  /** Counts one inner step; on every `interval`-th runs {@link sync} and returns its report. */
  step(params: Float32Array | StateDict, options?: AbortOptions): Promise<SyncReport | undefined>
  /**
   * Runs one outer step now: forms the group target, updates anchor and momentum, writes the new
   * anchor into `params`. A pair exchange that fails or times out falls back to a local step
   * (counted, logged); an `allReduce` failure rejects (the coordinator retries the round).
   * @throws `ClosedError` when not started, `AbortError`, or the `allReduce`'s error
   */
  sync(params: Float32Array | StateDict, options?: AbortOptions): Promise<SyncReport>
  /** A snapshot of the counters. */
  metrics(): OuterMetrics
  /** Anchor, momentum and counters as a state dict (copies): what a joining replica heals from. */
  exportState(): StateDict
  /** Adopts a peer's {@link exportState} (anchor, momentum, round, inner steps). */
  importState(state: StateDict): void
}

const ANCHOR = 'outer/anchor'
const MOMENTUM = 'outer/momentum'
const THETA = 'theta'
const NOT_SENT: ReadonlySet<string> = new Set([UnknownPeerError.name, PeerUnreachableError.name, QueueFullError.name, MessageTooLargeError.name, ClosedError.name])

interface Inbound {
  from: PeerId
  data: Float32Array
}

interface Waiter {
  round: number
  from: PeerId
  resolve: (data: Float32Array) => void
}

/**
 * Creates one replica's outer optimiser.
 *
 * @throws {InvalidConfigError} for a bad spec
 * @throws {InvalidParametersError} when a pair group has no endpoint or an `all` group no allReduce
 */
export function createOuterOptimizer (init: OuterOptimizerInit, components: OuterOptimizerComponents = {}): OuterOptimizer {
  const spec = resolveOuterSpec(init.spec)
  const { endpoint, allReduce } = components
  if (spec.group === 'pair' && endpoint === undefined) throw new InvalidParametersError('A pair outer optimiser needs an endpoint')
  if (spec.group === 'all' && allReduce === undefined) throw new InvalidParametersError('An all-replica outer optimiser needs an allReduce')
  const exchangeTimeoutMs = init.exchangeTimeoutMs ?? 5000
  if (!(exchangeTimeoutMs > 0)) throw new InvalidParametersError(`exchangeTimeoutMs must be positive, got ${exchangeTimeoutMs}`)
  const seed = init.seed ?? 0
  if (!Number.isSafeInteger(seed) || seed < 0) throw new InvalidParametersError(`seed must be a non-negative integer, got ${seed}`)
  const messageType = init.messageType ?? 'outer-exchange'
  const clock = components.clock ?? systemClock()
  const log = componentLogger(components.logger, 'outer-optimizer')
  const self = init.self ?? endpoint?.id
  if (spec.group === 'pair' && self === undefined) throw new InvalidParametersError('A pair outer optimiser needs `self` or an endpoint')

  const anchor = init.initial instanceof Float32Array ? init.initial.slice() : flattenStateDict(init.initial)
  const size = anchor.length
  const momentum = new Float32Array(size)
  const flat = new Float32Array(size)
  const meanBuf = spec.group === 'all' ? new Float32Array(size) : undefined
  // Two receive slots: an exchange can only be for this round or the next one.
  const recv = spec.group === 'pair' ? [new Float32Array(size), new Float32Array(size)] : []
  let sendBuf: Float32Array | undefined

  // Views sorted by first round; the first one applies from round 0. Older ones are pruned once
  // no round they cover can still be exchanged.
  let views: MembershipView[] = [{ version: 0, round: 0, members: [...(init.members ?? [])] }]
  // Peers whose connection dropped: a partner among them gets a fallback at once instead of a send
  // that waits for its deadline (`peer:disconnect` fires once, maybe rounds before the pairing).
  const down = new Set<PeerId>()
  let offDisconnect: (() => void) | undefined
  let round = 0
  let innerSteps = 0
  let started = false
  let syncing = false
  let lifecycle = new AbortController()
  let removeHandler: (() => void) | undefined
  const inbox = new Map<number, Inbound>()
  let waiter: Waiter | undefined
  const counters: OuterMetrics = {
    syncs: 0, fallbacks: 0, sitOuts: 0, bytesSent: 0, bytesReceived: 0, rounds: 0, rejected: 0, unacknowledged: 0, skippedRounds: 0,
    viewMismatches: 0, lateViews: 0, partnerDown: 0
  }

  const viewFor = (r: number): MembershipView => {
    let v = views[0] as MembershipView
    for (const candidate of views) if (candidate.round <= r) v = candidate
    return v
  }

  const partnerFor = (r: number): PeerId | undefined => {
    const members = viewFor(r).members
    const rank = members.indexOf(self as PeerId)
    if (rank < 0) throw new InvalidParametersError(`Replica "${String(self)}" is not among the members`)
    const p = pairFor(r, seed, members.length).partners[rank] as number
    return p < 0 ? undefined : members[p]
  }

  const refuse = (err: Error, details: Record<string, unknown>): never => {
    counters.rejected++
    log.debug({ ...details, reason: err.name }, 'refused an outer exchange')
    throw err
  }

  const onExchange = (envelope: Envelope): OutboundMessage => {
    const r = envelope.header.step
    const from = envelope.peer
    // `now` tells a lagging partner where the others are, so it can skip ahead (see `resyncTo`).
    if (r < round) refuse(new StaleEpochError(`Outer round ${r} is over (now ${round})`, { details: { now: round } }), { round: r, from })
    if (r > round + 1) refuse(new InvalidParametersError(`Outer round ${r} is too far ahead (now ${round})`), { round: r, from })
    if (inbox.has(r)) refuse(new InvalidParametersError(`Outer round ${r} already received`), { round: r, from })
    let expected: PeerId | undefined
    try {
      expected = partnerFor(r)
    } catch (err) {
      refuse(err as Error, { round: r, from })
    }
    const view = viewFor(r).version
    const theirView = (envelope.header.body as { view?: unknown } | undefined)?.view
    if (theirView !== view) {
      counters.viewMismatches++
      // A sender on an older view learns it from StaleEpochError; one on a newer view is ahead of us.
      const Err = typeof theirView === 'number' && theirView < view ? StaleEpochError : InvalidParametersError
      refuse(new Err(`Round ${r} is paired by membership view ${view} here, ${String(theirView)} at "${from}"`, { details: { view } }), { round: r, from, view, theirView })
    }
    if (expected !== from) refuse(new InvalidParametersError(`"${from}" is not this replica's partner in round ${r}`), { round: r, from })
    down.delete(from)
    const tensors = decodeTensors(envelope)
    const theta = tensors[0]
    if (tensors.length !== 1 || theta === undefined || theta.name !== THETA || theta.data.length !== size) {
      refuse(new LayoutMismatchError(`Outer exchange must carry one "${THETA}" tensor of ${size} values`), { round: r, from })
    }
    // Copy out at once: the frames may be the sender's own memory (in-process transport).
    const slot = recv[r % 2] as Float32Array
    slot.set((theta as { data: Float32Array }).data)
    counters.bytesReceived += size * 4
    inbox.set(r, { from, data: slot })
    if (waiter !== undefined && waiter.round === r && waiter.from === from) waiter.resolve(slot)
    return { type: `${messageType}-ack`, step: r }
  }

  const waitForPartner = async (r: number, partner: PeerId, signal: AbortSignal): Promise<Float32Array> => {
    const ready = inbox.get(r)
    if (ready !== undefined && ready.from === partner) return ready.data
    let timer: { cancel: () => void } | undefined
    let offDisconnect: (() => void) | undefined
    let onAbort: (() => void) | undefined
    try {
      return await new Promise<Float32Array>((resolve, reject) => {
        waiter = { round: r, from: partner, resolve }
        timer = clock.setTimeout(() => { reject(new TimeoutError(`No weights from partner "${partner}" within ${exchangeTimeoutMs} ms`)) }, exchangeTimeoutMs)
        offDisconnect = endpoint?.on('peer:disconnect', (peer) => {
          if (peer === partner) reject(new PeerUnreachableError(`Partner "${partner}" disconnected`))
        })
        onAbort = () => { reject(new AbortError(undefined, { cause: signal.reason })) }
        if (signal.aborted) onAbort()
        else signal.addEventListener('abort', onAbort, { once: true })
      })
    } finally {
      waiter = undefined
      timer?.cancel()
      offDisconnect?.()
      if (onAbort !== undefined) signal.removeEventListener('abort', onAbort)
    }
  }

  /** One symmetric round: send ours, receive theirs; resolves with theirs, or undefined on failure. */
  const exchange = async (r: number, view: number, partner: PeerId, theta: Float32Array, signal: AbortSignal): Promise<{ theirs?: Float32Array, reason?: string, resyncTo?: number }> => {
    const ep = endpoint as Endpoint
    // Never reuse a buffer whose send was not acknowledged: the transport may still be reading it.
    const out = sendBuf ?? new Float32Array(size)
    sendBuf = undefined
    out.set(theta)
    const local = new AbortController()
    const onAbort = (): void => { local.abort(signal.reason) }
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      let gotTheirs = false
      const ack = ep.request(partner, { type: messageType, step: r, body: { view }, tensors: [{ name: THETA, shape: [size], dtype: 'float32', data: out }] },
        { timeoutMs: exchangeTimeoutMs, signal: local.signal }).catch((err: unknown) => {
        // A partner that cannot take our weights (gone, stopped, in another round) will not send
        // its own for this round either: stop waiting instead of running into the deadline.
        if (!gotTheirs) local.abort(err)
        throw err
      })
      const theirs = waitForPartner(r, partner, local.signal).then((data) => { gotTheirs = true; return data }, (err: unknown) => {
        // Our partner is gone: stop waiting for its receipt of our weights as well.
        local.abort(err)
        throw err
      })
      const [ackResult, theirsResult] = await Promise.allSettled([ack, theirs])
      if (ackResult.status === 'fulfilled') sendBuf = out
      // Count what went on the wire, acknowledged or not; these errors mean nothing left.
      if (ackResult.status === 'fulfilled' || !NOT_SENT.has((ackResult.reason as Error).name)) counters.bytesSent += size * 4
      if (signal.aborted) throw new AbortError(undefined, { cause: signal.reason })
      if (theirsResult.status === 'fulfilled') {
        if (ackResult.status === 'rejected') {
          counters.unacknowledged++
          log.debug({ round: r, partner, reason: (ackResult.reason as Error).name }, 'partner weights arrived but ours were not acknowledged')
        }
        return { theirs: theirsResult.value }
      }
      const waitError = theirsResult.reason as Error
      // When the wait was cut short by our own failed send, the send's error is the real reason.
      if (waitError.name === AbortError.name && ackResult.status === 'rejected') {
        const sendError = ackResult.reason as Error & { details?: { now?: unknown, view?: unknown } }
        if (sendError.details?.view !== undefined) counters.viewMismatches++
        const now = sendError.details?.now
        // The partner is already past this round: we fell behind (e.g. a fallback waited out a
        // deadline). Pairings are a function of the round, so rounds must line up again.
        if (sendError.name === StaleEpochError.name && typeof now === 'number' && Number.isInteger(now) && now > r + 1) return { reason: sendError.name, resyncTo: now }
        return { reason: sendError.name }
      }
      return { reason: waitError.name }
    } finally {
      signal.removeEventListener('abort', onAbort)
      local.abort()
    }
  }

  /** Drops views no longer in force for any round from the current one on. */
  const pruneViews = (): void => {
    let keepFrom = 0
    for (let i = 0; i < views.length; i++) if ((views[i] as MembershipView).round <= round) keepFrom = i
    if (keepFrom > 0) views = views.slice(keepFrom)
  }

  const finish = (r: number): void => {
    round = r + 1
    for (const k of inbox.keys()) if (k <= r) inbox.delete(k)
    pruneViews()
  }

  const optimizer: OuterOptimizer = {
    spec,
    size,
    get round () { return round },
    get innerSteps () { return innerSteps },

    start () {
      if (started) return
      started = true
      lifecycle = new AbortController()
      if (spec.group === 'pair') {
        removeHandler = (endpoint as Endpoint).handle(messageType, onExchange)
        offDisconnect = (endpoint as Endpoint).on('peer:disconnect', (peer) => { down.add(peer) })
      }
    },

    async stop () {
      if (!started) return
      started = false
      lifecycle.abort(new ClosedError('Outer optimiser stopped'))
      removeHandler?.()
      removeHandler = undefined
      offDisconnect?.()
      offDisconnect = undefined
      inbox.clear()
    },

    setMembers (next, options = {}) {
      const newest = (views[views.length - 1] as MembershipView).version
      const version = options.version ?? newest + 1
      if (!Number.isSafeInteger(version) || version < 0) throw new InvalidParametersError(`view version must be a non-negative integer, got ${version}`)
      if (version <= newest) {
        log.debug({ version, newest }, 'ignored a membership view that is not newer')
        return
      }
      const requested = options.round ?? round
      if (!Number.isSafeInteger(requested) || requested < 0) throw new InvalidParametersError(`view round must be a non-negative integer, got ${requested}`)
      // The round in flight (or done) keeps its pairing: changing it now would split a pair.
      const first = syncing ? round + 1 : round
      let from = requested
      if (requested < first) {
        from = first
        counters.lateViews++
        log.warn({ version, requested, from }, 'membership view arrived after its round; applied from the next sync')
      }
      const members = [...next]
      views = views.filter((v) => v.round < from)
      views.push({ version, round: from, members })
      // The coordinator vouches for these members again (e.g. a replica that restarted).
      for (const m of members) down.delete(m)
      // Inbound weights already accepted for rounds the new view re-pairs are from the old pairing.
      for (const [k, v] of inbox) {
        if (k < from) continue
        let partner: PeerId | undefined
        try { partner = partnerFor(k) } catch { partner = undefined }
        if (partner !== v.from) inbox.delete(k)
      }
      pruneViews()
    },

    view (r = round) {
      const v = viewFor(r)
      return { version: v.version, round: v.round, members: [...v.members] }
    },

    async step (params, options = {}) {
      innerSteps++
      if (innerSteps % spec.interval !== 0) return undefined
      return await optimizer.sync(params, options)
    },

    async sync (params, options = {}) {
      if (!started) throw new ClosedError('Outer optimiser is not started')
      if (syncing) throw new InvalidParametersError('A sync is already in progress')
      const isFlat = params instanceof Float32Array
      const theta = isFlat ? params : flattenStateDict(params, flat)
      if (theta.length !== size) throw new LayoutMismatchError(`Parameters have ${theta.length} values, the optimiser ${size}`)
      const signal = options.signal === undefined ? lifecycle.signal : AbortSignal.any([options.signal, lifecycle.signal])
      if (signal.aborted) throw new AbortError(undefined, { cause: signal.reason })
      syncing = true
      const r = round
      let skipTo: number | undefined
      const startedAt = clock.now()
      const view = viewFor(r)
      const report: SyncReport = { round: r, group: spec.group, mode: 'group', bytesSent: 0, rounds: 0, durationMs: 0, view: view.version }
      try {
        if (spec.group === 'none') {
          report.mode = 'local'
          applyOuterStep(spec, anchor, momentum, theta)
        } else if (spec.group === 'all') {
          const cost = (await (allReduce as AllReduce)(theta, meanBuf as Float32Array, { round: r, signal })) ?? {}
          if (signal.aborted) throw new AbortError(undefined, { cause: signal.reason })
          const ring = ringAllReduceCost(view.members.length, size * 4)
          report.bytesSent = cost.bytesSent ?? ring.bytesSent
          report.rounds = cost.rounds ?? ring.rounds
          counters.bytesReceived += report.bytesSent
          applyOuterStep(spec, anchor, momentum, meanBuf as Float32Array)
        } else {
          const partner = partnerFor(r)
          if (partner === undefined) {
            report.mode = 'local'
            counters.sitOuts++
            applyOuterStep(spec, anchor, momentum, theta)
          } else {
            report.partner = partner
            const sentBefore = counters.bytesSent
            let outcome: { theirs?: Float32Array, reason?: string, resyncTo?: number }
            if (down.has(partner)) {
              counters.partnerDown++
              outcome = { reason: PeerUnreachableError.name }
            } else {
              outcome = await exchange(r, view.version, partner, theta, signal)
              report.rounds = pairExchangeCost(size * 4).rounds
            }
            const { theirs, reason, resyncTo } = outcome
            if (resyncTo !== undefined) skipTo = resyncTo
            report.bytesSent = counters.bytesSent - sentBefore
            if (theirs !== undefined) {
              applyOuterStep(spec, anchor, momentum, theta, theirs)
            } else {
              report.mode = 'fallback'
              if (reason !== undefined) report.reason = reason
              counters.fallbacks++
              log.warn({ round: r, partner, reason, ...(resyncTo === undefined ? {} : { resyncTo }) }, 'pair exchange failed; applied a local outer step')
              applyOuterStep(spec, anchor, momentum, theta)
            }
          }
        }
        if (spec.group === 'all') counters.bytesSent += report.bytesSent
        counters.rounds += report.rounds
        counters.syncs++
        theta.set(anchor)
        if (!isFlat) unflattenInto(params, theta)
        // A replica that fell behind skips the rounds its peers have finished, so its next pairing
        // is theirs again (counted: those rounds brought it no outer step).
        finish(skipTo === undefined ? r : skipTo - 1)
        if (skipTo !== undefined) {
          counters.skippedRounds += skipTo - r - 1
          report.resyncedTo = skipTo
        }
        report.durationMs = clock.now() - startedAt
        return report
      } finally {
        syncing = false
      }
    },

    metrics () {
      return { ...counters }
    },

    exportState () {
      return {
        tensors: [
          { name: ANCHOR, shape: [size], dtype: 'float32', data: anchor.slice() },
          { name: MOMENTUM, shape: [size], dtype: 'float32', data: momentum.slice() }
        ],
        meta: { step: innerSteps, epoch: 0, outerRound: round, spec: spec.preset ?? null }
      }
    },

    importState (state) {
      if (syncing) throw new InvalidParametersError('Cannot import state during a sync')
      const a = state.tensors.find((t) => t.name === ANCHOR)
      const m = state.tensors.find((t) => t.name === MOMENTUM)
      if (a === undefined || m === undefined || a.data.length !== size || m.data.length !== size) {
        throw new LayoutMismatchError(`Outer state must hold "${ANCHOR}" and "${MOMENTUM}" of ${size} values each`)
      }
      const r = state.meta.outerRound
      if (typeof r !== 'number' || !Number.isSafeInteger(r) || r < 0) throw new InvalidParametersError('Outer state meta.outerRound must be a non-negative integer')
      anchor.set(a.data)
      momentum.set(m.data)
      round = r
      innerSteps = state.meta.step
      inbox.clear()
    },

    async [Symbol.asyncDispose] () {
      await optimizer.stop()
    }
  }
  return optimizer
}

/** Number of float32 values of a parameter vector or state dict (a convenience for sizing buffers). */
export function parameterCount (params: Float32Array | StateDict): number {
  return params instanceof Float32Array ? params.length : stateDictSize(params)
}
