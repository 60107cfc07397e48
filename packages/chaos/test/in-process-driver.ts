/**
 * A {@link JobDriver} that runs the whole job in this process: a coordinator and N workers over the
 * memory transport wrapped by `chaosTransport`, training the linear problem of
 * `@phalanx/testing/cluster`. Process faults map onto what one process can do to a component:
 * SIGKILL closes the endpoint and stops the worker (the coordinator sees the disconnect), SIGSTOP
 * freezes its traffic and its training loop, an event-loop stall is a freeze of the given length.
 */
import {
  ClosedError, InvalidParametersError, bytesOf, raceSignal, crc32c, createEpochFence, ELASTIC_FENCE_EXEMPT,
  type AbortOptions, type Endpoint, type EndpointEvents
} from '@phalanx/core'
import { createAggregator } from '@phalanx/aggregate'
import { createCoordinator, createMemoryStateStore, type Coordinator, type CoordinatorInit } from '@phalanx/coordinator'
import { createLinearProblem, createSgdTrainer, type SgdTrainer } from '@phalanx/testing/cluster'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { createSampleOrder, createWorker, type TrainingStep, type Worker } from '@phalanx/worker'
import {
  chaosTransport, createChaosAgent, createChaosLog, type ChaosAgent, type ChaosLog, type ChaosTransport, type DriverRecovery,
  type FaultKind, type InjectionHandle, type InProcessFault, type JobDriver, type JobOutcome, type JobSpec, type ProcessInfo,
  type ProcessSignal
} from '../src/index.js'

const GLOBAL_BATCH = 32
const MICRO_BATCH = 4

interface WorkerNode {
  id: string
  endpoint: Endpoint
  worker: Worker
  trainer: SgdTrainer
  agent: ChaosAgent
  loop: Promise<number>
  settled: boolean
  alive: boolean
  /** Resolves when a SIGSTOP/stall is lifted. */
  gate: Promise<void> | undefined
  thaw: (() => void) | undefined
}

/** Options of {@link createInProcessDriver}. */
export interface InProcessDriverInit {
  /** Seed of network fault decisions. @default 1 */
  seed?: number
  /** Shared log. */
  log?: ChaosLog
  /** Coordinator overrides (timeouts). */
  coordinator?: Partial<CoordinatorInit>
}

const SUPPORTED: ReadonlySet<FaultKind> = new Set<FaultKind>(['kill', 'hang', 'join', 'crash', 'stall', 'network', 'partition', 'byzantine'])

