/**
 * The end of a job and the loss of every state holder (chaos soak findings):
 * - a worker that joins after the job is done is told so by its heartbeat reply and ends, instead
 *   of re-joining as a spare forever;
 * - when every worker holding the committed state dies, restarted workers that restore their newest
 *   snapshot before joining resume the job with no committed step lost (bit-identical);
 * - without such snapshots the coordinator fails with a `QuorumLostError` naming the lost step.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { createStateDict, createEpochFence, ELASTIC_FENCE_EXEMPT, type Endpoint, type StateDict } from '@phalanx/core'
import { createCoordinator, type Coordinator } from '@phalanx/coordinator'
import { createSgdTrainer, referenceRun, trainLoop, type SgdTrainer, type StepLike, type TrainLoopResult } from '@phalanx/testing/cluster'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { createWorker, type SnapshotHooks, type Worker } from '../src/index.js'
import { JOB, createTestCluster, order, problem, type TestCluster } from './helpers.js'

const copy = (s: StateDict): StateDict => createStateDict(s.tensors.map((t) => ({ ...t, data: Float32Array.from(t.data as Float32Array) })), { ...s.meta })

/** Every given parameter vector equals the fault-free reference run's, bit for bit. */
function expectReference (...params: Float32Array[]): void {
  const ref = createSgdTrainer({ size: problem.size })
  referenceRun(problem, ref, { steps: JOB.steps, globalBatch: JOB.globalBatch, microBatch: JOB.microBatch, indexOf: order.indexOf })
  for (const p of params) expect(Array.from(p)).toEqual(Array.from(ref.params))
}

describe('a worker joining after the job is done', () => {
  let cluster: TestCluster | undefined
  afterEach(async () => { await cluster?.close(); cluster = undefined })

  it('learns from its heartbeat reply that the job is done and ends', async () => {
    cluster = await createTestCluster()
    const a = await cluster.addWorker('w1')
    const b = await cluster.addWorker('w2')
    await cluster.coordinator.finished()
    await Promise.all([a.loop, b.loop])
    const late = await cluster.addWorker('w3')
    // The coordinator answers its join `spare` and does not know it afterwards; the heartbeat
    // reply's `done` ends its step iterator (before the fix it re-joined as a spare forever).
    const result = await late.loop
    expect(result.committed).toBe(0)
    expect(late.worker.status().done).toBe(true)
  })
})

