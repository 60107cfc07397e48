/**
 * A {@link JobDriver} for `job.kind: pipeline` scenarios: a whole pipeline (`createLocalPipeline` of
 * `@phalanx/pipeline`: a controller and one stage worker per stage replica) in this process, over
 * the memory transport wrapped by the chaos network decorator, training a tiny transformer LM.
 *
 * What a scenario can do to it, honestly:
 * - `kill`: `LocalPipeline.kill(stage, replica)`: the replica's endpoint closes without a goodbye
 *   and its state is gone; the controller finds it lost, recovers it by policy (exact replica copy,
 *   CheckFree average, CheckFree+ copy, random, rollback) and replays the step.
 * - `network`: link rules (delay, jitter, drop, duplicate, reorder, corruption, bandwidth) on a stage
 *   replica's outbound traffic, or the whole job's (target `job`).
 *
 * Process ids are the stage replicas' endpoint ids (`stage-<s>-<n>`, numbered in start order, so
 * `stage-0-0`, `stage-1-1`, ... with one replica per stage); each is a `worker` whose `rank` is its
 * position in stage-major order and whose `group` is `stage-<s>`. The controller is the
 * `coordinator` (it cannot be killed: the pipeline has no controller fail-over). A committed step
 * is one pipeline step; recoveries carry the strategy used; the outcome's checksums are CRC-32C of
 * the final weights and optimiser state of every stage, one per data-parallel path.
 *
 * `job.recovery: false` gives the controller a single attempt per step: the first loss fails the
 * step and the job (the must-fail control).
 *
 * @module
 */
import {
  InvalidParametersError, StepAbortedError, crc32c, raceSignal, systemClock, type AbortOptions, type Clock, type NamedTensor
} from '@phalanx/core'
import {
  chaosTransport, createChaosAgent, createChaosLog, type ChaosLog, type ChaosTransport, type DriverRecovery, type FaultKind,
  type InjectionHandle, type InProcessFault, type JobDriver, type JobOutcome, type JobSpec, type ProcessInfo, type ProcessSignal,
  pipelineJobConfigSchema, type PipelineJobConfig
} from '@phalanx/chaos'
import { createStageRegistry } from '@phalanx/coordinator'
import { createLocalPipeline, pipelineGraph, type LocalPipeline, type RecoveryEvent, type StageLostEvent } from '@phalanx/pipeline'
import { charCorpus, selectBackend, type CharCorpus, type SequenceBatch } from '@phalanx/tfjs'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { createCommitFeed, kindConfig } from './chaos-kind-config.js'

/** `job.config` of a pipeline scenario: the chaos scenario schema's type (defaults filled in). */
export type PipelineScenarioConfig = PipelineJobConfig

/** A pipeline recovery: the runner's fields plus what the pipeline controller reports. */
export interface PipelineRecovery extends DriverRecovery {
  /** `replica-copy` (exact), `average` (CheckFree), `copy` (CheckFree+ edge), `random` or `rollback`. */
  strategy: RecoveryEvent['strategy']
  stage: number
  /** Endpoint id of the replacement. */
  replacement: string
  /** Milliseconds the replacement took to build its state. */
  rebuildMs: number
  /** Training loss of the replayed step. */
  lossAfter: number
}

/** Tunables of {@link createPipelineDriver}. */
export interface PipelineDriverInit {
  /** Seed of network fault decisions. @default 1 */
  seed?: number
  /** Shared log. @default a new one */
  log?: ChaosLog
  /**
   * tf.js backend (`cpu` keeps a run bit-reproducible, which the replica-copy scenario needs).
   * @default 'cpu'
   */
  backend?: 'cpu' | 'wasm'
}

/** Collaborators of {@link createPipelineDriver}. */
export interface PipelineDriverComponents {
  /** Times detection (kill to loss found). @default systemClock() */
  clock?: Clock
}

/** A pipeline-job driver; `pipeline` is the running pipeline (for tests and examples). */
export interface PipelineDriver extends JobDriver {
  readonly pipeline: LocalPipeline | undefined
}

const SUPPORTED: ReadonlySet<FaultKind> = new Set<FaultKind>(['kill', 'network'])

/** Training text: small, so the corpus builds in microseconds and the vocabulary stays tiny. */
const TEXT = 'the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. '.repeat(16)

/** Reads the validated `job.config` of a pipeline job. */
/** CRC-32C over the bytes of a list of tensors, in order. */
function checksumOf (parts: ReadonlyArray<readonly NamedTensor[]>): number {
  const chunks: Uint8Array[] = []
  for (const tensors of parts) {
    for (const t of tensors) chunks.push(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength))
  }
  const total = chunks.reduce((n, c) => n + c.byteLength, 0)
  const all = new Uint8Array(total)
  let at = 0
  for (const c of chunks) { all.set(c, at); at += c.byteLength }
  return crc32c(all)
}

