/**
 * The pipeline controller: drives steps, detects lost stage replicas, recovers them by policy and
 * replays the interrupted step so that no micro-batch is lost. Stage membership and the stage graph
 * live in an injected {@link StageRegistry} (implemented by `@phalanx/coordinator`'s
 * `createStageRegistry`); the controller records joins, losses and replacements there.
 *
 * A step: `pp-step` to every replica (forward and backward of its micro-batches), then the
 * two-phase commit: `pp-prepare` to every replica (sum, all-reduce with its data-parallel replicas,
 * clip; nothing applied), and once every replica is ready the controller decides to commit (event
 * `committing`) and sends `pp-commit` (keep a pre-step copy, apply). If a member is lost while the
 * commits are being applied, some stages applied the step and others did not: after the liveness
 * probe every survivor gets `pp-revert`, those that applied restore their pre-step copy, and the
 * step is replayed from its first micro-batch, so all stages always end at the same step.
 *
 * Failure handling: a step fails when any request of it rejects (a dead peer's pending requests
 * reject at once with `PeerUnreachableError` on both transports; a hang ends at `stepTimeoutMs`).
 * The controller then bumps the epoch and sends `pp-abort` to every member as a request: members
 * that answer are alive and drop the step; those that do not (within `probeTimeoutMs`) are lost.
 * Each lost replica is replaced by a fresh participant from `components.spawn`, which builds its
 * state as {@link planRecovery} says, and the step runs again from its first micro-batch with the
 * new membership. Nothing of a failed step stays applied, so the replay is exact.
 *
 * @module
 */
import { setMaxListeners } from 'node:events'
import {
  InvalidParametersError, StepAbortedError, componentLogger, decodeTensors, raceSignal, systemClock, throwIfAborted,
  type AbortOptions, type Clock, type Endpoint, type Logger, type NamedTensor, type StageRegistry, type Startable
} from '@phalanx/core'
import { deriveSeed } from '@phalanx/tfjs'
import { PipelineMessage, commitReplySchema, getReplySchema, prepareReplySchema, revertReplySchema, stepReplySchema, type Member } from './protocol.js'
import { DEFAULT_RECOVERY_POLICY, planRecovery, type RecoveryPlan, type RecoveryPolicy } from './recovery.js'
import { pipelineGraph } from './schedule.js'

/** Tunables of {@link createPipelineController}. */
export interface PipelineControllerInit {
  /** Number of stages. */
  stages: number
  /** Micro-batches per step (must match the stage workers'). */
  microBatches: number
  /** Recovery policy. @default {@link DEFAULT_RECOVERY_POLICY} */
  recovery?: Partial<RecoveryPolicy>
  /** Whether the stages train out of order (CheckFree+ swaps); must match the workers. @default false */
  outOfOrder?: boolean
  /** Whether neighbours keep embedding/head copies; must match the workers. @default false */
  edgeReplicas?: boolean
  /** Deadline of one step's `pp-step` requests. @default 60000 */
  stepTimeoutMs?: number
  /** Deadline of commits, state transfers and recoveries. @default 30000 */
  requestTimeoutMs?: number
  /** How long a member may take to answer the liveness probe after a failed step. @default 2000 */
  probeTimeoutMs?: number
  /** Take an in-memory snapshot of every stage every this many steps (0: never; needed by `rollback`). @default 10 with `rollback`, else 0 */
  snapshotEvery?: number
  /** Seeds random re-initialisations. @default 0 */
  seed?: number
  /** The step to train first (when the stages were loaded from a snapshot). @default 0 */
  startStep?: number
  /** Failed attempts of one step before `trainStep` gives up. @default 2 × stages + 2 */
  maxAttempts?: number
}

/** Collaborators of {@link createPipelineController}. */
export interface PipelineControllerComponents {
  /** The controller's endpoint. */
  endpoint: Endpoint
  /** Starts a replacement participant for `stage` (a fresh process, or a spare) and returns its id and address. */
  spawn: (stage: number, options: AbortOptions) => Promise<Member>
  /**
   * Stage membership and the stage graph (`createStageRegistry` of `@phalanx/coordinator`, created
   * with {@link pipelineGraph} of the same `stages` / `outOfOrder`). Members already in it when the
   * controller starts training are used as they are.
   */
  registry: StageRegistry
  /** @default systemClock() */
  clock?: Clock
  /** @default silent */
  logger?: Logger
}

