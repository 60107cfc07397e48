/**
 * The pipeline controller: keeps the stage registry (which endpoints serve which stage), drives
 * steps (`pp-step` to every replica, then `pp-commit`), detects lost stage replicas, recovers them
 * by policy and replays the interrupted step so that no micro-batch is lost.
 *
 * Failure handling: a step fails when any request of it rejects (a dead peer's pending requests
 * reject at once with `PeerUnreachableError` on both transports; a hang ends at `stepTimeoutMs`).
 * The controller then bumps the epoch and sends `pp-abort` to every member as a request: members
 * that answer are alive and drop the step; those that do not (within `probeTimeoutMs`) are lost.
 * Each lost replica is replaced by a fresh participant from `components.spawn`, which builds its
 * state as {@link planRecovery} says, and the step runs again from its first micro-batch with the
 * new membership. Nothing of a failed step was applied, so the replay is exact.
 *
 * The elastic coordinator of `@phalanx/coordinator` tracks data-parallel workers without stage
 * roles, so the pipeline keeps its own small stage registry here.
 *
 * @module
 */
import {
  InvalidParametersError, StepAbortedError, componentLogger, decodeTensors, raceSignal, systemClock, throwIfAborted,
  type AbortOptions, type Clock, type Endpoint, type Logger, type NamedTensor, type Startable
} from '@phalanx/core'
import { deriveSeed } from '@phalanx/tfjs'
import { PipelineMessage, commitReplySchema, getReplySchema, stepReplySchema, type Member } from './protocol.js'
import { DEFAULT_RECOVERY_POLICY, planRecovery, type RecoveryPlan, type RecoveryPolicy } from './recovery.js'

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

/** Events of a {@link PipelineController}. */
export interface PipelineControllerEvents {
  'stage-lost': (event: StageLostEvent) => void
  recovered: (event: RecoveryEvent) => void
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
  lastResumeMs: number | undefined
}

/** Drives a pipeline of stage workers. */
export interface PipelineController extends Startable, AsyncDisposable {
  /** Members by stage, in replica order (a copy). */
  readonly members: Member[][]
  /** Committed steps (the next step to train). */
  readonly step: number
  readonly epoch: number
  /** Registers a stage replica before the first step (or adds a data-parallel replica later). */
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
  const clock = components.clock ?? systemClock()
  const log = componentLogger(components.logger, 'pipeline-controller')
  const members: Member[][] = Array.from({ length: stages }, () => [])
  const gradNorms = new Array<number>(stages).fill(1)
  const listeners: { [E in keyof PipelineControllerEvents]: Set<PipelineControllerEvents[E]> } = { 'stage-lost': new Set(), recovered: new Set() }
  const metrics: PipelineMetrics = { stepsCommitted: 0, failedAttempts: 0, stagesLost: 0, recoveriesByStrategy: {}, microBatchesReplayed: 0, lastResumeMs: undefined }
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

  const all = (): Array<{ stage: number, member: Member }> => members.flatMap((row, stage) => row.map((member) => ({ stage, member })))

  const takeSnapshot = async (signal: AbortSignal): Promise<void> => {
    const states = await Promise.all(members.map(async (row) => {
      const m = row[0] as Member
      const reply = await endpoint.request(m.id, { type: PipelineMessage.get, body: { part: 'full' } }, { signal, timeoutMs: requestTimeoutMs })
      const meta = getReplySchema.parse(reply.header.body)
      return { tensors: decodeTensors(reply).map((t) => ({ ...t, data: t.data.slice() })), lrScale: meta.lrScale }
    }))
    snapshot = { step, stages: states }
  }

  const runAttempt = async (signal: AbortSignal): Promise<{ losses: number[], norms: number[] }> => {
    const body = { step, epoch, members }
    const ctrl = new AbortController()
    const both = AbortSignal.any([signal, ctrl.signal])
    // The first failure aborts the other requests at once: survivors would otherwise wait for the
    // dead stage's activations until their own deadline.
    const guarded = async <T>(p: Promise<T>): Promise<T> => {
      try { return await p } catch (err) { ctrl.abort(err); throw err }
    }
    const losses = new Array<number>(microBatches).fill(Number.NaN)
    const replies = await Promise.all(all().map(async ({ member }) => await guarded(
      endpoint.request(member.id, { type: PipelineMessage.step, step, body }, { signal: both, timeoutMs: stepTimeoutMs }))))
    for (const reply of replies) for (const [m, loss] of stepReplySchema.parse(reply.header.body).losses) losses[m] = loss
    const commits = await Promise.all(all().map(async ({ stage, member }) => {
      const reply = await guarded(endpoint.request(member.id, { type: PipelineMessage.commit, step, body: { step } }, { signal: both, timeoutMs: requestTimeoutMs }))
      return { stage, ...commitReplySchema.parse(reply.header.body) }
    }))
    const norms = new Array<number>(stages).fill(0)
    for (const c of [...commits].reverse()) norms[c.stage] = c.clipped
    return { losses, norms }
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
    const row = members[stage] as Member[]
    const plan = planRecovery({ stage, stages, survivors: row.length, gradNorms, outOfOrder, edgeReplicas, policy })
    const replacement = await components.spawn(stage, { signal })
    endpoint.connect(replacement.id, replacement.address)
    const t0 = clock.now()
    if (plan.kind === 'rollback') {
      row.push(replacement)
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
        const donor = members[src.stage]?.[0]
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
      row.push(replacement)
    }
    log.info({ stage, lost: lost.id, replacement: replacement.id, strategy: plan.kind }, 'stage recovered')
    return { plan, replacement, rebuildMs: clock.now() - t0 }
  }

  return {
    get members () { return members.map((row) => row.map((m) => ({ ...m }))) },
    get step () { return step },
    get epoch () { return epoch },
    join (stage, member) {
      const row = members[stage]
      if (row === undefined) throw new InvalidParametersError(`stage ${stage} is not in [0, ${stages})`)
      if (all().some((x) => x.member.id === member.id)) throw new InvalidParametersError(`${member.id} is already a member`)
      endpoint.connect(member.id, member.address)
      row.push({ ...member })
    },
    async trainStep (options = {}) {
      throwIfAborted(options.signal)
      if (stopped) throw new StepAbortedError('Controller stopped')
      if (members.some((row) => row.length === 0)) throw new InvalidParametersError('Every stage needs a member before training')
      const signal = AbortSignal.any([lifetime.signal, ...(options.signal === undefined ? [] : [options.signal])])
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
          throwIfAborted(signal)
          metrics.failedAttempts++
          metrics.microBatchesReplayed += microBatches
          log.warn({ err, step, attempt }, 'step failed')
          const detectedAt = clock.now()
          const lost = await probe(signal)
          for (const { stage, member } of lost) {
            const row = members[stage] as Member[]
            row.splice(row.findIndex((m) => m.id === member.id), 1)
            endpoint.disconnect(member.id)
            metrics.stagesLost++
            emit('stage-lost', { stage, peer: member.id, step, survivors: row.length })
          }
          // Stages that kept a replica first: their exact copies may then donate to neighbours.
          const order = [...lost].sort((a, b) => (members[b.stage]?.length ?? 0) - (members[a.stage]?.length ?? 0) || a.stage - b.stage)
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
