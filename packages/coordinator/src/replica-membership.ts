/**
 * Replica membership of the low-communication optimisers (NoLoCo, gossip, DiLoCo): the coordinator
 * side of the protocol in `@phalanx/core`'s `replicas.ts`. It admits replicas from their
 * heartbeats, runs the failure detector over them (silence, and the transport's `peer:disconnect`),
 * and on every loss, departure, join or restart publishes a new view to every member, from an outer
 * round ahead of any round a member can have started, so all replicas switch pairings at the same
 * round boundary. `@phalanx/optim`'s membership client is the other end.
 *
 * @module
 */
import {
  ClosedError, InvalidParametersError, ReplicaMessage, StaleEpochError,
  componentLogger, parseReplicaBody, replicaHeartbeatBodySchema, replicaLeaveBodySchema, systemClock,
  type AbortOptions, type Clock, type Endpoint, type Envelope, type Logger, type OutboundMessage, type PeerId,
  type ReplicaHeartbeatReply, type ReplicaMember, type ReplicaViewBody, type TimerHandle
} from '@phalanx/core'
import { createFailureDetector } from './failure-detector.js'

/** Tunables of {@link createReplicaMembership}. */
export interface ReplicaMembershipInit {
  /**
   * Replicas that must have joined before the first view is published (the rendezvous).
   * @default 1
   */
  minReplicas?: number
  /**
   * Most replicas admitted; heartbeats of further ones are answered `member: false`.
   * @default 4096
   */
  maxReplicas?: number
  /**
   * Silence after which a member is declared lost (its dropped connection loses it at once).
   * @default 1000
   */
  suspectAfterMs?: number
  /**
   * How often silent members are looked for.
   * @default 100
   */
  checkIntervalMs?: number
  /**
   * A new view starts this many rounds past the furthest round any member is predicted to be in
   * (its last reported round, advanced by its measured round rate over the time since): room for
   * the view to reach every replica before any of them starts that round.
   * @default 2
   */
  leadRounds?: number
}

/** Collaborators of {@link createReplicaMembership}. */
export interface ReplicaMembershipComponents {
  /** The coordinator's endpoint; it dials every admitted replica to publish views. */
  endpoint: Endpoint
  /** @default systemClock() */
  clock?: Clock
  /** @default silent */
  logger?: Logger
}

/** Why the membership changed. */
export type ReplicaChangeKind = 'join' | 'lost' | 'left' | 'restart'

/** One membership change and the view published for it. */
export interface ReplicaChange {
  readonly kinds: ReadonlyArray<{ readonly kind: ReplicaChangeKind, readonly id: PeerId, readonly reason?: string }>
  readonly view: ReplicaViewBody
}

/** Events of a {@link ReplicaMembership}. */
export interface ReplicaMembershipEvents {
  /** A view was published (after the rendezvous: on every change). */
  view: (change: ReplicaChange) => void
}

/** Counters of a {@link ReplicaMembership}. */
export interface ReplicaMembershipMetrics {
  /** Views published. */
  views: number
  joins: number
  losses: number
  leaves: number
  restarts: number
  /** Heartbeats accepted. */
  heartbeats: number
  /** Heartbeats and leaves refused, by error class name. */
  rejected: Record<string, number>
  /** View messages that could not be queued to a member. */
  sendFailures: number
}

/**
 * The coordinator's picture of which replicas train together. Start it once its endpoint is open;
 * replicas then join by heartbeating it.
 */
export interface ReplicaMembership extends AsyncDisposable {
  /** Registers the heartbeat and leave handlers, the disconnect listener and the silence check. Idempotent. */
  start(options?: AbortOptions): Promise<void>
  /** Removes every handler, listener and timer. Idempotent. */
  stop(options?: AbortOptions): Promise<void>
  /** Version of the newest published view (0 before the rendezvous). */
  readonly version: number
  /** The newest published view, or undefined before the rendezvous. */
  view(): ReplicaViewBody | undefined
  /** Current members in rank order (copies). */
  members(): ReplicaMember[]
  /** The furthest outer round any member reported. */
  highestRound(): number
  /** Declares `id` lost now (an external failure signal); publishes a view when it was a member. */
  remove(id: PeerId, reason?: string): Promise<void>
  /** Subscribes to an event; returns the unsubscribe function. */
  on<E extends keyof ReplicaMembershipEvents>(event: E, listener: ReplicaMembershipEvents[E]): () => void
  /** A snapshot of the counters. */
  metrics(): ReplicaMembershipMetrics
}

interface Replica {
  id: PeerId
  address: string
  incarnation: string
  round: number
  /** Clock time of the last heartbeat. */
  heardAt: number
  /** Clock time the reported round last increased, and the smoothed milliseconds per round. */
  roundAt: number
  msPerRound?: number
  /** View version the replica reported holding. */
  view: number
}

// Old incarnations remembered per id, so that a late heartbeat of a replaced process is refused.
const RETIRED_PER_ID = 8