export function createInProcessDriver (init: InProcessDriverInit = {}): JobDriver & { readonly transport: ChaosTransport | undefined } {
  const log = init.log ?? createChaosLog()
  const problem = createLinearProblem({ samples: 256, features: 12, seed: 3 })
  let job: JobSpec | undefined
  let transport: ChaosTransport | undefined
  let coordinator: Coordinator | undefined
  let coordinatorEndpoint: Endpoint | undefined
  let coordinatorAlive = false
  const store = createMemoryStateStore()
  const nodes = new Map<string, WorkerNode>()
  const commitListeners = new Set<(e: { step: number, epoch: number, loss?: number }) => void>()
  const pastRecoveries: DriverRecovery[] = []
  const unsubscribes: Array<() => void> = []
  let nextWorker = 1
  let order = createSampleOrder({ seed: 0, size: problem.samples })
  let stopped = false
  let aggregatorSpec: Record<string, unknown> | undefined
  const replaced = new Set<() => void>()
  const retired = new WeakSet<Coordinator>()

  const coordinatorInit = (spec: JobSpec): CoordinatorInit => ({
    jobId: 'chaos', minWorkers: spec.minWorkers, maxWorkers: Math.min(spec.maxWorkers, GLOBAL_BATCH / MICRO_BATCH), deterministic: spec.deterministic,
    globalBatch: GLOBAL_BATCH, microBatch: MICRO_BATCH, steps: spec.steps,
    // Recovery disabled: nothing is ever suspected (the control scenario that must fail).
    ...(spec.recovery
      ? { heartbeatIntervalMs: 20, suspectAfterMs: 200, stepTimeoutMs: 5000, hangFloorMs: 400 }
      : { heartbeatIntervalMs: 20, suspectAfterMs: 3_600_000, stepTimeoutMs: 7_200_000, hangFloorMs: 7_200_000 }),
    rendezvousTimeoutMs: 10_000,
    ...init.coordinator
  })

  const openCoordinator = async (spec: JobSpec): Promise<void> => {
    const net = transport as ChaosTransport
    const fence = createEpochFence({ exempt: ELASTIC_FENCE_EXEMPT })
    const raw = await net.open({ id: 'coordinator', job: 'chaos', fence })
    // Without recovery the coordinator must not learn of disconnects either.
    const endpoint: Endpoint = spec.recovery
      ? raw
      : Object.assign(Object.create(raw) as Endpoint, {
        on: <E extends keyof EndpointEvents>(event: E, listener: EndpointEvents[E]) => event === 'peer:disconnect' ? () => {} : raw.on(event, listener)
      })
    const c = createCoordinator(coordinatorInit(spec), { endpoint, fence, store })
    unsubscribes.push(c.on('commit', (e) => { if (e.recomputed !== true) for (const l of commitListeners) l(e) }))
    await c.start()
    coordinator = c
    coordinatorEndpoint = raw
    coordinatorAlive = true
    for (const r of [...replaced]) r()
  }

  const addWorker = async (id: string): Promise<WorkerNode> => {
    const net = transport as ChaosTransport
    const endpoint = await net.open({ id, job: 'chaos' })
    const trainer = createSgdTrainer({ size: problem.size })
    const worker = createWorker({ size: problem.size, coordinatorAddress: 'coordinator', heartbeatIntervalMs: 20, suspectAfterMs: 200, requestTimeoutMs: 500, healChunkBytes: 16 },
      {
        endpoint,
        state: { get: () => trainer.state(), set: (s) => { trainer.load(s) } },
        ...(aggregatorSpec === undefined ? {} : { aggregator: createAggregator(aggregatorSpec) })
      })
    const agent = createChaosAgent({ id }, {
      log,
      transport: net,
      crash: () => { void kill(id) },
      stall: (ms) => {
        freeze(node)
        const t = setTimeout(() => { node.thaw?.() }, ms)
        stopTimers.add(() => { clearTimeout(t) })
      }
    })
    const node: WorkerNode = { id, endpoint, worker, trainer, agent, loop: Promise.resolve(0), settled: false, alive: true, gate: undefined, thaw: undefined }
    nodes.set(id, node)
    await worker.start()
    node.loop = runLoop(node).finally(() => { node.settled = true })
    return node
  }

  const stopTimers = new Set<() => void>()

  const freeze = (node: WorkerNode): void => {
    if (node.thaw !== undefined) return
    const release = (transport as ChaosTransport).freeze(node.id)
    let open!: () => void
    node.gate = new Promise<void>((resolve) => { open = resolve })
    node.thaw = () => { node.thaw = undefined; node.gate = undefined; release(); open() }
  }

  const runLoop = async (node: WorkerNode): Promise<number> => {
    let committed = 0
    for await (const step of node.worker.steps()) {
      // A stopped worker's steps() may still yield the step it had planned (reported to the worker
      // package); a killed process would not train it.
      if (!node.alive) break
      if (node.gate !== undefined) await node.gate
      const s = step as TrainingStep
      let grads = s.microBatches.map((mb) => {
        const idx: number[] = []
        for (let p = mb.start; p < mb.end; p++) idx.push(order.indexOf(p))
        return problem.gradient(node.trainer.params, idx)
      })
      grads = node.agent.gradientHook(grads, { step: s.step, worker: node.id })
      let agg: Float32Array
      try {
        agg = await s.reduce(grads)
      } catch (err) {
        if ((err as Error).name === 'StepAbortedError') continue
        throw err
      }
      if (node.gate !== undefined) await node.gate
      if (await s.commit()) { node.trainer.apply(agg); committed++ }
    }
    return committed
  }

  const kill = async (id: string): Promise<void> => {
    if (id === 'coordinator') {
      if (!coordinatorAlive) return
      coordinatorAlive = false
      const c = coordinator as Coordinator
      pastRecoveries.push(...c.recoveries().map(toRecovery))
      retired.add(c)
      await coordinatorEndpoint?.close()
      await c.stop()
      return
    }
    const n = nodes.get(id)
    if (n === undefined || !n.alive) return
    n.alive = false
    n.thaw?.()
    await n.endpoint.close()
    await n.worker.stop()
    await n.loop.catch(() => undefined)
  }

  const toRecovery = (r: ReturnType<Coordinator['recoveries']>[number]): DriverRecovery => ({
    reason: r.reason, peers: r.peers, step: r.step, detectMs: r.detectMs, quorumMs: r.quorumMs, firstCommitMs: r.firstCommitMs, totalMs: r.totalMs,
    ...(r.healMs === undefined ? {} : { healMs: r.healMs })
  })

  const driver: JobDriver & { readonly transport: ChaosTransport | undefined } = {
    name: 'in-process',
    log,
    get transport () { return transport },
    supports: (kind) => SUPPORTED.has(kind),

    async start (spec) {
      if (job !== undefined) throw new InvalidParametersError('This driver runs one job; create another for the next')
      job = spec
      const agg = spec.config.aggregator
      aggregatorSpec = typeof agg === 'object' && agg !== null ? agg as Record<string, unknown> : undefined
      order = createSampleOrder({ seed: spec.seed, size: problem.samples })
      transport = chaosTransport(memoryTransport({ network: createMemoryNetwork() }), { seed: init.seed ?? 1 }, { log })
      await openCoordinator(spec)
      for (let i = 0; i < spec.workers; i++) await addWorker(`worker-${nextWorker++}`)
    },

    processes (): ProcessInfo[] {
      const members = coordinator?.status().members ?? []
      const out: ProcessInfo[] = [{ id: 'coordinator', role: 'coordinator', alive: coordinatorAlive }]
      for (const n of nodes.values()) {
        const rank = members.find((m) => m.id === n.id)?.rank
        out.push({ id: n.id, role: 'worker', alive: n.alive, ...(rank === undefined ? {} : { rank }) })
      }
      return out
    },

    async signal (id: string, signal: ProcessSignal) {
      if (signal === 'SIGKILL' || signal === 'SIGTERM') { await kill(id); return }
      const n = nodes.get(id)
      if (n === undefined) throw new InvalidParametersError(`No worker ${id} (this driver stops workers only)`)
      if (signal === 'SIGSTOP') freeze(n)
      else n.thaw?.()
    },

    async inject (id: string, fault: InProcessFault): Promise<InjectionHandle> {
      if (fault.kind === 'partition' || (id === '*' && fault.kind === 'network')) {
        return createChaosAgent({ id: 'job' }, { log, transport: transport as ChaosTransport }).apply(fault)
      }
      const n = nodes.get(id)
      if (n === undefined) throw new InvalidParametersError(`No worker ${id}`)
      return n.agent.apply(fault)
    },

    async spawn (options = {}) {
      if (options.id === 'coordinator') {
        if (!coordinatorAlive) await openCoordinator(job as JobSpec)
        return { id: 'coordinator', role: 'coordinator', alive: true }
      }
      const id = options.id !== undefined && nodes.get(options.id)?.alive !== true ? `${options.id}${nodes.has(options.id) ? `-r${nextWorker++}` : ''}` : `worker-${nextWorker++}`
      await addWorker(id)
      return { id, role: 'worker', alive: true }
    },

    status () {
      const s = coordinator?.status()
      return {
        phase: stopped ? 'stopped' : s === undefined ? 'starting' : s.phase === 'done' ? 'done' : s.phase === 'failed' ? 'failed' : 'running',
        committed: s?.committed ?? 0,
        epoch: s?.epoch ?? 0,
        members: s?.members.map((m) => m.id) ?? [],
        ...(s?.loss === undefined ? {} : { loss: s.loss })
      }
    },

    onCommit (listener) {
      commitListeners.add(listener)
      return () => { commitListeners.delete(listener) }
    },

    recoveries: () => [...pastRecoveries, ...(coordinator !== undefined && !retired.has(coordinator) ? coordinator.recoveries().map(toRecovery) : [])],

    async finished (options: AbortOptions = {}): Promise<JobOutcome> {
      for (;;) {
        const c = coordinator
        if (c === undefined) throw new ClosedError('Job not started')
        try {
          const r = await c.finished(options)
          // Members of the last quorum trained the last step; a worker evicted late may still be waiting for a seat.
          const members = new Set(c.status().members.map((m) => m.id))
          const survivors = [...nodes.values()].filter((n) => n.alive && members.has(n.id))
          await Promise.all(survivors.map(async (n) => await n.loop))
          const done = survivors.filter((n) => n.worker.status().committed === r.committed)
          const first = done[0]
          return {
            committed: r.committed,
            epoch: r.epoch,
            checksums: done.map((n) => crc32c(bytesOf(n.trainer.params))),
            ...(first === undefined ? {} : { loss: problem.loss(first.trainer.params) })
          }
        } catch (err) {
          // The coordinator was killed: wait on its successor (restarted by the scenario).
          if ((err as Error).name !== ClosedError.name || stopped) throw err
          if (coordinator === c || !coordinatorAlive) {
            let done: (() => void) | undefined
            try {
              await raceSignal(new Promise<void>((resolve) => { done = resolve; replaced.add(resolve) }), options.signal)
            } finally {
              if (done !== undefined) replaced.delete(done)
            }
          }
        }
      }
    },

    async stop () {
      if (stopped) return
      stopped = true
      for (const f of stopTimers) f()
      stopTimers.clear()
      transport?.clear()
      for (const n of nodes.values()) {
        n.alive = false
        n.thaw?.()
        await n.worker.stop()
        await n.endpoint.close()
        await n.loop.catch(() => undefined)
      }
      for (const off of unsubscribes) off()
      for (const r of [...replaced]) r()
      if (coordinator !== undefined) await coordinator.stop()
      await coordinatorEndpoint?.close()
      coordinatorAlive = false
      await store.close()
    },

    async leaks () {
      const out: string[] = []
      for (const n of nodes.values()) if (!n.settled) out.push(n.id)
      if (coordinator !== undefined && coordinator.status().phase !== 'stopped' && coordinator.status().phase !== 'done') out.push('coordinator')
      return out
    }
  }
  return driver
}