/** Creates the driver (one job per driver). */
export function createPipelineDriver (init: PipelineDriverInit = {}, components: PipelineDriverComponents = {}): PipelineDriver {
  const clock = components.clock ?? systemClock()
  const log = init.log ?? createChaosLog()
  let spec: JobSpec | undefined
  let transport: ChaosTransport | undefined
  let pipeline: LocalPipeline | undefined
  let corpus: CharCorpus | undefined
  let training: Promise<JobOutcome> | undefined
  let phase: 'starting' | 'running' | 'done' | 'failed' | 'stopped' = 'starting'
  let committed = 0
  let lastLoss: number | undefined
  const lifetime = new AbortController()
  const commits = createCommitFeed()
  const recoveries: PipelineRecovery[] = []
  /** When each replica was killed (detection time is measured from it). */
  const killedAt = new Map<string, number>()
  const lostAt = new Map<string, number>()
  /** Every replica id ever started, with its stage (for processes()). */
  const known = new Map<string, number>()
  const dead = new Set<string>()
  const unsubscribes: Array<() => void> = []

  const where = (id: string): { stage: number, replica: number } | undefined => {
    const members = pipeline?.controller.members ?? []
    for (let s = 0; s < members.length; s++) {
      const r = (members[s] ?? []).findIndex((m) => m.id === id)
      if (r >= 0) return { stage: s, replica: r }
    }
    return undefined
  }

  const refreshKnown = (): void => {
    pipeline?.controller.members.forEach((row, s) => { for (const m of row) if (!known.has(m.id)) known.set(m.id, s) })
  }

  const outcome = async (): Promise<JobOutcome> => {
    const p = pipeline as LocalPipeline
    const workers = p.workers()
    const paths = Math.max(...workers.map((row) => row.length))
    const states = await Promise.all(workers.map(async (row) => await Promise.all(row.map(async (w) => (await w.state()).tensors))))
    const checksums: number[] = []
    for (let r = 0; r < paths; r++) checksums.push(checksumOf(states.map((row) => row[Math.min(r, row.length - 1)] ?? [])))
    return { committed, epoch: p.controller.epoch, checksums, ...(lastLoss === undefined ? {} : { loss: lastLoss }) }
  }

  const train = async (job: JobSpec): Promise<JobOutcome> => {
    const p = pipeline as LocalPipeline
    while (committed < job.steps) {
      const report = await p.controller.trainStep({ signal: lifetime.signal })
      committed = report.step + 1
      lastLoss = report.loss
      refreshKnown()
      commits.emit({ step: report.step, epoch: p.controller.epoch, loss: report.loss })
    }
    phase = 'done'
    return await outcome()
  }

  const driver: PipelineDriver = {
    name: 'pipeline',
    log,
    get pipeline () { return pipeline },
    supports: (kind) => SUPPORTED.has(kind),

    async start (job, options: AbortOptions = {}) {
      if (spec !== undefined) throw new InvalidParametersError('This driver runs one job; create another for the next')
      spec = job
      const c = kindConfig(pipelineJobConfigSchema, 'pipeline', job)
      await selectBackend({ prefer: init.backend ?? 'cpu' })
      corpus = await charCorpus({ text: TEXT, seqLen: c.seqLen, seed: job.seed }, options)
      const cor = corpus
      const order = cor.order(0)
      const mbs = c.microBatchSize
      const batches = (step: number, mb: number): SequenceBatch => {
        // Sample-indexed: the same micro-batch for a step on every stage and in every run.
        const first = ((step * c.microBatches + mb) * mbs) % Math.max(1, order.length - mbs)
        return cor.batch(order.subarray(first, first + mbs))
      }
      transport = chaosTransport(memoryTransport({ network: createMemoryNetwork() }), { seed: init.seed ?? 1 }, { log })
      const graph = pipelineGraph({ stages: c.stages, outOfOrder: c.outOfOrder })
      pipeline = await createLocalPipeline({
        lm: { vocab: cor.vocab.length, dModel: c.dModel, heads: 2, layers: c.layers ?? c.stages, seqLen: c.seqLen, ffn: 2 * c.dModel, seed: job.seed + 7 },
        stages: c.stages,
        microBatches: c.microBatches,
        schedule: c.schedule,
        outOfOrder: c.outOfOrder,
        edgeReplicas: c.edgeReplicas,
        lr: c.lr,
        ...(c.replicas === undefined ? {} : { replicas: c.replicas }),
        controller: {
          recovery: { strategy: c.recovery, weighting: c.weighting, preferReplica: c.preferReplica },
          stepTimeoutMs: c.stepTimeoutMs,
          probeTimeoutMs: c.probeTimeoutMs,
          seed: job.seed,
          // Recovery disabled: no step is ever retried, so the first loss ends the job.
          ...(job.recovery ? {} : { maxAttempts: 1 })
        }
      }, { transport, batches, registry: createStageRegistry({ graph }) }, options)
      refreshKnown()
      const p = pipeline
      unsubscribes.push(p.controller.on('stage-lost', (e: StageLostEvent) => { lostAt.set(e.peer, clock.now()) }))
      unsubscribes.push(p.controller.on('recovered', (e: RecoveryEvent) => {
        const detected = lostAt.get(e.lost) ?? clock.now()
        const killed = killedAt.get(e.lost) ?? detected
        const detectMs = Math.max(0, detected - killed)
        recoveries.push({
          reason: `stage ${e.stage} lost: ${e.strategy}`, peers: [e.lost], step: e.step,
          detectMs, quorumMs: e.rebuildMs, firstCommitMs: e.resumeMs, totalMs: detectMs + e.resumeMs,
          strategy: e.strategy, stage: e.stage, replacement: e.replacement, rebuildMs: e.rebuildMs, lossAfter: e.lossAfter
        })
        refreshKnown()
      }))
      phase = 'running'
      training = train(job).catch((err: unknown) => {
        if (phase !== 'stopped') phase = 'failed'
        throw err
      })
      // Observed by finished(); a failure before anyone asks must not be an unhandled rejection.
      training.catch(() => {})
    },

    processes (): ProcessInfo[] {
      refreshKnown()
      const out: ProcessInfo[] = [{ id: 'controller', role: 'coordinator', alive: pipeline !== undefined && phase !== 'stopped' }]
      const members = pipeline?.controller.members ?? []
      const flat = members.flatMap((row) => row.map((m) => m.id))
      for (const [id, stage] of known) {
        const rank = flat.indexOf(id)
        const alive = !dead.has(id) && rank >= 0
        out.push({ id, role: 'worker', group: `stage-${stage}`, alive, ...(alive ? { rank } : {}) })
      }
      return out
    },

    async signal (id: string, signal: ProcessSignal) {
      if (signal !== 'SIGKILL' && signal !== 'SIGTERM') throw new InvalidParametersError(`The pipeline driver delivers SIGKILL and SIGTERM only, not ${signal}`)
      if (id === 'controller') throw new InvalidParametersError('The pipeline controller cannot be killed (no controller fail-over)')
      const at = where(id)
      if (at === undefined || dead.has(id)) return
      dead.add(id)
      killedAt.set(id, clock.now())
      await (pipeline as LocalPipeline).kill(at.stage, at.replica)
    },

    async inject (id: string, fault: InProcessFault): Promise<InjectionHandle> {
      if (fault.kind !== 'network') throw new InvalidParametersError(`The pipeline driver cannot inject ${fault.kind}`)
      const net = transport as ChaosTransport
      if (id === '*') return createChaosAgent({ id: 'job' }, { log, transport: net }).apply(fault)
      if (!known.has(id)) throw new InvalidParametersError(`No stage replica ${id}`)
      return createChaosAgent({ id }, { log, transport: net }).apply(fault)
    },

    async spawn () {
      throw new InvalidParametersError('The pipeline driver does not start workers on request: replacements are spawned by the pipeline controller')
    },

    status () {
      return {
        phase,
        committed,
        epoch: pipeline?.controller.epoch ?? 0,
        members: (pipeline?.controller.members ?? []).flatMap((row) => row.map((m) => m.id)),
        ...(lastLoss === undefined ? {} : { loss: lastLoss })
      }
    },

    onCommit: commits.on,

    recoveries: () => [...recoveries],

    async finished (options: AbortOptions = {}): Promise<JobOutcome> {
      if (training === undefined) throw new StepAbortedError('Job not started')
      return await raceSignal(training, options.signal)
    },

    async stop () {
      if (phase === 'stopped') return
      phase = 'stopped'
      lifetime.abort(new StepAbortedError('Driver stopped'))
      await training?.catch(() => undefined)
      for (const off of unsubscribes) off()
      unsubscribes.length = 0
      transport?.clear()
      await pipeline?.stop()
    },

    async leaks () {
      if (pipeline === undefined) return []
      // After stop every worker's endpoint is closed and the live set is empty.
      return pipeline.workers().flat().map((w) => w.id)
    }
  }
  return driver
}
