/**
 * Elastic data-parallel training in one process: a coordinator and three workers over the memory
 * transport train a linear regression; one worker crashes mid-run and a fresh one joins and heals
 * from its peers. Run: `npx tsx examples/elastic-linear.ts`.
 */
import { createStateDict, type StateDict } from '@phalanx/core'
import { createCoordinator } from '@phalanx/coordinator'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { createSampleOrder, createWorker } from '@phalanx/worker'

const FEATURES = 8
const SAMPLES = 512
const job = { globalBatch: 64, microBatch: 8, steps: 60 }

// A synthetic dataset y = x·w + noise, the same in every worker.
let s = 1
const rand = (): number => { s = (s * 16807) % 2147483647; return s / 2147483647 - 0.5 }
const truth = Array.from({ length: FEATURES }, rand)
const xs = Array.from({ length: SAMPLES }, () => Array.from({ length: FEATURES }, rand))
const ys = xs.map((x) => x.reduce((a, v, j) => a + v * (truth[j] as number), 0) + rand() * 0.01)
const order = createSampleOrder({ seed: 3, size: SAMPLES })

function gradient (w: Float32Array, start: number, end: number): Float32Array {
  const g = new Float64Array(FEATURES)
  for (let p = start; p < end; p++) {
    const i = order.indexOf(p)
    const x = xs[i] as number[]
    const e = x.reduce((a, v, j) => a + v * (w[j] as number), 0) - (ys[i] as number)
    for (let j = 0; j < FEATURES; j++) g[j] = (g[j] as number) + 2 * e * (x[j] as number) / (end - start)
  }
  return Float32Array.from(g)
}

const transport = memoryTransport({ network: createMemoryNetwork() })
const coordinatorEndpoint = await transport.open({ id: 'coordinator', job: 'example' })
const coordinator = createCoordinator({
  jobId: 'example', minWorkers: 2, maxWorkers: 4, deterministic: true, ...job,
  heartbeatIntervalMs: 50, suspectAfterMs: 300, stepTimeoutMs: 10_000, rendezvousTimeoutMs: 10_000
}, { endpoint: coordinatorEndpoint })
coordinator.on('recovery', (r) => { process.stderr.write(`recovery after ${r.reason} of ${r.peers.join(',')}: detect ${r.detectMs.toFixed(0)} ms, first commit ${r.firstCommitMs.toFixed(0)} ms later\n`) })
await coordinator.start()

async function startWorker (id: string, crashAtStep?: number): Promise<{ w: Float32Array, done: Promise<void> }> {
  const endpoint = await transport.open({ id, job: 'example' })
  const w = new Float32Array(FEATURES)
  const state = (): StateDict => createStateDict([{ name: 'w', shape: [FEATURES], dtype: 'float32', data: w }])
  const worker = createWorker({ size: FEATURES, coordinatorAddress: 'coordinator', heartbeatIntervalMs: 50, suspectAfterMs: 300 },
    { endpoint, state: { get: state, set: (st) => { w.set(st.tensors[0]?.data ?? w) } } })
  worker.on('heal', (e) => { process.stderr.write(`${id} healed step ${e.step} from ${e.sources.join(',')} in ${e.ms.toFixed(0)} ms\n`) })
  await worker.start()
  const done = (async () => {
    for await (const step of worker.steps()) {
      if (step.step === crashAtStep) { await endpoint.close(); await worker.stop(); return }
      const grads = step.microBatches.map((mb) => gradient(w, mb.start, mb.end))
      let agg: Float32Array
      try { agg = await step.reduce(grads) } catch (err) { if ((err as Error).name === 'StepAbortedError') continue; throw err }
      if (await step.commit()) for (let j = 0; j < FEATURES; j++) w[j] = (w[j] as number) - 0.1 * (agg[j] as number)
    }
    await worker.stop()
    await endpoint.close()
  })()
  return { w, done }
}

const a = await startWorker('worker-1')
await startWorker('worker-2', 20)
await startWorker('worker-3')
await new Promise<void>((resolve) => { const off = coordinator.on('commit', (e) => { if (e.step === 30) { off(); resolve() } }) })
const late = await startWorker('worker-4')
await coordinator.finished()
await Promise.all([a.done, late.done])
const err = truth.reduce((m, t, j) => Math.max(m, Math.abs(t - (a.w[j] as number))), 0)
process.stdout.write(`trained ${job.steps} steps; max |w - w*| = ${err.toFixed(4)}; worker-1 and worker-4 weights identical: ${a.w.every((v, j) => Object.is(v, late.w[j]))}\n`)
await coordinator.stop()
await coordinatorEndpoint.close()