/** A stage replica that stopped answering. */
export interface StageLostEvent {
  stage: number
  peer: string
  /** The step that was running. */
  step: number
  /** Replicas of the stage still alive. */
  survivors: number
}

/** A lost replica was replaced and the pipeline trained again. */
export interface RecoveryEvent {
  stage: number
  lost: string
  replacement: string
  /** `replica-copy` (exact), `average`, `copy`, `random` or `rollback`. */
  strategy: RecoveryPlan['kind']
  /** The step that was replayed. */
  step: number
  /** Milliseconds from detecting the loss to the replayed step being committed. */
  resumeMs: number
  /** Milliseconds the replacement took to build its state. */
  rebuildMs: number
  /** Training loss of the replayed step (the first after recovery). */
  lossAfter: number
}

/** Every replica prepared step `step`: the controller is about to send the commits. */
export interface CommittingEvent {
  step: number
  epoch: number
}

/** Stage replicas that had applied a step were rolled back because a member was lost during the commit. */
export interface RevertedEvent {
  step: number
  /** Ids of the replicas that had applied the step and restored their pre-step copy. */
  reverted: string[]
}

/** Events of a {@link PipelineController}. */
export interface PipelineControllerEvents {
  'stage-lost': (event: StageLostEvent) => void
  recovered: (event: RecoveryEvent) => void
  /** The commit decision of a step (the last moment before any stage applies it). */
  committing: (event: CommittingEvent) => void
  reverted: (event: RevertedEvent) => void
}

/** Result of one committed step. */
export interface StepReport {
  /** The step that was committed. */
  step: number
  /** Mean loss over the step's micro-batches. */
  loss: number
  /** Loss per micro-batch. */
  losses: number[]
  /** Clipped gradient norm of every stage (replica 0). */
  gradNorms: number[]
  /** Attempts it took (1 without failures). */
  attempts: number
  /** Recoveries performed before the step committed. */
  recoveries: RecoveryEvent[]
}

/** Counters of a {@link PipelineController}. */
export interface PipelineMetrics {
  stepsCommitted: number
  failedAttempts: number
  stagesLost: number
  recoveriesByStrategy: Record<string, number>
  /** Micro-batches that were run again because their step failed. */
  microBatchesReplayed: number
  /** Steps whose commit was interrupted by a loss after some replicas applied them. */
  commitsInterrupted: number
  /** Replica states rolled back to their pre-step copy. */
  replicasReverted: number
  lastResumeMs: number | undefined
}

/** Drives a pipeline of stage workers. */
export interface PipelineController extends Startable, AsyncDisposable {
  /** Members by stage, in replica order (a copy of the registry's view). */
  readonly members: Member[][]
  /** Committed steps (the next step to train). */
  readonly step: number
  readonly epoch: number
  /** Registers a stage replica in the registry before the first step (or adds a data-parallel replica later). */
  join(stage: number, member: Member): void
  /** Trains one step, recovering lost stages and replaying the step as needed. */
  trainStep(options?: AbortOptions): Promise<StepReport>
  /** Subscribes to an event; returns the unsubscribe function. */
  on<E extends keyof PipelineControllerEvents>(event: E, listener: PipelineControllerEvents[E]): () => void
  metrics(): PipelineMetrics
}

interface Snapshot { step: number, stages: Array<{ tensors: NamedTensor[], lrScale: number }> }

