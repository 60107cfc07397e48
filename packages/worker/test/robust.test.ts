import { afterEach, describe, expect, it } from 'vitest'
import { createEpochFence, ELASTIC_FENCE_EXEMPT, type Aggregator, type Endpoint } from '@phalanx/core'
import { createAggregator } from '@phalanx/aggregate'
import { createCoordinator, type Coordinator } from '@phalanx/coordinator'
import { createSgdTrainer, trainLoop, type StepLike } from '@phalanx/testing/cluster'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { createWorker, type TrainingStep, type Worker } from '../src/index.js'
import { order, problem } from './helpers.js'

// Five workers, one micro-batch each (deterministic mode: the rule's inputs are micro-batches).
const JOB = { globalBatch: 40, microBatch: 8, steps: 30 }
const IDS = ['w1', 'w2', 'w3', 'w4', 'w5']

interface Run { loss: number, workers: Worker[], metrics: string }

/** Sign-flips (and scales by 5) every gradient a worker hands over: a Byzantine worker that would make the mean ascend. */
function flipped (steps: AsyncIterable<TrainingStep>): AsyncIterable<StepLike> {
  return {
    async * [Symbol.asyncIterator] () {
      for await (const s of steps) {
        yield {
          step: s.step, epoch: s.epoch, microBatches: s.microBatches, signal: s.signal,
          reduce: async (grads) => await s.reduce(grads.map((g) => g.map((v) => -5 * v))),
          commit: async () => await s.commit()
        }
      }
    }
  }
}

describe('robust aggregation from the worker', () => {
  const cleanups: Array<() => Promise<void>> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  const run = async (aggregator: () => Aggregator, byzantine: string | undefined): Promise<Run> => {
    const transport = memoryTransport({ network: createMemoryNetwork() })
    const endpoints: Endpoint[] = []
    const fence = createEpochFence({ exempt: ELASTIC_FENCE_EXEMPT })
    const ce = await transport.open({ id: 'coordinator', job: 'robust', fence })
    endpoints.push(ce)
    const coordinator: Coordinator = createCoordinator({
      jobId: 'robust', minWorkers: 5, maxWorkers: 5, deterministic: true, ...JOB,
      heartbeatIntervalMs: 20, suspectAfterMs: 500, stepTimeoutMs: 5000, rendezvousTimeoutMs: 10_000
    }, { endpoint: ce, fence })
    const workers: Worker[] = []
    cleanups.push(async () => {
      for (const w of workers) await w.stop()
      await coordinator.stop()
      for (const e of endpoints) await e.close()
    })
    await coordinator.start()
    const trainers = IDS.map(() => createSgdTrainer({ size: problem.size }))
    const loops = await Promise.all(IDS.map(async (id, k) => {
      const endpoint = await transport.open({ id, job: 'robust' })
      endpoints.push(endpoint)
      const trainer = trainers[k]!
      const worker = createWorker({ size: problem.size, coordinatorAddress: 'coordinator', heartbeatIntervalMs: 20, suspectAfterMs: 500 },
        { endpoint, aggregator: aggregator(), state: { get: () => trainer.state(), set: (s) => { trainer.load(s) } } })
      workers.push(worker)
      await worker.start()
      const steps = id === byzantine ? flipped(worker.steps()) : worker.steps()
      return await trainLoop(steps, problem, trainer, { indexOf: order.indexOf })
    }))
    for (const l of loops) expect(l.committed).toBe(JOB.steps)
    return { loss: problem.loss(trainers[0]!.params), workers, metrics: await coordinator.metricsText() }
  }

  it('MultiKrum (f = 1) rejects a sign-flipping worker every step, counts it, and trains as well as the clean run', async () => {
    const clean = await run(() => createAggregator({ name: 'Average' }), undefined)
    const attacked = await run(() => createAggregator({ name: 'MultiKrum', f: 1 }), 'w5')
    const unprotected = await run(() => createAggregator({ name: 'Average' }), 'w5')
    const counts: Array<Record<string, number>> = []
    for (const w of attacked.workers) {
      const { rejected, downWeighted } = w.status().robust
      expect(rejected).toEqual({ w5: JOB.steps })
      expect(downWeighted).toEqual({})
      counts.push(rejected)
    }
    // Every owner derives the same weights from the same Gram matrix, so all count alike.
    for (const c of counts) expect(c).toEqual(counts[0])
    expect(clean.workers[0]!.status().robust.rejected).toEqual({})
    // The coordinator counts the rejection once per committed step (from the votes).
    expect(attacked.metrics).toContain(`phalanx_coordinator_robust_rejected_total{worker="w5"} ${JOB.steps}`)
    expect(clean.metrics).not.toContain('phalanx_coordinator_robust_rejected_total{')
    // Within 20% of the clean run's loss, while the mean with the attacker is far off.
    expect(Math.abs(attacked.loss - clean.loss) / clean.loss).toBeLessThan(0.2)
    expect(unprotected.loss).toBeGreaterThan(10 * clean.loss)
  })
})
