/**
 * The replica side of the replica-membership protocol (`@phalanx/core`'s `replicas.ts`): heartbeats
 * the coordinator with the outer optimiser's round and installs every view it receives into the
 * optimiser with `setMembers(ids, { version, round })`, dialling the members it lists.
 *
 * @module
 */
import { randomUUID } from 'node:crypto'
import {
  AbortError, ClosedError, InvalidParametersError, ReplicaMessage, UnauthorizedPeerError,
  componentLogger, parseReplicaBody, raceSignal, replicaHeartbeatReplySchema, replicaViewBodySchema, systemClock,
  type AbortOptions, type Clock, type Endpoint, type Envelope, type Logger, type PeerId, type ReplicaViewBody, type TimerHandle
} from '@phalanx/core'
import type { OuterOptimizer } from './outer-optimizer.js'

/** Tunables of {@link createMembershipClient}. */
export interface MembershipClientInit {
  /** The coordinator's endpoint id. */
  coordinator: PeerId
  /** Where the coordinator listens; when given, the client dials it on start. */
  coordinatorAddress?: string
  /**
   * Interval between heartbeats.
   * @default 100
   */
  heartbeatIntervalMs?: number
  /**
   * Reply deadline of one heartbeat.
   * @default 2000
   */
  heartbeatTimeoutMs?: number
  /**
   * Identifies this process start (a restarted replica has a new one).
   * @default a random UUID
   */
  incarnation?: string
}

/** Collaborators of {@link createMembershipClient}. */
export interface MembershipClientComponents {
  /** This replica's endpoint (the one its outer optimiser exchanges over). */
  endpoint: Endpoint
  /** The outer optimiser whose round is reported and whose members are set. */
  outer: Pick<OuterOptimizer, 'round' | 'setMembers' | 'view'>
  /** @default systemClock() */
  clock?: Clock
  /** @default silent */
  logger?: Logger
}

/** Counters of a {@link MembershipClient}. */
export interface MembershipClientMetrics {
  /** Heartbeats answered. */
  heartbeats: number
  /** Heartbeats that failed (timeout, coordinator unreachable, refused). */
  heartbeatFailures: number
  /** Views installed. */
  views: number
  /** Views ignored because their version was not above the one held. */
  staleViews: number
  /** View messages refused (malformed, or not from the coordinator). */
  rejected: number
}

/** Keeps one replica's outer optimiser on the coordinator's membership views. */
export interface MembershipClient extends AsyncDisposable {
  /** Registers the view handler, dials the coordinator, and starts heartbeating (the first at once). Idempotent. */
  start(options?: AbortOptions): Promise<void>
  /** Stops heartbeating and tells the coordinator this replica leaves (best effort). Idempotent. */
  stop(options?: AbortOptions): Promise<void>
  /**
   * Resolves with the first view that lists this replica. A replica waits for it before its first
   * sync: until then it holds no view, and the coordinator takes its round as not started.
   * @throws `AbortError`, `ClosedError` when stopped first
   */
  ready(options?: AbortOptions): Promise<ReplicaViewBody>
  /** Sends one heartbeat now (e.g. right after a sync) and installs a view carried by the reply. */
  heartbeat(options?: AbortOptions): Promise<void>
  /** The newest view installed, or undefined. */
  view(): ReplicaViewBody | undefined
  /** A snapshot of the counters. */
  metrics(): MembershipClientMetrics
}

