import { createEpochFence, ELASTIC_FENCE_EXEMPT, stateDictsBitEqual, type Endpoint, type StateDict } from '@phalanx/core'
import { createCoordinator, type Coordinator, type CoordinatorInit } from '@phalanx/coordinator'
import {
  applyGradients, computeGradients, createMnistMlp, extractState, mnistLoss, tf, type MnistBatch, type TfModel
} from '@phalanx/tfjs'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { createSampleOrder, createTrainer, type SampleDataset, type Trainer, type TrainSpec, type TrainSummary } from '../src/index.js'

export const FEATURES = 16
export const CLASSES = 4
export const TRAIN_JOB = { globalBatch: 24, microBatch: 4, steps: 10, seed: 11 }

/** A separable synthetic classification set: sample i is the same bytes everywhere. */
export function syntheticData (size = 96): SampleDataset<MnistBatch> {
  let s = 12345
  const rand = (): number => { s = (s * 48271) % 2147483647; return s / 2147483647 }
  const xs = new Float32Array(size * FEATURES)
  const labels = new Uint8Array(size)
  for (let i = 0; i < size; i++) {
    const c = i % CLASSES
    labels[i] = c
    for (let j = 0; j < FEATURES; j++) xs[i * FEATURES + j] = (j % CLASSES === c ? 1 : 0) + (rand() - 0.5) * 0.8
  }
  return {
    size,
    batch (indices) {
      const n = indices.length
      const b: MnistBatch = { size: n, xs: new Float32Array(n * FEATURES), ys: new Float32Array(n * CLASSES), labels: new Uint8Array(n) }
      for (let k = 0; k < n; k++) {
        const i = indices[k] as number
        b.xs.set(xs.subarray(i * FEATURES, (i + 1) * FEATURES), k * FEATURES)
        b.ys[k * CLASSES + (labels[i] as number)] = 1
        b.labels[k] = labels[i] as number
      }
      return b
    }
  }
}

export function tinyModel (): TfModel {
  return createMnistMlp({ inputs: FEATURES, hidden: 8, classes: CLASSES, seed: 3 })
}

export function optimizerFor (): tf.Optimizer {
  return tf.train.adam(0.05)
}

/**
 * The plain single-process loop with the same canonical reduction: one gradient per micro-batch,
 * summed in float64 in index order, divided by the number of micro-batches, rounded once.
 */
export async function plainReference (data: SampleDataset<MnistBatch>): Promise<StateDict> {
  const model = tinyModel()
  const optimizer = optimizerFor()
  try {
    const order = createSampleOrder({ seed: TRAIN_JOB.seed, size: data.size })
    const M = TRAIN_JOB.globalBatch / TRAIN_JOB.microBatch
    let size = 0
    for (const p of model.params) size += p.variable.size
    for (let step = 0; step < TRAIN_JOB.steps; step++) {
      const acc = new Float64Array(size)
      for (let m = 0; m < M; m++) {
        const start = step * TRAIN_JOB.globalBatch + m * TRAIN_JOB.microBatch
        const { grads } = await computeGradients(model, mnistLoss, data.batch(order.range(start, start + TRAIN_JOB.microBatch)))
        for (let j = 0; j < size; j++) acc[j] = (acc[j] as number) + (grads[j] as number)
      }
      const g = new Float32Array(size)
      for (let j = 0; j < size; j++) g[j] = (acc[j] as number) / M
      applyGradients(model, optimizer, g)
    }
    return await extractState(model, optimizer)
  } finally {
    model.dispose()
    optimizer.dispose()
  }
}

export interface RunNode {
  id: string
  endpoint: Endpoint
  trainer: Trainer
  model: TfModel
  optimizer: tf.Optimizer
  run: Promise<TrainSummary>
}

export interface TrainCluster {
  coordinator: Coordinator
  nodes: Map<string, RunNode>
  add(id: string, spec?: Partial<TrainSpec<MnistBatch>>): Promise<RunNode>
  crash(id: string): Promise<void>
  /** Final state of a node (weights and optimiser slots). */
  state(id: string): Promise<StateDict>
  close(): Promise<void>
}

export async function createTrainCluster (data: SampleDataset<MnistBatch>, init: Partial<CoordinatorInit> = {}): Promise<TrainCluster> {
  const transport = memoryTransport({ network: createMemoryNetwork() })
  const fence = createEpochFence({ exempt: ELASTIC_FENCE_EXEMPT })
  const coordinatorEndpoint = await transport.open({ id: 'coordinator', job: 'train-test', fence })
  const coordinator = createCoordinator({
    jobId: 'train-test', minWorkers: 2, maxWorkers: 4, deterministic: true,
    globalBatch: TRAIN_JOB.globalBatch, microBatch: TRAIN_JOB.microBatch, steps: TRAIN_JOB.steps,
    heartbeatIntervalMs: 20, suspectAfterMs: 300, stepTimeoutMs: 10_000, rendezvousTimeoutMs: 10_000, lastCallMs: 2_000,
    ...init
  }, { endpoint: coordinatorEndpoint, fence })
  await coordinator.start()
  const nodes = new Map<string, RunNode>()
  const all: RunNode[] = []
  let closed = false
  const cluster: TrainCluster = {
    coordinator,
    nodes,
    async add (id, spec = {}) {
      const endpoint = await transport.open({ id, job: 'train-test' })
      const model = tinyModel()
      const optimizer = optimizerFor()
      const trainer = createTrainer({
        model, optimizer, data, loss: mnistLoss, coordinatorAddress: 'coordinator', seed: TRAIN_JOB.seed,
        worker: { heartbeatIntervalMs: 20, suspectAfterMs: 300, requestTimeoutMs: 1000, healChunkBytes: 256 },
        ...spec
      }, { endpoint })
      const node: RunNode = { id, endpoint, trainer, model, optimizer, run: trainer.run() }
      // Surface failures at the assertion that awaits them, not as unhandled rejections.
      node.run.catch(() => undefined)
      nodes.set(id, node)
      all.push(node)
      return node
    },
    async crash (id) {
      const n = nodes.get(id)
      if (n === undefined) return
      nodes.delete(id)
      await n.endpoint.close()
      await n.trainer.stop()
    },
    async state (id) {
      const n = all.find((x) => x.id === id)
      if (n === undefined) throw new Error(`no node ${id}`)
      return await extractState(n.model, n.optimizer)
    },
    async close () {
      if (closed) return
      closed = true
      for (const n of all) {
        await n.trainer.stop()
        await n.endpoint.close()
        n.model.dispose()
        n.optimizer.dispose()
      }
      await coordinator.stop()
      await coordinatorEndpoint.close()
    }
  }
  return cluster
}

export function bitEqual (a: StateDict, b: StateDict): boolean {
  return stateDictsBitEqual(a, b)
}
