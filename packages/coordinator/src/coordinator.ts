import {
  ClosedError, ElasticMessage, ELASTIC_FENCE_EXEMPT, InvalidParametersError, MalformedMessageError, QuorumLostError,
  componentLogger, createEpochFence, heartbeatBodySchema, joinBodySchema, readyBodySchema, systemClock,
  type AbortOptions, type Clock, type Endpoint, type Envelope, type EpochFence, type HeartbeatReply, type JoinBody,
  type JoinReply, type Logger, type OutboundMessage, type PhalanxConfig, type QuorumBody, type ReadyBody, type TimerHandle,
  type WorkerPhase
} from '@phalanx/core'
import type { z } from 'zod'
import { Counter } from 'prom-client'
import { createFailureDetector, type FailureDetector } from './failure-detector.js'
import { createCoordinatorMetrics, startMetricsServer, type CoordinatorMetrics, type MetricsServer } from './metrics.js'
import { createDashboardFeed } from './dashboard.js'
import { assignMicroBatches } from './schedule.js'
import { createMemoryStateStore, recoverState, type StateStore, type StoredMember } from './state-store.js'

/** Tunables of {@link createCoordinator}. */
export interface CoordinatorInit {
  /** Job id (informational here: the endpoint stamps and checks it). */
  jobId: string
  /** Fewest members that may run steps. */
  minWorkers: number
  /** Most members; later joiners wait as spares. Also capped by the number of micro-batches. */
  maxWorkers: number
  /** Samples per step, constant whatever the membership. */
  globalBatch: number
  /** Samples per micro-batch. */
  microBatch: number
  /** Steps to train. */
  steps: number
  /** Canonical (bit-reproducible) reduction. */
  deterministic: boolean
  /** Expected interval of worker heartbeats. */
  heartbeatIntervalMs: number
  /** Silence after which a member is suspected. */
  suspectAfterMs: number
  /** Hard upper bound of a step (and its deadline before any step was timed). */
  stepTimeoutMs: number
  /** How long to wait for `minWorkers` before giving up. */
  rendezvousTimeoutMs: number
  /**
   * After `minWorkers` have joined, how long to wait for more (up to `maxWorkers`) before the first quorum.
   * @default 0
   */
  lastCallMs?: number
  /**
   * Hang deadline factor over the median step time.
   * @default 3
   */
  hangFactor?: number
  /**
   * Smallest hang deadline.
   * @default 2000
   */
  hangFloorMs?: number
  /**
   * Rebalance micro-batches by measured speed every this many committed steps (0 = never).
   * @default 10
   */
  rebalanceEvery?: number
  /**
   * Relative speed difference under which a rebalance is not worth it.
   * @default 0.2
   */
  rebalanceThreshold?: number
  /**
   * Compact the state store after this many appended records.
   * @default 1000
   */
  compactEvery?: number
  /**
   * Deterministic jobs only: when no live worker holds the committed state but enough workers hold
   * an older step (restored from their snapshots), how long the rendezvous waits for a holder to come
   * back before it rewinds to the newest step they hold and recomputes the lost steps, which the
   * canonical reduction reproduces bit for bit (re-commits are flagged `recomputed`). Never rewinds
   * to step 0 (a worker with nothing restored); without any such worker the rendezvous times out with
   * a `QuorumLostError` naming the lost step.
   * @default 2 × suspectAfterMs
   */
  recomputeAfterMs?: number
  /**
   * Port of the metrics HTTP server (`/metrics`, `/status`); 0 picks a free port; absent = no server.
   * @default undefined
   */
  metricsPort?: number
  /**
   * Interface of the metrics server.
   * @default '127.0.0.1'
   */
  metricsHost?: string
  /**
   * Bearer token the metrics server (and its dashboard) requires; needed when `metricsHost` is not loopback.
   * @default undefined (no token; loopback only)
   */
  metricsToken?: string
}

/** Collaborators of {@link createCoordinator}. */
export interface CoordinatorComponents {
  /** The coordinator's open endpoint (its id is what workers dial). */
  endpoint: Endpoint
  /** @default systemClock() */
  clock?: Clock
  /** @default silent */
  logger?: Logger
  /** Where commits and epochs are made durable (the caller closes it). @default an in-memory store (nothing survives a restart) */
  store?: StateStore
  /** Epoch fence shared with the endpoint, if it was opened with one. @default a new fence exempting join/heartbeat/leave */
  fence?: EpochFence
}