/** Creates the controller. */
export function createPipelineController (init: PipelineControllerInit, components: PipelineControllerComponents): PipelineController {
  const { stages, microBatches } = init
  if (!Number.isInteger(stages) || stages < 1) throw new InvalidParametersError(`stages must be a positive integer, got ${stages}`)
  const policy: RecoveryPolicy = { ...DEFAULT_RECOVERY_POLICY, ...init.recovery }
  const outOfOrder = init.outOfOrder ?? false
  const edgeReplicas = init.edgeReplicas ?? false
  const stepTimeoutMs = init.stepTimeoutMs ?? 60_000
  const requestTimeoutMs = init.requestTimeoutMs ?? 30_000
  const probeTimeoutMs = init.probeTimeoutMs ?? 2_000
  const snapshotEvery = init.snapshotEvery ?? (policy.strategy === 'rollback' ? 10 : 0)
  const seed = init.seed ?? 0
  const maxAttempts = init.maxAttempts ?? 2 * stages + 2
  const endpoint = components.endpoint
  const registry = components.registry
  const clock = components.clock ?? systemClock()
  const log = componentLogger(components.logger, 'pipeline-controller')
  if (registry.graph.stages !== stages) throw new InvalidParametersError(`The stage registry has ${registry.graph.stages} stages, the pipeline ${stages}`)
  const known = new Set(registry.graph.routes.map((r) => r.join(',')))
  for (const route of pipelineGraph({ stages, outOfOrder }).routes) {
    if (!known.has(route.join(','))) throw new InvalidParametersError(`The stage registry's graph lacks the route ${route.join('→')}; create it with pipelineGraph()`)
  }
  const gradNorms = new Array<number>(stages).fill(1)
  const listeners: { [E in keyof PipelineControllerEvents]: Set<PipelineControllerEvents[E]> } = { 'stage-lost': new Set(), recovered: new Set(), committing: new Set(), reverted: new Set() }
  const metrics: PipelineMetrics = {
    stepsCommitted: 0, failedAttempts: 0, stagesLost: 0, recoveriesByStrategy: {}, microBatchesReplayed: 0, commitsInterrupted: 0, replicasReverted: 0, lastResumeMs: undefined
  }
  let step = init.startStep ?? 0
  let epoch = endpoint.epoch
  let snapshot: Snapshot | undefined
  let recoveries = 0
  let stopped = false
  const lifetime = new AbortController()

  const emit = <E extends keyof PipelineControllerEvents>(event: E, payload: Parameters<PipelineControllerEvents[E]>[0]): void => {
    for (const l of listeners[event]) {
      try { (l as (p: typeof payload) => void)(payload) } catch (err) { log.warn({ err, event }, 'listener failed') }
    }
  }

  const all = (): Array<{ stage: number, member: Member }> => registry.members().flatMap((row, stage) => row.map((member) => ({ stage, member })))

  const takeSnapshot = async (signal: AbortSignal): Promise<void> => {
    const states = await Promise.all(registry.members().map(async (row) => {
      const m = row[0] as Member
      const reply = await endpoint.request(m.id, { type: PipelineMessage.get, body: { part: 'full' } }, { signal, timeoutMs: requestTimeoutMs })
      const meta = getReplySchema.parse(reply.header.body)
      return { tensors: decodeTensors(reply).map((t) => ({ ...t, data: t.data.slice() })), lrScale: meta.lrScale }
    }))
    snapshot = { step, stages: states }
  }

  const allowListeners = (signal: AbortSignal, members: number): void => { setMaxListeners(16 + 4 * members, signal) }

  /** Where a step attempt is: a failure in `commit` may have left some stages one step ahead. */
  let phase: 'compute' | 'prepare' | 'commit' = 'compute'

  const runAttempt = async (signal: AbortSignal): Promise<{ losses: number[], norms: number[] }> => {
    const members = registry.members()
    for (const { member } of all()) endpoint.connect(member.id, member.address)
    const body = { step, epoch, members }
    const ctrl = new AbortController()
    const both = AbortSignal.any([signal, ctrl.signal])
    // The first failure aborts the other requests at once: survivors would otherwise wait for the
    // dead stage's activations until their own deadline.
    const guarded = async <T>(p: Promise<T>): Promise<T> => {
      try { return await p } catch (err) { ctrl.abort(err); throw err }
    }
    const losses = new Array<number>(microBatches).fill(Number.NaN)
    const everyone = all()
    // One request per member is pending on these signals at once (each adds an abort listener).
    allowListeners(both, everyone.length)
    phase = 'compute'
    const replies = await Promise.all(everyone.map(async ({ member }) => await guarded(
      endpoint.request(member.id, { type: PipelineMessage.step, step, body }, { signal: both, timeoutMs: stepTimeoutMs }))))
    for (const reply of replies) for (const [m, loss] of stepReplySchema.parse(reply.header.body).losses) losses[m] = loss
    phase = 'prepare'
    const prepared = await Promise.all(everyone.map(async ({ stage, member }) => {
      const reply = await guarded(endpoint.request(member.id, { type: PipelineMessage.prepare, step, body: { step } }, { signal: both, timeoutMs: requestTimeoutMs }))
      return { stage, ...prepareReplySchema.parse(reply.header.body) }
    }))
    // The decision: every replica holds its clipped gradient. From here a loss leaves stages apart
    // until the appliers are reverted.
    phase = 'commit'
    emit('committing', { step, epoch })
    throwIfAborted(both)
    await Promise.all(everyone.map(async ({ member }) => {
      const reply = await guarded(endpoint.request(member.id, { type: PipelineMessage.commit, step, body: { step } }, { signal: both, timeoutMs: requestTimeoutMs }))
      const { committed } = commitReplySchema.parse(reply.header.body)
      if (committed !== step + 1) throw new StepAbortedError(`${member.id} reports ${committed} committed steps after committing step ${step}`)
    }))
    const norms = new Array<number>(stages).fill(0)
    for (const c of [...prepared].reverse()) norms[c.stage] = c.clipped
    return { losses, norms }
  }

  /**
   * Brings every survivor back to `step` committed steps after a commit was interrupted. Returns
   * the members that did not answer (lost as well).
   */
  const revertSurvivors = async (exclude: ReadonlySet<string>, signal: AbortSignal): Promise<Array<{ stage: number, member: Member }>> => {
    const everyone = all().filter((x) => !exclude.has(x.member.id))
    const results = await Promise.allSettled(everyone.map(async ({ member }) => {
      const reply = await endpoint.request(member.id, { type: PipelineMessage.revert, body: { step } }, { signal, timeoutMs: probeTimeoutMs })
      return revertReplySchema.parse(reply.header.body)
    }))
    const reverted: string[] = []
    const lost: Array<{ stage: number, member: Member }> = []
    results.forEach((r, i) => {
      const x = everyone[i] as { stage: number, member: Member }
      if (r.status === 'rejected') {
        throwIfAborted(signal)
        // A survivor that cannot go back to `step` is in an unknown state: replace it like a lost one.
        log.warn({ err: r.reason, peer: x.member.id, step }, 'revert failed')
        lost.push(x)
      } else if (r.value.reverted) reverted.push(x.member.id)
    })
    metrics.commitsInterrupted++
    metrics.replicasReverted += reverted.length
    log.warn({ step, reverted }, 'commit interrupted: appliers reverted')
    emit('reverted', { step, reverted })
    return lost
  }

  /** Bumps the epoch, aborts the step everywhere, and returns the members that did not answer. */
  const probe = async (signal: AbortSignal): Promise<Array<{ stage: number, member: Member }>> => {
    epoch++
    endpoint.epoch = epoch
    const results = await Promise.allSettled(all().map(async (x) => {
      await endpoint.request(x.member.id, { type: PipelineMessage.abort, body: { epoch } }, { signal, timeoutMs: probeTimeoutMs })
      return x
    }))
    const lost: Array<{ stage: number, member: Member }> = []
    all().forEach((x, i) => { if (results[i]?.status === 'rejected') lost.push(x) })
    return lost
  }

  const recover = async (stage: number, lost: Member, signal: AbortSignal): Promise<{ plan: RecoveryPlan, replacement: Member, rebuildMs: number }> => {
    const plan = planRecovery({ stage, stages, survivors: registry.membersOf(stage).length, gradNorms, outOfOrder, edgeReplicas, policy })
    const replacement = await components.spawn(stage, { signal })
    endpoint.connect(replacement.id, replacement.address)
    const t0 = clock.now()
    if (plan.kind === 'rollback') {
      registry.join(stage, replacement)
      const snap = snapshot
      if (snap === undefined) throw new InvalidParametersError('rollback needs a snapshot (snapshotEvery > 0)')
      await Promise.all(all().map(async ({ stage: s, member }) => {
        const state = snap.stages[s] as { tensors: NamedTensor[], lrScale: number }
        await endpoint.request(member.id, { type: PipelineMessage.load, body: { step: snap.step, lrScale: state.lrScale }, tensors: state.tensors }, { signal, timeoutMs: requestTimeoutMs })
      }))
      step = snap.step
    } else {
      let kind = plan.kind
      const sources = plan.sources.flatMap((src) => {
        const donor = registry.membersOf(src.stage)[0]
        return donor === undefined ? [] : [{ member: donor, part: src.part, weight: src.weight }]
      })
      // A neighbour that is itself lost cannot donate: fall back to a fresh initialisation.
      if (sources.length < plan.sources.filter((s) => s.part !== 'edge').length) kind = 'random'
      const body = {
        kind,
        sources: kind === 'random' ? [] : sources,
        lrScale: kind === 'replica-copy' ? 1 : policy.lrScale,
        seed: deriveSeed(seed, 0x5eed, ++recoveries),
        step
      }
      await endpoint.request(replacement.id, { type: PipelineMessage.recover, body }, { signal, timeoutMs: requestTimeoutMs })
      registry.join(stage, replacement)
    }
    log.info({ stage, lost: lost.id, replacement: replacement.id, strategy: plan.kind }, 'stage recovered')
    return { plan, replacement, rebuildMs: clock.now() - t0 }
  }

  return {
    get members () { return registry.members() },
    get step () { return step },
    get epoch () { return epoch },
    join (stage, member) {
      registry.join(stage, member)
      endpoint.connect(member.id, member.address)
    },
    async trainStep (options = {}) {
      throwIfAborted(options.signal)
      if (stopped) throw new StepAbortedError('Controller stopped')
      const vacant = registry.vacant()
      if (vacant.length > 0) throw new InvalidParametersError(`Stages ${vacant.join(', ')} have no member`)
      const signal = AbortSignal.any([lifetime.signal, ...(options.signal === undefined ? [] : [options.signal])])
      allowListeners(signal, all().length)
      if (snapshotEvery > 0 && snapshot === undefined) await raceSignal(takeSnapshot(signal), signal)
      const pending: Array<{ stage: number, lost: string, detectedAt: number, plan: RecoveryPlan, replacement: Member, rebuildMs: number }> = []
      for (let attempt = 1; attempt <= maxAttempts; attempt++) {
        try {
          const { losses, norms } = await runAttempt(signal)
          norms.forEach((n, s) => { gradNorms[s] = n })
          const committedStep = step
          step++
          metrics.stepsCommitted++
          const loss = losses.reduce((a, b) => a + b, 0) / losses.length
          const done: RecoveryEvent[] = pending.map((p) => ({
            stage: p.stage, lost: p.lost, replacement: p.replacement.id, strategy: p.plan.kind, step: committedStep,
            resumeMs: clock.now() - p.detectedAt, rebuildMs: p.rebuildMs, lossAfter: loss
          }))
          for (const e of done) {
            metrics.recoveriesByStrategy[e.strategy] = (metrics.recoveriesByStrategy[e.strategy] ?? 0) + 1
            metrics.lastResumeMs = e.resumeMs
            emit('recovered', e)
          }
          if (snapshotEvery > 0 && step % snapshotEvery === 0) await takeSnapshot(signal)
          return { step: committedStep, loss, losses, gradNorms: [...norms], attempts: attempt, recoveries: done }
        } catch (err) {
          if (signal.aborted) {
            // Cancelled while commits were being applied: still bring the survivors back to one
            // step (best effort; a member that does not answer is found lost at the next step).
            if (phase === 'commit' && !lifetime.signal.aborted) {
              const lost = await probe(lifetime.signal)
              await revertSurvivors(new Set(lost.map((x) => x.member.id)), lifetime.signal).catch((e: unknown) => { log.warn({ err: e }, 'revert after cancel failed') })
            }
            throwIfAborted(signal)
          }
          metrics.failedAttempts++
          metrics.microBatchesReplayed += microBatches
          log.warn({ err, step, attempt }, 'step failed')
          const detectedAt = clock.now()
          const interrupted = phase === 'commit'
          const lost = await probe(signal)
          if (interrupted) lost.push(...await revertSurvivors(new Set(lost.map((x) => x.member.id)), signal))
          for (const { stage, member } of lost) {
            registry.leave(member.id, 'lost')
            endpoint.disconnect(member.id)
            metrics.stagesLost++
            emit('stage-lost', { stage, peer: member.id, step, survivors: registry.membersOf(stage).length })
          }
          // Stages that kept a replica first: their exact copies may then donate to neighbours.
          const order = [...lost].sort((a, b) => registry.membersOf(b.stage).length - registry.membersOf(a.stage).length || a.stage - b.stage)
          for (const { stage, member } of order) {
            const r = await recover(stage, member, signal)
            pending.push({ stage, lost: member.id, detectedAt, ...r })
          }
        }
      }
      throw new StepAbortedError(`Step ${step} failed ${maxAttempts} times`)
    },
    on (event, listener) {
      const set = listeners[event] as Set<typeof listener>
      set.add(listener)
      return () => { set.delete(listener) }
    },
    metrics: () => structuredClone(metrics),
    start () {},
    stop () {
      if (stopped) return
      stopped = true
      lifetime.abort(new StepAbortedError('Controller stopped'))
      for (const set of Object.values(listeners)) set.clear()
    },
    async [Symbol.asyncDispose] () { this.stop() }
  }
}
