/**
 * Chaos basics: a network decorator with seeded faults, then a scenario run against a small
 * `JobDriver` that trains a linear regression in this process (coordinator and workers over the
 * memory transport). The scenario SIGKILLs a random worker at step 6 and delays 5% of the traffic;
 * the report checks that every step was committed once and that the run recovered.
 * Run: `npx tsx examples/chaos-basic.ts`.
 */
import { bytesOf, crc32c, createStateDict, type Endpoint } from '@phalanx/core'
import { createCoordinator, type Coordinator } from '@phalanx/coordinator'
import {
  chaosTransport, createChaosAgent, createChaosLog, formatReport, parseScenarioText, runScenario,
  type ChaosAgent, type JobDriver, type JobSpec, type ProcessInfo
} from '@phalanx/chaos'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { createSampleOrder, createWorker, type Worker } from '@phalanx/worker'

// 1. A decorator on its own: the same seed drops the same messages.
const net = chaosTransport(memoryTransport({ network: createMemoryNetwork() }), { seed: 42, rules: [{ drop: 0.2 }] })
const a = await net.open({ id: 'a', job: 'demo' })
const b = await net.open({ id: 'b', job: 'demo' })
a.connect('b', b.address)
let received = 0
b.handle('ping', () => { received++ })
for (let i = 0; i < 50; i++) await a.send('b', { type: 'ping' })
await a.close()
await b.close()
process.stderr.write(`decorator: 50 sent, ${50 - (net.log.counts()['network:drop'] ?? 0)} delivered (${received} handled so far), log ${JSON.stringify(net.log.counts())}\n`)

// 2. A scenario against an in-process job driver.
const FEATURES = 8
const SAMPLES = 256
let s = 1
const rand = (): number => { s = (s * 16807) % 2147483647; return s / 2147483647 - 0.5 }
const truth = Array.from({ length: FEATURES }, rand)
const xs = Array.from({ length: SAMPLES }, () => Array.from({ length: FEATURES }, rand))
const ys = xs.map((x) => x.reduce((acc, v, j) => acc + v * (truth[j] as number), 0))
const loss = (w: Float32Array): number => xs.reduce((acc, x, i) => acc + (x.reduce((p, v, j) => p + v * (w[j] as number), 0) - (ys[i] as number)) ** 2, 0) / SAMPLES

