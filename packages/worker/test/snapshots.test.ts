import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { createEpochFence, createStateDict, ELASTIC_FENCE_EXEMPT, stateDictsBitEqual, type Endpoint } from '@phalanx/core'
import { createHolderClient, createSnapshotter, pinStateDict, runHolder, type Snapshotter } from '@phalanx/checkpoint'
import { createCoordinator } from '@phalanx/coordinator'
import { createSgdTrainer, trainLoop, type SgdTrainer, type StepLike } from '@phalanx/testing/cluster'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { createWorker, type Worker } from '../src/index.js'
import { JOB, order, problem } from './helpers.js'

describe('local snapshots (snapshot holder)', () => {
  const cleanups: Array<() => Promise<void>> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  it('a worker restarted after a crash restores from the holder instead of healing, and ends bit-identical', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'phalanx-holder-'))
    cleanups.push(async () => { rmSync(dir, { recursive: true, force: true }) })
    const transport = memoryTransport({ network: createMemoryNetwork() })
    const holder = await runHolder({ job: 'test', listen: 'holder', transport, dir })
    cleanups.push(async () => { await holder.close() })
    const fence = createEpochFence({ exempt: ELASTIC_FENCE_EXEMPT })
    const ce = await transport.open({ id: 'coordinator', job: 'test', fence })
    const coordinator = createCoordinator({
      jobId: 'test', minWorkers: 2, maxWorkers: 2, deterministic: true, globalBatch: JOB.globalBatch, microBatch: JOB.microBatch, steps: JOB.steps,
      heartbeatIntervalMs: 20, suspectAfterMs: 200, stepTimeoutMs: 5000, rendezvousTimeoutMs: 10_000
    }, { endpoint: ce, fence })
    await coordinator.start()
    cleanups.push(async () => { await coordinator.stop(); await ce.close() })

    interface Node { worker: Worker, endpoint: Endpoint, trainer: SgdTrainer, snapshotter: Snapshotter, loop: Promise<unknown>, events: Array<{ event: string, step: number }>, accepted: Set<number> }
    const start = async (id: string, beforeReduce?: (s: StepLike, accepted: ReadonlySet<number>) => Promise<void> | void): Promise<Node> => {
      const endpoint = await transport.open({ id, job: 'test' })
      const trainer = createSgdTrainer({ size: problem.size })
      const client = createHolderClient({ owner: id, address: holder.endpoint.address }, { endpoint })
      const snapshotter = createSnapshotter({ l2Every: 0, checksumWorker: false }, { holder: client })
      const accepted = new Set<number>()
      const worker = createWorker({ size: problem.size, coordinatorAddress: 'coordinator', heartbeatIntervalMs: 20, suspectAfterMs: 200, requestTimeoutMs: 1000 }, {
        endpoint,
        state: { get: () => trainer.state(), set: (s) => { trainer.load(s) } },
        snapshots: {
          capture: (meta) => { if (snapshotter.capture(pinStateDict(createStateDict(trainer.state().tensors, meta))).accepted) accepted.add(meta.step) },
          restore: async (step) => {
            const held = await client.latest()
            return held?.step === step ? (await client.restore()).state : undefined
          }
        }
      })
      const events: Node['events'] = []
      worker.on('heal', (e) => { events.push({ event: 'heal', step: e.step }) })
      worker.on('restore', (e) => { events.push({ event: 'restore', step: e.step }) })
      await worker.start()
      const loop = trainLoop(worker.steps(), problem, trainer, { indexOf: order.indexOf, ...(beforeReduce === undefined ? {} : { beforeReduce: async (s) => { await beforeReduce(s, accepted) } }) })
      // A crashed worker's loop rejects with ClosedError; the test awaits the others' loops.
      loop.catch(() => undefined)
      const node = { worker, endpoint, trainer, snapshotter, loop, events, accepted }
      cleanups.push(async () => { await worker.stop(); await snapshotter.stop(); await endpoint.close(); await loop.catch(() => undefined) })
      return node
    }

    const w1 = await start('w1')
    // w2 dies at a step boundary from step 10 on where its capture was accepted (a capture is
    // skipped while the previous drain runs), before handing over its gradients: the job cannot
    // commit that step without it, so the quorum it rejoins runs exactly the step its snapshot holds.
    let crashed!: (step: number) => void
    const crash = new Promise<number>((resolve) => { crashed = resolve })
    let release!: () => void
    const released = new Promise<void>((resolve) => { release = resolve })
    cleanups.push(async () => { release() })
    let dead = false
    const w2 = await start('w2', async (s, accepted) => {
      if (dead || (s.step >= 10 && accepted.has(s.step))) { dead = true; crashed(s.step); await released }
    })
    const at = await crash
    await w2.snapshotter.flush()
    expect(w2.snapshotter.stats().lastStep).toBe(at)
    await w2.endpoint.close()
    await w2.worker.stop()
    await w2.snapshotter.stop()
    release()

    const again = await start('w2')
    await Promise.all([w1.loop, again.loop])
    expect(again.events).toEqual([{ event: 'restore', step: at }])
    const reference = createSgdTrainer({ size: problem.size })
    const { referenceRun } = await import('@phalanx/testing/cluster')
    referenceRun(problem, reference, { steps: JOB.steps, globalBatch: JOB.globalBatch, microBatch: JOB.microBatch, indexOf: order.indexOf })
    expect(stateDictsBitEqual(again.trainer.state(), reference.state())).toBe(true)
    expect(stateDictsBitEqual(w1.trainer.state(), reference.state())).toBe(true)
  })
})