/** Creates the membership client of one replica. */
export function createMembershipClient (init: MembershipClientInit, components: MembershipClientComponents): MembershipClient {
  const heartbeatIntervalMs = init.heartbeatIntervalMs ?? 100
  const heartbeatTimeoutMs = init.heartbeatTimeoutMs ?? 2000
  if (!(heartbeatIntervalMs > 0) || !(heartbeatTimeoutMs > 0)) throw new InvalidParametersError('heartbeatIntervalMs and heartbeatTimeoutMs must be positive')
  if (init.coordinator.length === 0) throw new InvalidParametersError('coordinator id must not be empty')
  const { endpoint, outer } = components
  const clock = components.clock ?? systemClock()
  const log = componentLogger(components.logger, 'membership-client')
  const incarnation = init.incarnation ?? randomUUID()
  const self = endpoint.id

  let held: ReplicaViewBody | undefined
  let started = false
  let lifecycle = new AbortController()
  let tick: TimerHandle | undefined
  let removeHandler: (() => void) | undefined
  let inFlight: Promise<void> | undefined
  const waiters = new Set<{ resolve: (v: ReplicaViewBody) => void, reject: (err: Error) => void }>()
  const counters: MembershipClientMetrics = { heartbeats: 0, heartbeatFailures: 0, views: 0, staleViews: 0, rejected: 0 }

  const install = (view: ReplicaViewBody): void => {
    if (held !== undefined && view.version <= held.version) {
      counters.staleViews++
      log.debug({ version: view.version, held: held.version }, 'ignored a view that is not newer')
      return
    }
    for (const m of view.members) if (m.id !== self) endpoint.connect(m.id, m.address)
    const ids = view.members.map((m) => m.id)
    let round = view.round
    // A replica not in the view in force for its current round (it joins) pairs by the new list at
    // once: until the others reach `view.round` its exchanges are refused and it steps locally.
    if (ids.includes(self) && !outer.view(outer.round).members.includes(self)) round = Math.min(round, outer.round)
    outer.setMembers(ids, { version: view.version, round })
    held = view
    counters.views++
    log.info({ version: view.version, round: view.round, appliedFrom: round, members: ids.length, at: outer.round }, 'installed a membership view')
    if (ids.includes(self)) {
      for (const w of waiters) w.resolve(view)
      waiters.clear()
    }
  }

  const onView = (envelope: Envelope): void => {
    if (envelope.peer !== init.coordinator) {
      counters.rejected++
      log.warn({ peer: envelope.peer }, 'refused a membership view that did not come from the coordinator')
      throw new UnauthorizedPeerError(`Only "${init.coordinator}" publishes membership views`)
    }
    let view: ReplicaViewBody
    try {
      view = parseReplicaBody(replicaViewBodySchema, envelope.header.body, ReplicaMessage.view)
    } catch (err) {
      counters.rejected++
      log.warn({ peer: envelope.peer, reason: (err as Error).name, issues: (err as { details?: unknown }).details }, 'refused a malformed membership view')
      throw err
    }
    install(view)
  }

  const beat = async (signal: AbortSignal): Promise<void> => {
    try {
      const reply = await endpoint.request(init.coordinator, {
        type: ReplicaMessage.heartbeat,
        body: { id: self, address: endpoint.address, incarnation, round: outer.round, view: held?.version ?? 0 }
      }, { timeoutMs: heartbeatTimeoutMs, signal })
      const body = parseReplicaBody(replicaHeartbeatReplySchema, reply.header.body, `${ReplicaMessage.heartbeat} reply`)
      counters.heartbeats++
      if (!body.member) log.warn({ version: body.version }, 'the coordinator did not admit this replica')
      if (body.view !== undefined) install(body.view)
    } catch (err) {
      if (signal.aborted) return
      counters.heartbeatFailures++
      log.warn({ reason: (err as Error).name, err: (err as Error).message }, 'heartbeat failed')
    }
  }

  const client: MembershipClient = {
    async start () {
      if (started) return
      started = true
      lifecycle = new AbortController()
      removeHandler = endpoint.handle(ReplicaMessage.view, onView)
      if (init.coordinatorAddress !== undefined) endpoint.connect(init.coordinator, init.coordinatorAddress)
      const signal = lifecycle.signal
      const run = (): void => {
        // One heartbeat at a time: a slow coordinator is not piled up with requests.
        if (inFlight !== undefined) return
        inFlight = beat(signal).finally(() => { inFlight = undefined })
      }
      tick = clock.setInterval(run, heartbeatIntervalMs)
      run()
    },

    async stop () {
      if (!started) return
      started = false
      tick?.cancel()
      tick = undefined
      removeHandler?.()
      removeHandler = undefined
      lifecycle.abort(new ClosedError('Membership client stopped'))
      for (const w of waiters) w.reject(new ClosedError('Membership client stopped'))
      waiters.clear()
      await inFlight
      try {
        await endpoint.send(init.coordinator, { type: ReplicaMessage.leave, body: { id: self, incarnation } })
      } catch (err) {
        // The coordinator notices the silence instead.
        log.debug({ reason: (err as Error).name }, 'could not announce leaving')
      }
    },

    async ready (options = {}) {
      if (held !== undefined && held.members.some((m) => m.id === self)) return held
      if (!started) throw new ClosedError('Membership client is not started')
      let waiter: { resolve: (v: ReplicaViewBody) => void, reject: (err: Error) => void } | undefined
      try {
        return await raceSignal(new Promise<ReplicaViewBody>((resolve, reject) => {
          waiter = { resolve, reject }
          waiters.add(waiter)
        }), options.signal)
      } finally {
        if (waiter !== undefined) waiters.delete(waiter)
      }
    },

    async heartbeat (options = {}) {
      if (!started) throw new ClosedError('Membership client is not started')
      const signal = options.signal === undefined ? lifecycle.signal : AbortSignal.any([options.signal, lifecycle.signal])
      await beat(signal)
      if (options.signal?.aborted === true) throw new AbortError(undefined, { cause: options.signal.reason })
    },

    view: () => (held === undefined ? undefined : { ...held, members: held.members.map((m) => ({ ...m })) }),
    metrics: () => ({ ...counters }),
    async [Symbol.asyncDispose] () { await client.stop() }
  }
  return client
}
