import { createEpochFence, ELASTIC_FENCE_EXEMPT, type Endpoint, type Transport } from '@phalanx/core'
import { createCoordinator, type Coordinator, type CoordinatorInit, type StateStore } from '@phalanx/coordinator'
import { createLinearProblem, createSgdTrainer, referenceRun, trainLoop, type SgdTrainer, type StepLike, type TrainLoopResult } from '@phalanx/testing/cluster'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { createSampleOrder, createWorker, type Worker, type WorkerInit } from '../src/index.js'

export const JOB = { globalBatch: 32, microBatch: 4, steps: 30, seed: 5 }

export interface Node {
  id: string
  endpoint: Endpoint
  worker: Worker
  trainer: SgdTrainer
  loop: Promise<TrainLoopResult>
}

export interface TestCluster {
  transport: Transport
  coordinator: Coordinator
  coordinatorEndpoint: Endpoint
  nodes: Map<string, Node>
  addWorker(id: string, options?: { beforeReduce?: (step: StepLike) => Promise<void> | void, init?: Partial<WorkerInit>, wrap?: (e: Endpoint) => Endpoint }): Promise<Node>
  crash(id: string): Promise<void>
  restartCoordinator(): Promise<void>
  reference(): SgdTrainer
  close(): Promise<void>
}

export const problem = createLinearProblem({ samples: 256, features: 12, seed: 3 })
export const order = createSampleOrder({ seed: JOB.seed, size: problem.samples })

export async function createTestCluster (init: Partial<CoordinatorInit> & { store?: () => StateStore } = {}): Promise<TestCluster> {
  const transport = memoryTransport({ network: createMemoryNetwork() })
  const { store, ...coordInit } = init
  const full: CoordinatorInit = {
    jobId: 'test', minWorkers: 2, maxWorkers: 4, deterministic: true,
    globalBatch: JOB.globalBatch, microBatch: JOB.microBatch, steps: JOB.steps,
    heartbeatIntervalMs: 20, suspectAfterMs: 200, stepTimeoutMs: 5000, rendezvousTimeoutMs: 10_000, hangFloorMs: 400,
    ...coordInit
  }
  let currentStore: StateStore | undefined
  const openCoordinator = async (): Promise<{ endpoint: Endpoint, coordinator: Coordinator }> => {
    const fence = createEpochFence({ exempt: ELASTIC_FENCE_EXEMPT })
    const endpoint = await transport.open({ id: 'coordinator', job: 'test', fence })
    currentStore = store?.()
    const coordinator = createCoordinator(full, { endpoint, fence, ...(currentStore === undefined ? {} : { store: currentStore }) })
    await coordinator.start()
    return { endpoint, coordinator }
  }
  let c = await openCoordinator()
  const nodes = new Map<string, Node>()
  const cluster: TestCluster = {
    transport,
    get coordinator () { return c.coordinator },
    get coordinatorEndpoint () { return c.endpoint },
    nodes,
    async addWorker (id, options = {}) {
      const raw = await transport.open({ id, job: 'test' })
      const endpoint = options.wrap?.(raw) ?? raw
      const trainer = createSgdTrainer({ size: problem.size })
      const worker = createWorker({ size: problem.size, coordinatorAddress: 'coordinator', heartbeatIntervalMs: 20, suspectAfterMs: 200, requestTimeoutMs: 500, healChunkBytes: 16, ...options.init },
        { endpoint, state: { get: () => trainer.state(), set: (s) => { trainer.load(s) } } })
      await worker.start()
      const loop = trainLoop(worker.steps(), problem, trainer, { indexOf: order.indexOf, ...(options.beforeReduce === undefined ? {} : { beforeReduce: options.beforeReduce }) })
      const node: Node = { id, endpoint: raw, worker, trainer, loop }
      nodes.set(id, node)
      return node
    },
    async crash (id) {
      const n = nodes.get(id)
      if (n === undefined) return
      nodes.delete(id)
      await n.endpoint.close()
      await n.worker.stop()
      await n.loop.catch(() => undefined)
    },
    async restartCoordinator () {
      await c.endpoint.close()
      await c.coordinator.stop()
      await currentStore?.close()
      c = await openCoordinator()
    },
    reference () {
      const t = createSgdTrainer({ size: problem.size })
      referenceRun(problem, t, { steps: full.steps, globalBatch: full.globalBatch, microBatch: full.microBatch, indexOf: order.indexOf })
      return t
    },
    async close () {
      for (const n of nodes.values()) {
        await n.worker.stop()
        await n.endpoint.close()
        await n.loop.catch(() => undefined)
      }
      await c.coordinator.stop()
      await c.endpoint.close()
      await currentStore?.close()
    }
  }
  return cluster
}