/** Creates the replica membership of one job. */
export function createReplicaMembership (init: ReplicaMembershipInit, components: ReplicaMembershipComponents): ReplicaMembership {
  const minReplicas = init.minReplicas ?? 1
  const maxReplicas = init.maxReplicas ?? 4096
  const suspectAfterMs = init.suspectAfterMs ?? 1000
  const checkIntervalMs = init.checkIntervalMs ?? 100
  const leadRounds = init.leadRounds ?? 2
  if (!Number.isInteger(minReplicas) || minReplicas < 1) throw new InvalidParametersError(`minReplicas must be a positive integer, got ${minReplicas}`)
  if (!Number.isInteger(maxReplicas) || maxReplicas < minReplicas) throw new InvalidParametersError(`maxReplicas must be an integer >= minReplicas, got ${maxReplicas}`)
  if (!(checkIntervalMs > 0)) throw new InvalidParametersError(`checkIntervalMs must be positive, got ${checkIntervalMs}`)
  if (!Number.isInteger(leadRounds) || leadRounds < 1) throw new InvalidParametersError(`leadRounds must be a positive integer, got ${leadRounds}`)
  const { endpoint } = components
  const clock = components.clock ?? systemClock()
  const log = componentLogger(components.logger, 'replica-membership')
  const detector = createFailureDetector({ suspectAfterMs, stepTimeoutMs: suspectAfterMs }, { clock })

  const replicas = new Map<PeerId, Replica>()
  const retired = new Map<PeerId, string[]>()
  const listeners = new Set<ReplicaMembershipEvents['view']>()
  const cleanups: Array<() => void> = []
  let tick: TimerHandle | undefined
  let started = false
  let version = 0
  let current: ReplicaViewBody | undefined
  let highest = 0
  const counters: ReplicaMembershipMetrics = { views: 0, joins: 0, losses: 0, leaves: 0, restarts: 0, heartbeats: 0, rejected: {}, sendFailures: 0 }

  const refuse = (err: Error, peer: string): never => {
    counters.rejected[err.name] = (counters.rejected[err.name] ?? 0) + 1
    log.warn({ peer, reason: err.name, err: err.message }, 'refused a replica message')
    throw err
  }

  const retire = (id: PeerId, incarnation: string): void => {
    const list = retired.get(id) ?? []
    list.push(incarnation)
    if (list.length > RETIRED_PER_ID) list.shift()
    retired.set(id, list)
  }

  /** The first round of a new view: past the furthest round any member can be in by now. */
  const nextViewRound = (): number => {
    const now = clock.now()
    let training = false
    let furthest = 0
    for (const r of replicas.values()) {
      if (r.view > 0) training = true
      const elapsed = r.msPerRound === undefined ? 0 : Math.floor((now - r.heardAt) / r.msPerRound)
      furthest = Math.max(furthest, r.round + elapsed)
    }
    // Before anyone trains (the rendezvous), nobody has started the round they report.
    const round = training ? furthest + leadRounds : furthest
    return Math.max(round, current?.round ?? 0)
  }

  const publish = async (kinds: ReplicaChange['kinds']): Promise<void> => {
    if (current === undefined && replicas.size < minReplicas) {
      log.info({ replicas: replicas.size, minReplicas }, 'waiting for replicas before the first view')
      return
    }
    // A restarted coordinator continues above every version its replicas hold, or they would ignore it.
    for (const r of replicas.values()) version = Math.max(version, r.view)
    version++
    const members = [...replicas.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)).map((r) => ({ id: r.id, address: r.address }))
    const view: ReplicaViewBody = { version, round: nextViewRound(), members }
    current = view
    counters.views++
    log.info({ version, round: view.round, members: members.length, highest, changes: kinds }, 'published a replica view')
    const message: OutboundMessage = { type: ReplicaMessage.view, epoch: version, body: view }
    await Promise.all(members.map(async (m) => {
      try {
        await endpoint.send(m.id, message)
      } catch (err) {
        // The heartbeat reply repeats the view to a replica that missed it.
        counters.sendFailures++
        log.warn({ peer: m.id, version, reason: (err as Error).name }, 'could not send a replica view')
      }
    }))
    for (const l of listeners) {
      try { l({ kinds, view }) } catch (err) { log.warn({ err }, 'view listener failed') }
    }
  }

  const drop = (ids: readonly PeerId[], kind: 'lost' | 'left', reason: string): ReplicaChange['kinds'] => {
    const kinds: Array<{ kind: ReplicaChangeKind, id: PeerId, reason: string }> = []
    for (const id of ids) {
      const r = replicas.get(id)
      if (r === undefined) continue
      replicas.delete(id)
      detector.forget(id)
      retire(id, r.incarnation)
      endpoint.disconnect(id)
      if (kind === 'lost') counters.losses++
      else counters.leaves++
      log.warn({ id, kind, reason, round: r.round }, 'replica left the membership')
      kinds.push({ kind, id, reason })
    }
    return kinds
  }

  const onHeartbeat = async (envelope: Envelope): Promise<OutboundMessage> => {
    const body = (() => {
      try { return parseReplicaBody(replicaHeartbeatBodySchema, envelope.header.body, ReplicaMessage.heartbeat) } catch (err) { return refuse(err as Error, envelope.peer) }
    })()
    if (body.id !== envelope.peer) refuse(new InvalidParametersError(`Heartbeat names "${body.id}" but came from "${envelope.peer}"`), envelope.peer)
    const known = replicas.get(body.id)
    if (retired.get(body.id)?.includes(body.incarnation) === true && known?.incarnation !== body.incarnation) {
      refuse(new StaleEpochError(`Incarnation ${body.incarnation} of "${body.id}" was replaced or declared lost`), envelope.peer)
    }
    if (known !== undefined && known.incarnation === body.incarnation && body.round < known.round) {
      refuse(new StaleEpochError(`Heartbeat reports round ${body.round}, "${body.id}" already reported ${known.round}`, { details: { round: known.round } }), envelope.peer)
    }
    counters.heartbeats++
    const now = clock.now()
    detector.heard(body.id)
    highest = Math.max(highest, body.round)
    let change: ReplicaChange['kinds'] | undefined
    if (known !== undefined && known.incarnation === body.incarnation) {
      if (body.round > known.round) {
        const sample = (now - known.roundAt) / (body.round - known.round)
        known.msPerRound = known.msPerRound === undefined ? sample : 0.5 * known.msPerRound + 0.5 * sample
        known.roundAt = now
      }
      known.round = body.round
      known.heardAt = now
      known.view = body.view
    } else {
      if (known === undefined && replicas.size >= maxReplicas) {
        log.warn({ id: body.id, maxReplicas }, 'replica refused: membership is full')
        return { type: `${ReplicaMessage.heartbeat}-reply`, body: { member: false, version } satisfies ReplicaHeartbeatReply }
      }
      if (known !== undefined) {
        retire(body.id, known.incarnation)
        counters.restarts++
        change = [{ kind: 'restart', id: body.id }]
      } else {
        counters.joins++
        change = [{ kind: 'join', id: body.id }]
      }
      replicas.set(body.id, { id: body.id, address: body.address, incarnation: body.incarnation, round: body.round, heardAt: now, roundAt: now, view: body.view })
      endpoint.connect(body.id, body.address)
      log.info({ id: body.id, round: body.round, restart: known !== undefined }, 'replica admitted')
    }
    if (change !== undefined) await publish(change)
    const reply: ReplicaHeartbeatReply = { member: true, version }
    if (current !== undefined && body.view < current.version) reply.view = current
    return { type: `${ReplicaMessage.heartbeat}-reply`, epoch: version, body: reply }
  }

  const onLeave = async (envelope: Envelope): Promise<void> => {
    const body = (() => {
      try { return parseReplicaBody(replicaLeaveBodySchema, envelope.header.body, ReplicaMessage.leave) } catch (err) { return refuse(err as Error, envelope.peer) }
    })()
    const known = replicas.get(body.id)
    if (body.id !== envelope.peer || known?.incarnation !== body.incarnation) {
      refuse(new StaleEpochError(`Leave of "${body.id}" (${body.incarnation}) does not match a member`), envelope.peer)
    }
    const kinds = drop([body.id], 'left', 'leave')
    if (kinds.length > 0) await publish(kinds)
  }

  const lose = async (ids: readonly PeerId[], reason: string): Promise<void> => {
    const kinds = drop(ids, 'lost', reason)
    if (kinds.length > 0) await publish(kinds)
  }

  const membership: ReplicaMembership = {
    get version () { return version },
    async start () {
      if (started) return
      started = true
      cleanups.push(endpoint.handle(ReplicaMessage.heartbeat, onHeartbeat))
      cleanups.push(endpoint.handle(ReplicaMessage.leave, onLeave))
      cleanups.push(endpoint.on('peer:disconnect', (peer) => {
        if (replicas.has(peer)) void lose([peer], 'disconnect')
      }))
      tick = clock.setInterval(() => {
        const silent = detector.silent().filter((p) => replicas.has(p))
        if (silent.length > 0) void lose(silent, 'silence')
      }, checkIntervalMs)
      log.info({ minReplicas, suspectAfterMs, leadRounds }, 'replica membership started')
    },
    async stop () {
      if (!started) return
      started = false
      tick?.cancel()
      tick = undefined
      for (const c of cleanups.splice(0)) c()
    },
    view: () => (current === undefined ? undefined : { ...current, members: current.members.map((m) => ({ ...m })) }),
    members: () => [...replicas.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)).map((r) => ({ id: r.id, address: r.address })),
    highestRound: () => highest,
    async remove (id, reason = 'removed') {
      if (!started) throw new ClosedError('Replica membership is not started')
      await lose([id], reason)
    },
    on (event, listener) {
      if (event !== 'view') throw new InvalidParametersError(`Unknown event ${String(event)}`)
      listeners.add(listener)
      return () => { listeners.delete(listener) }
    },
    metrics: () => ({ ...counters, rejected: { ...counters.rejected } }),
    async [Symbol.asyncDispose] () { await membership.stop() }
  }
  return membership
}
