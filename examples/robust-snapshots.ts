/**
 * Robust aggregation from the job configuration and local snapshots, in one process over the
 * memory transport: five workers train a linear regression with `aggregator: { name: 'MultiKrum',
 * f: 1 }`; worker w5 sends sign-flipped, 5× scaled gradients and is rejected every step. Every
 * worker snapshots to a snapshot holder; w2 "crashes" at a stalled step boundary, is restarted with
 * the same id and restores from the holder instead of healing from its peers.
 * Run: `npx tsx examples/robust-snapshots.ts`.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createStateDict, resolveConfig, type Endpoint } from '@phalanx/core'
import { aggregatorFromConfig } from '@phalanx/cli'
import { createHolderClient, createSnapshotter, pinStateDict, runHolder } from '@phalanx/checkpoint'
import { createCoordinator } from '@phalanx/coordinator'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { createSampleOrder, createWorker, type Worker } from '@phalanx/worker'

const FEATURES = 8
const SAMPLES = 512
const config = resolveConfig({ job: { id: 'example', globalBatch: 40, microBatch: 8, steps: 40, minWorkers: 5, maxWorkers: 5, seed: 3 }, aggregator: { name: 'MultiKrum', f: 1 } })

let s = 1
const rand = (): number => { s = (s * 16807) % 2147483647; return s / 2147483647 - 0.5 }
const truth = Array.from({ length: FEATURES }, rand)
const xs = Array.from({ length: SAMPLES }, () => Array.from({ length: FEATURES }, rand))
const ys = xs.map((x) => x.reduce((a, v, j) => a + v * (truth[j] as number), 0) + rand() * 0.01)
const order = createSampleOrder({ seed: config.job.seed, size: SAMPLES })
const gradient = (w: Float32Array, start: number, end: number): Float32Array => {
  const g = new Float64Array(FEATURES)
  for (let p = start; p < end; p++) {
    const i = order.indexOf(p)
    const x = xs[i] as number[]
    const e = x.reduce((a, v, j) => a + v * (w[j] as number), 0) - (ys[i] as number)
    for (let j = 0; j < FEATURES; j++) g[j] = (g[j] as number) + 2 * e * (x[j] as number) / (end - start)
  }
  return Float32Array.from(g)
}
const loss = (w: Float32Array): number => xs.reduce((a, x, i) => a + (x.reduce((b, v, j) => b + v * (w[j] as number), 0) - (ys[i] as number)) ** 2, 0) / SAMPLES

const dir = mkdtempSync(join(tmpdir(), 'phalanx-example-holder-'))
const transport = memoryTransport({ network: createMemoryNetwork() })
const holder = await runHolder({ job: 'example', listen: 'holder', transport, dir })
const coordinatorEndpoint = await transport.open({ id: 'coordinator', job: 'example' })
const { job } = config
const coordinator = createCoordinator({
  jobId: 'example', minWorkers: job.minWorkers, maxWorkers: job.maxWorkers, deterministic: true, globalBatch: job.globalBatch, microBatch: job.microBatch, steps: job.steps,
  heartbeatIntervalMs: 50, suspectAfterMs: 300, stepTimeoutMs: 10_000, rendezvousTimeoutMs: 10_000
}, { endpoint: coordinatorEndpoint })
await coordinator.start()

interface Node { worker: Worker, endpoint: Endpoint, w: Float32Array, loop: Promise<void>, stopSnapshots: () => Promise<void> }
let releaseW2: (() => void) | undefined
const crashAt = 20
const start = async (id: string, options: { byzantine?: boolean, crash?: (step: number) => Promise<void> } = {}): Promise<Node> => {
  const endpoint = await transport.open({ id, job: 'example' })
  const w = new Float32Array(FEATURES)
  const state = (): ReturnType<typeof createStateDict> => createStateDict([{ name: 'w', shape: [FEATURES], dtype: 'float32', data: w }])
  const client = createHolderClient({ owner: id, address: holder.endpoint.address }, { endpoint })
  const snapshotter = createSnapshotter({ l2Every: 0, checksumWorker: false }, { holder: client })
  const worker = createWorker({ size: FEATURES, coordinatorAddress: 'coordinator', heartbeatIntervalMs: 50, suspectAfterMs: 300 }, {
    endpoint,
    aggregator: aggregatorFromConfig(config),
    state: { get: state, set: (st) => { w.set(st.tensors[0]?.data ?? w) } },
    snapshots: {
      capture: (meta) => snapshotter.capture(pinStateDict(createStateDict(state().tensors, meta))).reason !== 'busy',
      restore: async (step) => { const held = await client.latest(); return held?.step === step ? (await client.restore()).state : undefined }
    }
  })
  worker.on('restore', (e) => { process.stdout.write(`${id}: restored step ${e.step} from the snapshot holder in ${e.ms.toFixed(1)} ms\n`) })
  worker.on('heal', (e) => { process.stdout.write(`${id}: healed step ${e.step} from ${e.sources.join(', ')}\n`) })
  await worker.start()
  const loop = (async () => {
    for await (const step of worker.steps()) {
      await options.crash?.(step.step)
      const grads = step.microBatches.map((mb) => gradient(w, mb.start, mb.end)).map((g) => options.byzantine === true ? g.map((v) => -5 * v) : g)
      try {
        const agg = await step.reduce(grads)
        if (await step.commit()) for (let j = 0; j < FEATURES; j++) w[j] = (w[j] as number) - 0.1 * (agg[j] as number)
      } catch (err) {
        if ((err as Error).name !== 'StepAbortedError') throw err
      }
    }
  })()
  loop.catch(() => {})
  return { worker, endpoint, w, loop, stopSnapshots: async () => { await snapshotter.flush(); await snapshotter.stop() } }
}

const nodes = new Map<string, Node>()
for (const id of ['w1', 'w3', 'w4']) nodes.set(id, await start(id))
nodes.set('w5', await start('w5', { byzantine: true }))
let crashed!: () => void
const atCrash = new Promise<void>((resolve) => { crashed = resolve })
nodes.set('w2', await start('w2', {
  crash: async (step) => { if (step >= crashAt) { crashed(); await new Promise<void>((resolve) => { releaseW2 = resolve }) } }
}))
await atCrash
// w2 stalls the job at its step boundary; once the holder has that step, "crash" w2 and restart it.
const old = nodes.get('w2') as Node
const probeEndpoint = await transport.open({ id: 'probe', job: 'example' })
const probe = createHolderClient({ owner: 'w2', address: holder.endpoint.address }, { endpoint: probeEndpoint })
for (let i = 0; i < 200 && (await probe.latest())?.step !== crashAt; i++) await new Promise((resolve) => setTimeout(resolve, 10))
await old.stopSnapshots()
await old.endpoint.close()
await old.worker.stop()
releaseW2?.()
nodes.set('w2', await start('w2'))
await Promise.all(['w1', 'w2', 'w3', 'w4'].map(async (id) => { await nodes.get(id)?.loop }))

const first = nodes.get('w1') as Node
process.stdout.write(`rejections counted by w1: ${JSON.stringify(first.worker.status().robust.rejected)}\n`)
process.stdout.write(`final loss ${loss(first.w).toExponential(3)}; w1 and the restarted w2 agree bit for bit: ${nodes.get('w2')?.w.every((v, j) => Object.is(v, first.w[j])) === true}\n`)
for (const n of nodes.values()) { await n.worker.stop(); await n.endpoint.close() }
await coordinator.stop()
await coordinatorEndpoint.close()
await probeEndpoint.close()
await holder.close()
rmSync(dir, { recursive: true, force: true })