function createDriver (): JobDriver {
  const log = createChaosLog()
  const transport = chaosTransport(memoryTransport({ network: createMemoryNetwork() }), { seed: 7 }, { log })
  const workers = new Map<string, { endpoint: Endpoint, worker: Worker, w: Float32Array, agent: ChaosAgent, loop: Promise<void>, alive: boolean }>()
  let coordinator: Coordinator | undefined
  let coordinatorEndpoint: Endpoint | undefined
  let order = createSampleOrder({ seed: 0, size: SAMPLES })
  const commits = new Set<(e: { step: number, epoch: number }) => void>()
  let n = 0
  const kill = async (id: string): Promise<void> => {
    const node = workers.get(id)
    if (node === undefined || !node.alive) return
    node.alive = false
    await node.endpoint.close()
    await node.worker.stop()
    await node.loop
  }
  const spawn = async (): Promise<ProcessInfo> => {
    const id = `worker-${++n}`
    const endpoint = await transport.open({ id, job: 'demo' })
    const w = new Float32Array(FEATURES)
    const worker = createWorker({ size: FEATURES, coordinatorAddress: 'coordinator', heartbeatIntervalMs: 20, suspectAfterMs: 200 }, {
      endpoint,
      state: { get: () => createStateDict([{ name: 'w', shape: [FEATURES], dtype: 'float32', data: w }]), set: (st) => { w.set(st.tensors[0]?.data ?? []) } }
    })
    const agent = createChaosAgent({ id }, { log, transport, crash: () => { void kill(id) } })
    await worker.start()
    const loop = (async () => {
      for await (const step of worker.steps()) {
        if (workers.get(id)?.alive !== true) break
        const grads = step.microBatches.map((mb) => {
          const g = new Float32Array(FEATURES)
          for (let p = mb.start; p < mb.end; p++) {
            const x = xs[order.indexOf(p)] as number[]
            const e = x.reduce((acc, v, j) => acc + v * (w[j] as number), 0) - (ys[order.indexOf(p)] as number)
            for (let j = 0; j < FEATURES; j++) g[j] = (g[j] as number) + 2 * e * (x[j] as number) / (mb.end - mb.start)
          }
          return g
        })
        try {
          const agg = await step.reduce(agent.gradientHook(grads, { step: step.step, worker: id }))
          if (await step.commit()) for (let j = 0; j < FEATURES; j++) w[j] = (w[j] as number) - 0.1 * (agg[j] as number)
        } catch (err) {
          if ((err as Error).name !== 'StepAbortedError') throw err
        }
      }
    })().catch(() => {})
    workers.set(id, { endpoint, worker, w, agent, loop, alive: true })
    return { id, role: 'worker', alive: true }
  }
  return {
    name: 'example-in-process',
    log,
    supports: (kind) => ['kill', 'crash', 'network', 'partition', 'byzantine', 'join'].includes(kind),
    async start (job: JobSpec) {
      order = createSampleOrder({ seed: job.seed, size: SAMPLES })
      coordinatorEndpoint = await transport.open({ id: 'coordinator', job: 'demo' })
      coordinator = createCoordinator({
        jobId: 'demo', minWorkers: job.minWorkers, maxWorkers: job.maxWorkers, deterministic: job.deterministic, globalBatch: 32, microBatch: 4, steps: job.steps,
        heartbeatIntervalMs: 20, suspectAfterMs: 200, stepTimeoutMs: 5000, rendezvousTimeoutMs: 10_000, hangFloorMs: 400
      }, { endpoint: coordinatorEndpoint })
      coordinator.on('commit', (e) => { for (const l of commits) l(e) })
      await coordinator.start()
      for (let i = 0; i < job.workers; i++) await spawn()
    },
    processes: () => [{ id: 'coordinator', role: 'coordinator', alive: true }, ...[...workers].map(([id, v]) => ({ id, role: 'worker' as const, alive: v.alive }))],
    async signal (id) { await kill(id) },
    async inject (id, fault) { const node = workers.get(id); if (node === undefined) throw new Error(`no ${id}`); return node.agent.apply(fault) },
    spawn,
    status: () => ({ phase: 'running', committed: coordinator?.status().committed ?? 0, epoch: coordinator?.status().epoch ?? 0, members: coordinator?.status().members.map((m) => m.id) ?? [] }),
    onCommit: (l) => { commits.add(l); return () => { commits.delete(l) } },
    recoveries: () => coordinator?.recoveries() ?? [],
    async finished (options) {
      const r = await (coordinator as Coordinator).finished(options)
      const members = new Set((coordinator as Coordinator).status().members.map((m) => m.id))
      const done = [...workers].filter(([id, v]) => v.alive && members.has(id)).map(([, v]) => v)
      await Promise.all(done.map(async (v) => await v.loop))
      return { ...r, checksums: done.map((v) => crc32c(bytesOf(v.w))), ...(done[0] === undefined ? {} : { loss: loss(done[0].w) }) }
    },
    async stop () {
      for (const v of workers.values()) { v.alive = false; await v.worker.stop(); await v.endpoint.close(); await v.loop }
      await coordinator?.stop()
      await coordinatorEndpoint?.close()
    },
    leaks: async () => []
  }
}

const scenario = parseScenarioText(`
name: example-kill-and-delay
seed: 5
job: { workers: 3, steps: 30, minWorkers: 2 }
faults:
  - kind: kill
    at: { step: 6 }
  - kind: network
    at: { step: 2 }
    target: all-workers
    delayMs: 1
    jitterMs: 2
    untilStep: 20
invariants:
  minRecoveries: 1
  mttr: { p99Ms: 2000 }
  timeoutMs: 30000
`)
const report = await runScenario(scenario, { driver: createDriver() })
process.stdout.write(`${formatReport(report)}\n`)
if (report.verdict !== 'pass') process.exitCode = 1