/** Timings of one recovery, in milliseconds: one record per failure (overlapping failures share one). */
export interface RecoveryRecord {
  /** Why: `disconnect`, `silent`, `hang`, `restarted`, `left`, `checksum-mismatch`. */
  reason: string
  /** Members that were removed. */
  peers: string[]
  /** Epoch of the quorum that recovered. */
  epoch: number
  /** Step that was aborted and retried. */
  step: number
  /** From the fault's estimated onset (last sign of life or expected step end) to suspicion. */
  detectMs: number
  /** From suspicion to the new active quorum being published. */
  quorumMs: number
  /** From the quorum to every member reporting the new epoch. */
  reconfigureMs: number | undefined
  /** Longest heal of a member during the retried step. */
  healMs: number | undefined
  /** From the quorum to the first commit in it. */
  firstCommitMs: number
  /** From suspicion to the first commit. */
  totalMs: number
}

/** Subscribe-only events of a coordinator. */
export interface CoordinatorEvents {
  /** A new epoch was published. */
  quorum: (event: { epoch: number, step: number, active: boolean, members: string[], assignment: number[], reason: string }) => void
  /**
   * A step was committed (after its record was durable). `loss`: mean micro-batch loss, when every
   * member reported one. `recomputed`: a step committed before, whose state was lost with every
   * worker holding it, computed again from an older snapshot (see `recomputeAfterMs`).
   */
  commit: (event: { step: number, epoch: number, cursor: number, loss?: number, recomputed?: boolean }) => void
  /** Members were suspected and removed. */
  suspect: (event: { peers: string[], reason: string, epoch: number }) => void
  /** A recovery finished with its first commit. */
  recovery: (record: RecoveryRecord) => void
  /** Micro-batches were redistributed by measured speed without an epoch change. */
  reschedule: (event: { step: number, assignment: number[] }) => void
  /** The job trained all its steps. */
  done: (event: { committed: number, epoch: number }) => void
}

/** The coordinator's externally visible state. */
export interface CoordinatorStatus {
  phase: 'idle' | 'rendezvous' | 'running' | 'done' | 'failed' | 'stopped'
  epoch: number
  committed: number
  cursor: number
  members: Array<{ id: string, rank: number, microBatches: number, committed: number, phase: WorkerPhase }>
  waiting: string[]
  /** Mean training loss of the last committed step, when every member reported one. */
  loss?: number
}

/**
 * The elastic coordinator: membership and rendezvous, failure and hang detection, epochs and quorums,
 * micro-batch scheduling and the per-step two-phase commit (see docs/elastic.md).
 */
export interface Coordinator extends AsyncDisposable {
  /** Replays the state store, registers handlers, starts detection and the metrics server. Idempotent. */
  start(options?: AbortOptions): Promise<void>
  /** Stops detection, removes handlers and closes the metrics server (the endpoint is the caller's). Idempotent. */
  stop(options?: AbortOptions): Promise<void>
  /** Resolves when all steps are committed; rejects with `QuorumLostError` when the rendezvous timed out, `ClosedError` when stopped first. */
  finished(options?: AbortOptions): Promise<{ committed: number, epoch: number }>
  /** Current state. */
  status(): CoordinatorStatus
  /** Every recovery so far. */
  recoveries(): RecoveryRecord[]
  /** Removes a member as if it had failed (an operator's drain or a test). */
  evict(peer: string, reason?: string): Promise<void>
  /** Prometheus text of this coordinator's registry. */
  metricsText(): Promise<string>
  /** URL of the metrics server, when one runs. */
  readonly metricsUrl: string | undefined
  /** Subscribes to an event; returns the unsubscribe function. */
  on<E extends keyof CoordinatorEvents>(event: E, listener: CoordinatorEvents[E]): () => void
}

interface Member {
  id: string
  address: string
  incarnation: string
  committed: number
  pending: number | undefined
  phase: WorkerPhase
  /** Epoch and step the phase refers to. */
  phaseEpoch: number
  phaseStep: number
  /** Measured micro-batches per second (EWMA). */
  speed: number | undefined
  /** Time it joined the waiting list, for fair admission. */
  since: number
}

interface OpenRecovery {
  reason: string
  peers: string[]
  suspectedAt: number
  detectMs: number
  step: number
  quorumAt: number | undefined
  epoch: number
  reconfiguredAt: number | undefined
}

function parseBody<T> (schema: z.ZodType<T>, body: unknown, type: string): T {
  const r = schema.safeParse(body)
  if (!r.success) throw new MalformedMessageError(`Invalid ${type} body`, { details: { issues: r.error.issues.slice(0, 3).map((i) => `${i.path.join('.')}: ${i.message}`) } })
  return r.data
}