describe('every holder of the committed state lost', () => {
  const cleanups: Array<() => Promise<void>> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  interface Node { worker: Worker, endpoint: Endpoint, trainer: SgdTrainer, loop: Promise<TrainLoopResult>, restored: number[] }

  const setup = async (rendezvousTimeoutMs: number): Promise<{ coordinator: Coordinator, start: (id: string, snapshots: SnapshotHooks | undefined, beforeReduce?: (s: StepLike) => Promise<void>) => Promise<Node> }> => {
    const transport = memoryTransport({ network: createMemoryNetwork() })
    const fence = createEpochFence({ exempt: ELASTIC_FENCE_EXEMPT })
    const ce = await transport.open({ id: 'coordinator', job: 'test', fence })
    const coordinator = createCoordinator({
      jobId: 'test', minWorkers: 2, maxWorkers: 2, deterministic: true, globalBatch: JOB.globalBatch, microBatch: JOB.microBatch, steps: JOB.steps,
      heartbeatIntervalMs: 20, suspectAfterMs: 200, stepTimeoutMs: 5000, rendezvousTimeoutMs, hangFloorMs: 400
    }, { endpoint: ce, fence })
    await coordinator.start()
    cleanups.push(async () => { await coordinator.stop(); await ce.close() })
    const start = async (id: string, snapshots: SnapshotHooks | undefined, beforeReduce?: (s: StepLike) => Promise<void>): Promise<Node> => {
      const endpoint = await transport.open({ id, job: 'test' })
      const trainer = createSgdTrainer({ size: problem.size })
      const worker = createWorker({ size: problem.size, coordinatorAddress: 'coordinator', heartbeatIntervalMs: 20, suspectAfterMs: 200, requestTimeoutMs: 500 }, {
        endpoint,
        state: { get: () => trainer.state(), set: (s) => { trainer.load(s) } },
        ...(snapshots === undefined ? {} : { snapshots })
      })
      const restored: number[] = []
      worker.on('restore', (e) => { restored.push(e.step) })
      await worker.start()
      const loop = trainLoop(worker.steps(), problem, trainer, { indexOf: order.indexOf, ...(beforeReduce === undefined ? {} : { beforeReduce }) })
      loop.catch(() => undefined)
      cleanups.push(async () => { await worker.stop(); await endpoint.close(); await loop.catch(() => undefined) })
      return { worker, endpoint, trainer, loop, restored }
    }
    return { coordinator, start }
  }

  /** Runs two workers to step 10, where both die before handing over their gradients. */
  const loseEveryone = async (start: (id: string, s: SnapshotHooks | undefined, b?: (s: StepLike) => Promise<void>) => Promise<Node>, held: Map<string, StateDict[]>): Promise<void> => {
    const hooks = (id: string): SnapshotHooks => ({
      capture: (meta) => {
        const list = held.get(id) ?? []
        list.push(copy(createStateDict(nodes.get(id)?.trainer.state().tensors ?? [], meta)))
        held.set(id, list)
      },
      restore: async () => undefined
    })
    const nodes = new Map<string, Node>()
    let arrived = 0
    let allThere!: () => void
    const both = new Promise<void>((resolve) => { allThere = resolve })
    let release!: () => void
    const released = new Promise<void>((resolve) => { release = resolve })
    cleanups.push(async () => { release() })
    const block = async (s: StepLike): Promise<void> => {
      if (s.step < 10) return
      if (++arrived === 2) allThere()
      await released
    }
    for (const id of ['w1', 'w2']) nodes.set(id, await start(id, hooks(id), block))
    await both
    for (const n of nodes.values()) {
      await n.endpoint.close()
      await n.worker.stop()
    }
    // The dead workers' loops end (their steps fail on the stopped worker).
    release()
    for (const n of nodes.values()) await n.loop.catch(() => undefined)
  }

  it('restarted workers restore their newest snapshot before joining; the job resumes at the lost step, bit-identical', async () => {
    const { coordinator, start } = await setup(10_000)
    const held = new Map<string, StateDict[]>()
    await loseEveryone(start, held)
    expect(coordinator.status().committed).toBe(10)
    const latest = (id: string): SnapshotHooks => ({
      capture: () => {},
      restore: async () => undefined,
      latest: async () => held.get(id)?.at(-1)
    })
    const [r1, r2] = await Promise.all([start('w1', latest('w1')), start('w2', latest('w2'))])
    await coordinator.finished()
    await Promise.all([r1.loop, r2.loop])
    expect(r1.restored).toEqual([10])
    expect(r2.restored).toEqual([10])
    expectReference(r1.trainer.params, r2.trainer.params)
  })

  it('restored snapshots older than the lost step: the quorum recomputes the lost steps bit for bit (deterministic)', async () => {
    const { coordinator, start } = await setup(10_000)
    const held = new Map<string, StateDict[]>()
    await loseEveryone(start, held)
    const commits: Array<{ step: number, recomputed: boolean }> = []
    coordinator.on('commit', (e) => { commits.push({ step: e.step, recomputed: e.recomputed === true }) })
    // Each restores a snapshot 3 and 2 steps older than the committed step 10.
    const older = (id: string, back: number): SnapshotHooks => ({
      capture: () => {},
      restore: async () => undefined,
      latest: async () => held.get(id)?.find((st) => st.meta.step === 10 - back)
    })
    const [r1, r2] = await Promise.all([start('w1', older('w1', 3)), start('w2', older('w2', 2))])
    await coordinator.finished()
    await Promise.all([r1.loop, r2.loop])
    expect(r1.restored[0]).toBe(7)
    expect(r2.restored[0]).toBe(8)
    // Rewound to step 8 (the newest held): w1 healed to it, steps 8 and 9 were recomputed.
    expect(commits.filter((c) => c.recomputed).map((c) => c.step)).toEqual([8, 9])
    expect(commits.filter((c) => !c.recomputed).map((c) => c.step)[0]).toBe(10)
    expectReference(r1.trainer.params, r2.trainer.params)
  })

  it('without snapshots the coordinator fails with a QuorumLostError naming the lost committed step', async () => {
    const { coordinator, start } = await setup(600)
    await loseEveryone(start, new Map())
    await start('w1', undefined)
    await start('w2', undefined)
    await expect(coordinator.finished()).rejects.toMatchObject({
      name: 'QuorumLostError',
      message: expect.stringMatching(/^Committed state of step 10 lost: no member or waiting worker holds it \(workers hold: w1@0, w2@0\)/),
      details: { reason: 'state-lost', lostStep: 10 }
    })
  })
})
