/**
 * The loop of examples/train-plain.ts wrapped with Phalanx: `trainMnist` changes in a handful of
 * lines (it takes an endpoint and calls `train()` instead of looping). The rest of this file is an
 * in-process cluster — a coordinator and two workers over the memory transport — standing in for
 * `phalanx launch`. Both workers end with bit-identical weights (deterministic mode).
 * Run: `npx tsx examples/train-phalanx.ts [workers]`.
 */
import { bytesOf, crc32c, flattenStateDict, stateDictsBitEqual, type Endpoint } from '@phalanx/core'
import { createCoordinator } from '@phalanx/coordinator'
import { accuracy, createMnistMlp, extractState, mnistDataset, mnistLoss, selectBackend, tf, type TfModel } from '@phalanx/tfjs'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { train } from '@phalanx/worker'

const SEED = 1
const STEPS = 100
const BATCH = 256
const WORKERS = Number(process.argv[2] ?? 2)

async function testAccuracy (model: TfModel): Promise<number> {
  const test = await mnistDataset({ split: 'test', seed: SEED })
  const all = test.batch(Array.from({ length: test.size }, (_, i) => i))
  const logits = tf.tidy(() => model.apply(tf.tensor2d(all.xs, [all.size, 784])))
  try { return await accuracy(logits, all.labels) } finally { logits.dispose() }
}

async function trainMnist (endpoint: Endpoint): Promise<TfModel> {
  const data = await mnistDataset({ split: 'train', seed: SEED })
  const model = createMnistMlp({ hidden: 128, seed: SEED })
  const optimizer = tf.train.adam(2e-3)
  const summary = await train({ model, optimizer, data, loss: mnistLoss, seed: SEED, coordinatorAddress: 'coordinator' }, { endpoint })
  process.stderr.write(`${endpoint.id}: ${summary.trained} steps trained, final loss ${summary.loss?.toFixed(4)}, ${summary.heals} heals, ${summary.recoveries} recoveries\n`)
  return model
}

// The cluster: what `phalanx launch` does across processes, here in one process.
await selectBackend({ prefer: 'wasm' })
const transport = memoryTransport({ network: createMemoryNetwork() })
const coordinatorEndpoint = await transport.open({ id: 'coordinator', job: 'mnist' })
const coordinator = createCoordinator({
  jobId: 'mnist', minWorkers: WORKERS, maxWorkers: WORKERS, globalBatch: BATCH, microBatch: 32, steps: STEPS, deterministic: true,
  heartbeatIntervalMs: 100, suspectAfterMs: 500, stepTimeoutMs: 60_000, rendezvousTimeoutMs: 60_000
}, { endpoint: coordinatorEndpoint })
await coordinator.start()
const endpoints = await Promise.all(Array.from({ length: WORKERS }, async (_, i) => await transport.open({ id: `worker-${i + 1}`, job: 'mnist' })))
const started = performance.now()
const models = await Promise.all(endpoints.map(trainMnist))
const seconds = (performance.now() - started) / 1000
const states = await Promise.all(models.map(async (m) => await extractState(m)))
const identical = states.every((s) => stateDictsBitEqual(s, states[0] as typeof s))
process.stdout.write(`${WORKERS} workers trained ${STEPS} steps of ${BATCH} samples in ${seconds.toFixed(1)} s (${(STEPS / seconds).toFixed(1)} steps/s), ` +
  `last loss ${coordinator.status().loss?.toFixed(4)}; test accuracy ${(100 * await testAccuracy(models[0] as TfModel)).toFixed(1)}%; weights identical on all workers: ${identical}; ` +
  `weights CRC-32C ${crc32c(bytesOf(flattenStateDict(states[0] as NonNullable<typeof states[0]>))).toString(16)} (the same for any worker count)\n`)
await coordinator.stop()
for (const e of [...endpoints, coordinatorEndpoint]) await e.close()
for (const m of models) m.dispose()