/** Maps a resolved configuration to {@link CoordinatorInit}. */
export function coordinatorInitFromConfig (config: PhalanxConfig, extra: Partial<CoordinatorInit> = {}): CoordinatorInit {
  const { job, timeouts } = config
  return {
    jobId: job.id,
    minWorkers: job.minWorkers,
    maxWorkers: job.maxWorkers,
    globalBatch: job.globalBatch,
    microBatch: job.microBatch,
    steps: job.steps,
    deterministic: job.deterministic,
    heartbeatIntervalMs: timeouts.heartbeatIntervalMs,
    suspectAfterMs: timeouts.suspectAfterMs,
    stepTimeoutMs: timeouts.stepTimeoutMs,
    rendezvousTimeoutMs: timeouts.rendezvousTimeoutMs,
    ...extra
  }
}

/** Creates a {@link Coordinator}. Nothing runs until `start()`. */
export function createCoordinator (init: CoordinatorInit, components: CoordinatorComponents): Coordinator {
  const { endpoint } = components
  const clock = components.clock ?? systemClock()
  const log = componentLogger(components.logger, 'coordinator')
  const store = components.store ?? createMemoryStateStore()
  const fence = components.fence ?? createEpochFence({ exempt: ELASTIC_FENCE_EXEMPT })
  const M = init.globalBatch / init.microBatch
  if (!Number.isInteger(M) || M < 1) throw new InvalidParametersError(`globalBatch ${init.globalBatch} is not a multiple of microBatch ${init.microBatch}`)
  if (init.minWorkers < 1 || init.minWorkers > init.maxWorkers || init.minWorkers > M) {
    throw new InvalidParametersError(`minWorkers ${init.minWorkers} must be in [1, min(maxWorkers ${init.maxWorkers}, micro-batches ${M})]`)
  }
  const capacity = Math.min(init.maxWorkers, M)
  const lastCallMs = init.lastCallMs ?? 0
  const rebalanceEvery = init.rebalanceEvery ?? 10
  const rebalanceThreshold = init.rebalanceThreshold ?? 0.2
  const compactEvery = init.compactEvery ?? 1000
  const recomputeAfterMs = init.recomputeAfterMs ?? 2 * init.suspectAfterMs
  /** Steps below this were committed once already and are being recomputed after a state loss. */
  let recomputeUntil = 0
  const detector: FailureDetector = createFailureDetector({
    suspectAfterMs: init.suspectAfterMs,
    stepTimeoutMs: init.stepTimeoutMs,
    ...(init.hangFactor === undefined ? {} : { hangFactor: init.hangFactor }),
    ...(init.hangFloorMs === undefined ? {} : { hangFloorMs: init.hangFloorMs })
  }, { clock })
  const metrics: CoordinatorMetrics = createCoordinatorMetrics()
  // Counted once per committed step per worker, whichever owners reported it (Gram-based rules agree on every shard).
  const robustRejected = new Counter({ name: 'phalanx_coordinator_robust_rejected_total', help: 'Committed steps in which the robust aggregation rule rejected a worker\'s input', labelNames: ['worker'], registers: [metrics.registry] })

  let phase: CoordinatorStatus['phase'] = 'idle'
  let epoch = 0
  let committed = 0
  let cursor = 0
  let lastLoss: number | undefined
  let size: number | undefined
  let active = false
  let members: Member[] = []
  let assignment: number[] = []
  const waiting = new Map<string, Member>()
  const votes = new Map<string, ReadyBody>()
  let stepStartedAt = 0
  let rendezvousSince = 0
  let lastCallTimer: TimerHandle | undefined
  let tick: TimerHandle | undefined
  let appended = 0
  let recovery: OpenRecovery | undefined
  let fastForwardAllowed = true
  const records: RecoveryRecord[] = []
  const cleanups: Array<() => void> = []
  let server: MetricsServer | undefined
  let started = false
  let finishedResult: { committed: number, epoch: number } | undefined
  let finishedError: Error | undefined
  const finishWaiters = new Set<() => void>()
  const listeners: { [E in keyof CoordinatorEvents]: Set<CoordinatorEvents[E]> } = {
    quorum: new Set(), commit: new Set(), suspect: new Set(), recovery: new Set(), reschedule: new Set(), done: new Set()
  }

  const emit = <E extends keyof CoordinatorEvents>(event: E, ...args: Parameters<CoordinatorEvents[E]>): void => {
    for (const l of listeners[event]) {
      try { (l as (...a: Parameters<CoordinatorEvents[E]>) => void)(...args) } catch (err) { log.error({ err, event }, 'event listener threw') }
    }
  }

  // Every state transition runs through this chain, so handlers never interleave across an await.
  let chain: Promise<unknown> = Promise.resolve()
  const serial = async <T>(fn: () => Promise<T> | T): Promise<T> => {
    const run = chain.then(fn, fn)
    chain = run.catch(() => undefined)
    return await run
  }

  const settle = (): void => { for (const w of finishWaiters) w() }

  const effectiveCommitted = (m: Member): number =>
    m.pending !== undefined && m.pending + 1 === committed && m.committed === m.pending ? committed : m.committed

  const findMember = (id: string): Member | undefined => members.find((m) => m.id === id)

  const quorumBody = (): QuorumBody => ({
    epoch,
    active,
    step: committed,
    cursor,
    steps: init.steps,
    members: members.map((m, rank) => ({ id: m.id, address: m.address, rank })),
    assignment,
    size: size ?? 0,
    globalBatch: init.globalBatch,
    microBatch: init.microBatch,
    deterministic: init.deterministic,
    upToDate: members.filter((m) => effectiveCommitted(m) === committed).map((m) => m.id)
  })

  const sendTo = async (ids: readonly string[], message: OutboundMessage): Promise<void> => {
    await Promise.all(ids.map(async (id) => {
      try {
        await endpoint.send(id, message)
      } catch (err) {
        log.debug({ peer: id, type: message.type, err: (err as Error).name }, 'send failed')
      }
    }))
  }

  const updateGauges = (): void => {
    metrics.epoch.set(epoch)
    metrics.members.set(active ? members.length : 0)
    metrics.spares.set(waiting.size)
    metrics.committedStep.set(committed)
    metrics.staleMessages.set(fence.dropped)
  }

  const maybeCompact = async (): Promise<void> => {
    if (appended < compactEvery) return
    appended = 0
    await store.compact({ type: 'snapshot', epoch, committed, cursor, members: members.map((m): StoredMember => ({ id: m.id, address: m.address })) })
  }

  const speedsFor = (list: readonly Member[]): number[] => list.map((m) => m.speed ?? Number.NaN)

  /** Publishes a new epoch: remaining members plus admissible waiting workers. Runs inside `serial`. */
  const reconfigure = async (reason: string): Promise<void> => {
    if (phase === 'done' || phase === 'failed' || phase === 'stopped') return
    lastCallTimer?.cancel()
    lastCallTimer = undefined
    const next = [...members]
    const candidates = [...waiting.values()].sort((a, b) => a.since - b.since || (a.id < b.id ? -1 : 1))
    // A fresh or restarted coordinator adopts the most advanced state its first members hold.
    if (fastForwardAllowed) {
      const best = Math.max(committed, ...[...next, ...candidates].map((m) => m.committed))
      if (best > committed) {
        log.warn({ from: committed, to: best }, 'members hold more committed steps than the store; adopting them')
        committed = best
        cursor = best * init.globalBatch
      }
    }
    const hasSource = (): boolean => next.some((m) => effectiveCommitted(m) === committed)
    for (const c of candidates) {
      if (next.length >= capacity) break
      // A joiner behind the committed step can only heal from a member that is up to date.
      if (effectiveCommitted(c) !== committed && !hasSource() && !candidates.some((o) => effectiveCommitted(o) === committed)) continue
      next.push(c)
      waiting.delete(c.id)
    }
    // Put up-to-date joiners first so that behind ones see a source; then order by id for stable ranks.
    next.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    const canHeal = next.filter((m) => effectiveCommitted(m) !== committed).length === 0 || hasSource()
    epoch += 1
    fence.advance(epoch)
    members = next
    votes.clear()
    active = members.length >= init.minWorkers && canHeal && size !== undefined
    assignment = active ? assignMicroBatches(M, speedsFor(members)) : []
    await store.append({ type: 'epoch', epoch, members: members.map((m) => ({ id: m.id, address: m.address })) }, { sync: true })
    appended++
    if (active) {
      phase = 'running'
      fastForwardAllowed = false
      stepStartedAt = clock.now()
      if (recovery !== undefined && recovery.quorumAt === undefined) {
        recovery.quorumAt = clock.now()
        recovery.epoch = epoch
      }
    } else if (phase !== 'rendezvous') {
      phase = 'rendezvous'
      rendezvousSince = clock.now()
    }
    for (const m of members) endpoint.connect(m.id, m.address)
    const body = quorumBody()
    log.info({ epoch, active, step: committed, members: members.map((m) => m.id), assignment, reason }, 'quorum')
    updateGauges()
    emit('quorum', { epoch, step: committed, active, members: members.map((m) => m.id), assignment: [...assignment], reason })
    await sendTo(members.map((m) => m.id), { type: ElasticMessage.quorum, epoch, step: committed, body })
  }

  const closeRecovery = (): void => {
    if (recovery?.quorumAt === undefined) return
    const r = recovery
    recovery = undefined
    const now = clock.now()
    const healMs = [...votes.values()].reduce<number | undefined>((acc, v) => (v.healMs === undefined ? acc : Math.max(acc ?? 0, v.healMs)), undefined)
    const rec: RecoveryRecord = {
      reason: r.reason,
      peers: r.peers,
      epoch: r.epoch,
      step: r.step,
      detectMs: r.detectMs,
      quorumMs: r.quorumAt! - r.suspectedAt,
      reconfigureMs: r.reconfiguredAt === undefined ? undefined : r.reconfiguredAt - r.quorumAt!,
      healMs,
      firstCommitMs: now - r.quorumAt!,
      totalMs: now - r.suspectedAt
    }
    records.push(rec)
    metrics.recoveries.inc()
    const h = metrics.recoveryPhaseSeconds
    h.observe({ phase: 'detect' }, rec.detectMs / 1000)
    h.observe({ phase: 'quorum' }, rec.quorumMs / 1000)
    if (rec.reconfigureMs !== undefined) h.observe({ phase: 'reconfigure' }, rec.reconfigureMs / 1000)
    if (rec.healMs !== undefined) h.observe({ phase: 'heal' }, rec.healMs / 1000)
    h.observe({ phase: 'first_commit' }, rec.firstCommitMs / 1000)
    h.observe({ phase: 'total' }, rec.totalMs / 1000)
    log.info({ ...rec }, 'recovery complete')
    emit('recovery', rec)
  }

  /** Removes members (and waiting workers) and publishes the next epoch. Runs inside `serial`. */
  const suspect = async (ids: readonly string[], reason: string, detectMs: number): Promise<void> => {
    const removed = ids.filter((id) => findMember(id) !== undefined)
    for (const id of ids) {
      waiting.delete(id)
      detector.forget(id)
    }
    if (removed.length === 0) { updateGauges(); return }
    members = members.filter((m) => !removed.includes(m.id))
    if (active) metrics.stepsAborted.inc()
    log.warn({ peers: removed, reason, epoch, step: committed }, 'members suspected')
    emit('suspect', { peers: removed, reason, epoch })
    if (recovery === undefined) {
      recovery = { reason, peers: [...removed], suspectedAt: clock.now(), detectMs, step: committed, quorumAt: undefined, epoch, reconfiguredAt: undefined }
    } else {
      recovery.peers.push(...removed)
    }
    await reconfigure(reason)
  }

  const commitStep = async (): Promise<void> => {
    const step = committed
    const nextCursor = (step + 1) * init.globalBatch
    // Durable before anyone is told: a restarted coordinator must never forget a step workers applied.
    await store.append({ type: 'commit', step, epoch, cursor: nextCursor }, { sync: true })
    appended++
    committed = step + 1
    cursor = nextCursor
    const now = clock.now()
    detector.recordStep(now - stepStartedAt)
    metrics.stepSeconds.observe((now - stepStartedAt) / 1000)
    metrics.stepsCommitted.inc()
    const rejected = new Set<string>()
    for (const v of votes.values()) for (const id of v.rejected ?? []) rejected.add(id)
    for (const id of rejected) robustRejected.inc({ worker: id })
    for (const m of members) {
      const v = votes.get(m.id)
      m.committed = committed
      m.pending = undefined
      if (v !== undefined && v.microBatches > 0 && v.computeMs > 0) {
        const s = (1000 * v.microBatches) / v.computeMs
        m.speed = m.speed === undefined ? s : 0.7 * m.speed + 0.3 * s
      }
    }
    // Mean over micro-batches: each vote's loss is its worker's mean, weighted by how many it computed.
    let lossSum = 0
    let lossCount = 0
    for (const m of members) {
      const v = votes.get(m.id)
      if (v?.loss === undefined) { lossCount = 0; break }
      lossSum += v.loss * v.microBatches
      lossCount += v.microBatches
    }
    const loss = lossCount > 0 ? lossSum / lossCount : undefined
    lastLoss = loss
    closeRecovery()
    votes.clear()
    const recomputed = step < recomputeUntil
    emit('commit', { step, epoch, cursor, ...(loss === undefined ? {} : { loss }), ...(recomputed ? { recomputed } : {}) })
    const ids = members.map((m) => m.id)
    if (committed >= init.steps) {
      phase = 'done'
      updateGauges()
      await sendTo(ids, { type: ElasticMessage.commit, epoch, step, body: { step, epoch, cursor, ...(loss === undefined ? {} : { loss }) } })
      await sendTo(ids, { type: ElasticMessage.done, epoch, step: committed, body: { committed } })
      log.info({ committed, epoch }, 'job done')
      finishedResult = { committed, epoch }
      emit('done', finishedResult)
      settle()
      return
    }
    const admissible = members.length < capacity && waiting.size > 0
    let newAssignment: number[] | undefined
    if (!admissible && rebalanceEvery > 0 && committed % rebalanceEvery === 0 && members.every((m) => m.speed !== undefined)) {
      const proposal = assignMicroBatches(M, speedsFor(members))
      const worst = Math.max(...members.map((m, i) => (assignment[i] as number) / (m.speed as number)))
      const best = Math.max(...members.map((m, i) => (proposal[i] as number) / (m.speed as number)))
      if (worst > 0 && (worst - best) / worst > rebalanceThreshold) newAssignment = proposal
    }
    if (newAssignment !== undefined) {
      assignment = newAssignment
      log.info({ step: committed, assignment }, 'micro-batches rebalanced by measured speed')
      emit('reschedule', { step: committed, assignment: [...assignment] })
    }
    stepStartedAt = now
    updateGauges()
    await sendTo(ids, { type: ElasticMessage.commit, epoch, step, body: { step, epoch, cursor, ...(newAssignment === undefined ? {} : { assignment }), ...(loss === undefined ? {} : { loss }) } })
    if (admissible) await reconfigure('join')
    await maybeCompact()
  }

  const onJoin = async (env: Envelope): Promise<OutboundMessage> => {
    const body: JoinBody = parseBody(joinBodySchema, env.header.body, 'join')
    if (body.id !== env.peer) throw new InvalidParametersError(`join names "${body.id}" but comes from "${env.peer}"`)
    return await serial(async () => {
      if (phase === 'done') return { type: ElasticMessage.join, body: { role: 'spare', epoch, committed } satisfies JoinReply }
      if (size === undefined) size = body.size
      else if (body.size !== size) throw new InvalidParametersError(`Worker ${body.id} has ${body.size} parameters, the job has ${size}`)
      endpoint.connect(body.id, body.address)
      detector.heard(body.id)
      const existing = findMember(body.id)
      if (existing !== undefined && existing.incarnation === body.incarnation) {
        existing.address = body.address
        return { type: ElasticMessage.join, body: { role: 'member', epoch, committed } satisfies JoinReply }
      }
      const entry: Member = {
        id: body.id, address: body.address, incarnation: body.incarnation, committed: body.committed, pending: body.pending,
        phase: 'idle', phaseEpoch: 0, phaseStep: 0, speed: undefined, since: waiting.get(body.id)?.since ?? clock.now()
      }
      if (existing !== undefined) {
        // A new incarnation under a known id: the old process is gone.
        waiting.set(body.id, entry)
        await suspect([body.id], 'restarted', 0)
        detector.heard(body.id)
      } else {
        waiting.set(body.id, entry)
        log.info({ peer: body.id, committed: body.committed, phase }, 'join')
        if (phase === 'rendezvous' || phase === 'idle') {
          if (phase === 'idle') { phase = 'rendezvous'; rendezvousSince = clock.now() }
          const ready = members.length + waiting.size
          if (ready >= capacity || (ready >= init.minWorkers && lastCallMs === 0)) await reconfigure('rendezvous')
          else if (ready >= init.minWorkers && lastCallTimer === undefined) {
            lastCallTimer = clock.setTimeout(() => { void serial(async () => { lastCallTimer = undefined; if (!active) await reconfigure('rendezvous') }) }, lastCallMs)
          }
        } else if (members.length < capacity && !active) {
          await reconfigure('join')
        }
      }
      updateGauges()
      const role: JoinReply['role'] = findMember(body.id) !== undefined ? 'member' : members.length < capacity ? 'pending' : 'spare'
      return { type: ElasticMessage.join, body: { role, epoch, committed } satisfies JoinReply }
    })
  }

  const onHeartbeat = async (env: Envelope): Promise<OutboundMessage> => {
    const body = parseBody(heartbeatBodySchema, env.header.body, 'heartbeat')
    return await serial(() => {
      const m = findMember(env.peer) ?? waiting.get(env.peer)
      const known = m !== undefined && m.incarnation === body.incarnation
      const reply: HeartbeatReply = { known, epoch, committed }
      if (phase === 'done') reply.done = true
      if (known) {
        detector.heard(m.id)
        m.committed = body.committed
        m.pending = body.pending
        m.phase = body.phase
        m.phaseEpoch = body.epoch
        m.phaseStep = body.step
        const isMember = findMember(m.id) !== undefined
        if (isMember && body.epoch < epoch) reply.quorum = quorumBody()
        if (isMember && recovery?.quorumAt !== undefined && recovery.reconfiguredAt === undefined &&
          members.every((x) => x.phaseEpoch >= epoch)) recovery.reconfiguredAt = clock.now()
      }
      return { type: ElasticMessage.heartbeat, body: reply }
    })
  }

  const onReady = async (env: Envelope): Promise<void> => {
    if (!fence.admit(env.header)) { updateGauges(); return }
    const body = parseBody(readyBodySchema, env.header.body, 'ready')
    await serial(async () => {
      if (!active || env.header.epoch !== epoch || env.header.step !== committed) return
      const m = findMember(env.peer)
      if (m === undefined) return
      detector.heard(m.id)
      votes.set(m.id, body)
      m.phase = 'voted'
      m.phaseEpoch = epoch
      m.phaseStep = committed
      if (votes.size < members.length) return
      const sums = new Set([...votes.values()].map((v) => v.checksum))
      if (sums.size === 1) {
        await commitStep()
      } else {
        // Members disagree on the aggregate: nothing is applied and the step is retried.
        log.error({ step: committed, epoch, checksums: [...votes].map(([id, v]) => ({ id, checksum: v.checksum })) }, 'aggregated gradients differ; aborting the step')
        metrics.stepsAborted.inc()
        await reconfigure('checksum-mismatch')
      }
    })
  }

  const onLeave = async (env: Envelope): Promise<void> => {
    await serial(async () => { await suspect([env.peer], 'left', 0) })
  }

  const onTick = (): void => {
    void serial(async () => {
      if (!started || phase === 'done' || phase === 'failed' || phase === 'stopped') return
      const now = clock.now()
      const silent = detector.silent().filter((id) => findMember(id) !== undefined || waiting.has(id))
      if (silent.length > 0) {
        for (const id of silent) if (findMember(id) === undefined) { waiting.delete(id); detector.forget(id) }
        const dead = silent.filter((id) => findMember(id) !== undefined)
        if (dead.length > 0) {
          const detectMs = Math.max(...dead.map((id) => now - (detector.lastHeard(id) ?? now)))
          await suspect(dead, 'silent', detectMs)
          return
        }
      }
      if (active && now - stepStartedAt > detector.stepDeadlineMs()) {
        // Blame members that have not handed over their gradients for this step; those that wait on them are innocent.
        const stuck = members.filter((m) => !votes.has(m.id) && !(m.phaseEpoch === epoch && m.phaseStep === committed && (m.phase === 'exchange' || m.phase === 'voted')))
        const median = detector.medianStepMs() ?? 0
        log.warn({ step: committed, epoch, deadlineMs: detector.stepDeadlineMs(), stuck: stuck.map((m) => m.id) }, 'step overdue')
        if (stuck.length > 0) await suspect(stuck.map((m) => m.id), 'hang', Math.max(0, now - stepStartedAt - median))
        else { metrics.stepsAborted.inc(); await reconfigure('overdue') }
        return
      }
      if (phase === 'rendezvous' && init.deterministic && now - rendezvousSince > recomputeAfterMs) {
        const pool = [...members, ...waiting.values()]
        const held = pool.map(effectiveCommitted)
        const to = Math.max(0, ...held.filter((c) => c < committed))
        if (pool.length >= init.minWorkers && !held.some((c) => c === committed) && to > 0) {
          // Every holder of the committed state is gone; the workers here restored an older step.
          // The canonical reduction recomputes the lost steps bit for bit from the newest of them.
          log.warn({ lost: committed, from: to, workers: pool.map((m) => `${m.id}@${effectiveCommitted(m)}`).sort() }, 'no live worker holds the committed state; recomputing the lost steps from the newest state held')
          recomputeUntil = Math.max(recomputeUntil, committed)
          committed = to
          cursor = to * init.globalBatch
          rendezvousSince = now
          await reconfigure('recompute')
          return
        }
      }
      if (phase === 'rendezvous' && now - rendezvousSince > init.rendezvousTimeoutMs) {
        phase = 'failed'
        const everyone = [...members, ...waiting.values()]
        const holders = everyone.filter((m) => effectiveCommitted(m) === committed)
        if (everyone.length >= init.minWorkers && holders.length === 0) {
          // Enough workers, none of them holding the committed state: the state itself is gone, and
          // no quorum could ever resume the job without a checkpoint. Say so, not "too few workers".
          const held = everyone.map((m) => `${m.id}@${effectiveCommitted(m)}`).sort()
          finishedError = new QuorumLostError(
            `Committed state of step ${committed} lost: no member or waiting worker holds it (workers hold: ${held.join(', ')}); restart from a checkpoint`,
            { details: { reason: 'state-lost', lostStep: committed, workers: held } }
          )
        } else {
          finishedError = new QuorumLostError(`Fewer than ${init.minWorkers} workers within ${init.rendezvousTimeoutMs} ms`, { details: { reason: 'too-few-workers', members: members.length, waiting: waiting.size } })
        }
        log.error({ members: members.length, waiting: waiting.size, committed, err: finishedError.message }, 'rendezvous timed out')
        settle()
      }
    })
  }

  const coordinator: Coordinator = {
    async start (options = {}) {
      if (started) return
      started = true
      const recovered = recoverState(await store.replay(options))
      epoch = recovered.epoch
      committed = recovered.committed
      cursor = recovered.cursor
      fence.advance(epoch)
      phase = 'rendezvous'
      rendezvousSince = clock.now()
      cleanups.push(endpoint.handle(ElasticMessage.join, onJoin))
      cleanups.push(endpoint.handle(ElasticMessage.heartbeat, onHeartbeat))
      cleanups.push(endpoint.handle(ElasticMessage.ready, onReady))
      cleanups.push(endpoint.handle(ElasticMessage.leave, onLeave))
      cleanups.push(endpoint.on('peer:disconnect', (peer) => {
        void serial(async () => {
          if (findMember(peer) !== undefined) await suspect([peer], 'disconnect', 0)
          else if (waiting.delete(peer)) { detector.forget(peer); updateGauges() }
        })
      }))
      tick = clock.setInterval(onTick, init.heartbeatIntervalMs)
      if (init.metricsPort !== undefined) {
        server = await startMetricsServer({
          host: init.metricsHost ?? '127.0.0.1', port: init.metricsPort, ...(init.metricsToken === undefined ? {} : { token: init.metricsToken })
        }, metrics.registry, () => ({ ...coordinator.status(), recoveries: coordinator.recoveries() }), options, { dashboard: createDashboardFeed(coordinator, { globalBatch: init.globalBatch, steps: init.steps, jobId: init.jobId }) })
      }
      updateGauges()
      log.info({ epoch, committed, knownMembers: recovered.members.length, metrics: server?.url }, 'coordinator started')
      // A restarted coordinator calls its last members back instead of waiting for their detectors.
      if (committed < init.steps) {
        for (const m of recovered.members) endpoint.connect(m.id, m.address)
        await sendTo(recovered.members.map((m) => m.id), { type: ElasticMessage.rejoin, epoch, body: {} })
      }
    },
    async stop () {
      if (!started) return
      started = false
      tick?.cancel()
      lastCallTimer?.cancel()
      for (const c of cleanups.splice(0)) c()
      if (phase !== 'done' && phase !== 'failed') phase = 'stopped'
      await chain
      await server?.close()
      server = undefined
      settle()
    },
    async finished (options = {}) {
      let wake: (() => void) | undefined
      const onAbort = (): void => wake?.()
      try {
        options.signal?.addEventListener('abort', onAbort)
        for (;;) {
          if (finishedResult !== undefined) return finishedResult
          if (finishedError !== undefined) throw finishedError
          if (phase === 'stopped') throw new ClosedError('Coordinator stopped before the job finished')
          if (options.signal?.aborted === true) throw new ClosedError('Wait for the coordinator aborted', { cause: options.signal.reason })
          await new Promise<void>((resolve) => { wake = resolve; finishWaiters.add(resolve) })
          if (wake !== undefined) finishWaiters.delete(wake)
        }
      } finally {
        options.signal?.removeEventListener('abort', onAbort)
        if (wake !== undefined) finishWaiters.delete(wake)
      }
    },
    status: () => ({
      phase,
      epoch,
      committed,
      cursor,
      members: members.map((m, rank) => ({ id: m.id, rank, microBatches: assignment[rank] ?? 0, committed: m.committed, phase: m.phase })),
      waiting: [...waiting.keys()],
      ...(lastLoss === undefined ? {} : { loss: lastLoss })
    }),
    recoveries: () => records.map((r) => ({ ...r, peers: [...r.peers] })),
    async evict (peer, reason = 'evicted') {
      await serial(async () => { await suspect([peer], reason, 0) })
    },
    async metricsText () {
      updateGauges()
      return await metrics.registry.metrics()
    },
    get metricsUrl () { return server?.url },
    on (event, listener) {
      listeners[event].add(listener as never)
      return () => { listeners[event].delete(listener as never) }
    },
    async [Symbol.asyncDispose] () { await coordinator.stop() }
  }
  return coordinator
}

/**
 * A coordinator process entry: creates and starts a coordinator from a resolved configuration and
 * resolves when the job is done, stopping it in every case.
 */
export async function runCoordinator (
  config: PhalanxConfig,
  components: CoordinatorComponents,
  options: AbortOptions & { init?: Partial<CoordinatorInit> } = {}
): Promise<{ committed: number, epoch: number }> {
  const coordinator = createCoordinator(coordinatorInitFromConfig(config, options.init), components)
  try {
    await coordinator.start(options)
    return await coordinator.finished(options)
  } finally {
    await coordinator.stop()
  }
}
