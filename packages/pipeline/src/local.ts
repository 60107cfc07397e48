/**
 * A whole pipeline in one process: a controller and one stage worker per stage replica, each with
 * its own endpoint on an injected {@link Transport} (the memory transport in tests, examples and
 * the evaluation). Replacements are spawned in-process; {@link LocalPipeline.kill} crashes a
 * replica (closes its endpoint without a goodbye and drops its state).
 *
 * @module
 */
import {
  InvalidParametersError, createEpochFence, throwIfAborted, type AbortOptions, type Clock, type Endpoint, type Logger, type StageRegistry, type Transport
} from '@phalanx/core'
import type { SequenceBatch } from '@phalanx/tfjs'
import { createPipelineController, type PipelineController, type PipelineControllerInit } from './controller.js'
import type { Member } from './protocol.js'
import { createStageWorker, type StageWorker, type StageWorkerInit } from './stage.js'

/** Tunables of {@link createLocalPipeline}. */
export interface LocalPipelineInit extends Omit<StageWorkerInit, 'stage'> {
  /** Data-parallel replicas per stage. @default one each */
  replicas?: readonly number[]
  /** Controller tunables other than those shared with the workers. */
  controller?: Omit<PipelineControllerInit, 'stages' | 'microBatches' | 'outOfOrder' | 'edgeReplicas'>
  /** Job id on every endpoint. @default 'pipeline' */
  job?: string
}

/** Collaborators of {@link createLocalPipeline}. */
export interface LocalPipelineComponents {
  transport: Transport
  /** The micro-batches of every step (same function for every stage). */
  batches: (step: number, microBatch: number) => SequenceBatch
  /**
   * Stage membership and graph, empty: `createStageRegistry({ graph: pipelineGraph({ stages, outOfOrder }) })`
   * from `@phalanx/coordinator`.
   */
  registry: StageRegistry
  clock?: Clock
  logger?: Logger
}

/** An in-process pipeline. */
export interface LocalPipeline extends AsyncDisposable {
  readonly controller: PipelineController
  /** The live workers by stage, in replica order. */
  workers(): StageWorker[][]
  /** Crashes replica `replica` of `stage`: its endpoint closes and its state is gone. */
  kill(stage: number, replica?: number): Promise<void>
  /** Stops the controller and every worker and closes every endpoint. Idempotent. */
  stop(): Promise<void>
}

/** Opens the endpoints, starts the workers and registers them with a new controller. */
export async function createLocalPipeline (init: LocalPipelineInit, components: LocalPipelineComponents, options: AbortOptions = {}): Promise<LocalPipeline> {
  const job = init.job ?? 'pipeline'
  const live = new Map<string, { stage: number, worker: StageWorker, endpoint: Endpoint }>()
  const endpoints: Endpoint[] = []
  let spawned = 0

  const open = async (id: string): Promise<Endpoint> => {
    const ep = await components.transport.open({ id, job, fence: createEpochFence(), logger: components.logger, requestTimeoutMs: 60_000, sendQueueLimit: 1024 }, options)
    endpoints.push(ep)
    return ep
  }

  const spawn = async (stage: number, opts: AbortOptions = {}): Promise<Member> => {
    throwIfAborted(opts.signal)
    const endpoint = await open(`stage-${stage}-${spawned++}`)
    const worker = createStageWorker({ ...init, stage }, { endpoint, batches: components.batches, logger: components.logger })
    worker.start()
    live.set(endpoint.id, { stage, worker, endpoint })
    return { id: endpoint.id, address: endpoint.address }
  }

  const controllerEndpoint = await open('controller')
  const controller = createPipelineController({
    ...init.controller,
    stages: init.stages,
    microBatches: init.microBatches,
    outOfOrder: init.outOfOrder,
    edgeReplicas: init.edgeReplicas
  }, { endpoint: controllerEndpoint, spawn, registry: components.registry, clock: components.clock, logger: components.logger })
  let stopped = false
  const stop = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    controller.stop()
    for (const { worker } of live.values()) worker.stop()
    live.clear()
    await Promise.all(endpoints.map(async (ep) => { await ep.close({ lingerMs: 0 }) }))
  }
  try {
    for (let s = 0; s < init.stages; s++) {
      for (let r = 0; r < (init.replicas?.[s] ?? 1); r++) controller.join(s, await spawn(s, options))
    }
  } catch (err) {
    await stop()
    throw err
  }

  return {
    controller,
    workers () {
      return controller.members.map((row) => row.flatMap((m) => {
        const w = live.get(m.id)
        return w === undefined ? [] : [w.worker]
      }))
    },
    async kill (stage, replica = 0) {
      const id = controller.members[stage]?.[replica]?.id
      const entry = id === undefined ? undefined : live.get(id)
      if (entry === undefined) throw new InvalidParametersError(`No live replica ${replica} of stage ${stage}`)
      live.delete(entry.endpoint.id)
      await entry.endpoint.close({ lingerMs: 0 })
      entry.worker.stop()
    },
    stop,
    async [Symbol.asyncDispose] () { await stop() }
  }
}
