import { computeGradients, extractState, mnistLoss, selectBackend, softmaxCrossEntropy, tf, type MnistBatch, type TfModel } from '@phalanx/tfjs'
import { createSampleOrder } from '../src/index.js'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { bitEqual, CLASSES, createTrainCluster, FEATURES, plainReference, syntheticData, tinyModel, TRAIN_JOB, type TrainCluster } from './train-helpers.js'

const data = syntheticData()
let cluster: TrainCluster | undefined
afterEach(async () => {
  await cluster?.close()
  cluster = undefined
})

/** Resolves once the coordinator committed step `step` (0-based). */
async function onCommit (c: TrainCluster, step: number, then: () => Promise<unknown> | void): Promise<void> {
  await new Promise<void>((resolve) => {
    const off = c.coordinator.on('commit', (e) => { if (e.step === step) { off(); resolve() } })
  })
  await then()
}

async function runWorkers (ids: readonly string[]): Promise<TrainCluster> {
  const c = await createTrainCluster(data, { minWorkers: ids.length, maxWorkers: ids.length })
  cluster = c
  for (const id of ids) await c.add(id)
  await expect(c.coordinator.finished()).resolves.toMatchObject({ committed: TRAIN_JOB.steps })
  for (const id of ids) await expect(c.nodes.get(id)?.run).resolves.toMatchObject({ committed: TRAIN_JOB.steps, done: true, aborted: 0 })
  return c
}

/** Three workers; w3 is closed (endpoint and trainer) right after step 3 commits; w4 joins after step 6 and heals. */
async function runWithCrashAndJoin (): Promise<TrainCluster> {
  const c = await createTrainCluster(data, { minWorkers: 2, maxWorkers: 3 })
  cluster = c
  for (const id of ['w1', 'w2', 'w3']) await c.add(id)
  const crash = onCommit(c, 3, async () => { await c.crash('w3') })
  const join = onCommit(c, 6, async () => { await c.add('w4') })
  await expect(c.coordinator.finished()).resolves.toMatchObject({ committed: TRAIN_JOB.steps })
  await crash
  await join
  for (const id of ['w1', 'w2', 'w4']) await expect(c.nodes.get(id)?.run).resolves.toMatchObject({ committed: TRAIN_JOB.steps, done: true })
  await expect(c.nodes.get('w4')?.run).resolves.toMatchObject({ heals: 1 })
  await expect(c.nodes.get('w1')?.run).resolves.toMatchObject({ recoveries: 2 })
  return c
}

async function expectAllEqual (c: TrainCluster, ids: readonly string[], reference: Awaited<ReturnType<typeof plainReference>>): Promise<void> {
  for (const id of ids) expect(bitEqual(await c.state(id), reference), `${id} differs from the plain reference`).toBe(true)
}

describe('train() on the cpu backend', () => {
  beforeAll(async () => { await selectBackend({ prefer: 'cpu' }) })

  it('2 workers, 3 workers, and 3 with one closed mid-run plus a late joiner all end bit-identical to the plain loop (weights and Adam slots)', async () => {
    const reference = await plainReference(data)
    let c = await runWorkers(['w1', 'w2'])
    await expectAllEqual(c, ['w1', 'w2'], reference)
    await c.close()
    c = await runWorkers(['w1', 'w2', 'w3'])
    await expectAllEqual(c, ['w1', 'w2', 'w3'], reference)
    await c.close()
    c = await runWithCrashAndJoin()
    await expectAllEqual(c, ['w1', 'w2', 'w4'], reference)
  })

  it('reports the mean micro-batch loss to the coordinator, and the loss goes down', async () => {
    const c = await createTrainCluster(data, { minWorkers: 2, maxWorkers: 2 })
    cluster = c
    const losses: number[] = []
    c.coordinator.on('commit', (e) => { if (e.loss !== undefined) losses.push(e.loss) })
    const w1 = await c.add('w1')
    const reports: number[] = []
    w1.trainer.on('step', (r) => { reports.push(r.globalLoss ?? Number.NaN) })
    await c.add('w2')
    const summary = await w1.run
    expect(losses).toHaveLength(TRAIN_JOB.steps)
    // Every worker sees the coordinator's mean, the same number the coordinator recorded.
    expect(reports).toEqual(losses)
    expect(summary.loss).toBe(losses.at(-1))
    expect(c.coordinator.status().loss).toBe(losses.at(-1))
    expect(losses.at(-1)).toBeLessThan(losses[0] as number)
    // Step 0's loss is the mean over its 6 micro-batches of the initial model, whoever computed them.
    const fresh = tinyModel()
    const order = createSampleOrder({ seed: TRAIN_JOB.seed, size: data.size })
    let sum = 0
    const M = TRAIN_JOB.globalBatch / TRAIN_JOB.microBatch
    for (let m = 0; m < M; m++) {
      sum += (await computeGradients(fresh, mnistLoss, data.batch(order.range(m * TRAIN_JOB.microBatch, (m + 1) * TRAIN_JOB.microBatch)))).loss
    }
    fresh.dispose()
    expect(losses[0]).toBeCloseTo(sum / M, 6)
  })

  it('stop() ends run() with a summary; steps makes a worker leave early while the job goes on', async () => {
    const c = await createTrainCluster(data, { minWorkers: 1, maxWorkers: 2 })
    cluster = c
    const w1 = await c.add('w1')
    const w2 = await c.add('w2', { steps: 4 })
    await expect(w2.run).resolves.toMatchObject({ done: false, committed: 4 })
    await onCommit(c, 6, async () => { await w1.trainer.stop() })
    const summary = await w1.run
    expect(summary.done).toBe(false)
    // The coordinator's commit of step 6 may not have reached w1 before it stopped.
    expect(summary.committed).toBeGreaterThanOrEqual(6)
    expect(summary.committed).toBeLessThan(TRAIN_JOB.steps)
  })

  it('trains a tf.LayersModel: workers end with identical weights and the loss goes down', async () => {
    const c = await createTrainCluster(data, { minWorkers: 2, maxWorkers: 2 })
    cluster = c
    const layersModel = (): tf.LayersModel => tf.sequential({
      layers: [
        tf.layers.dense({ inputShape: [FEATURES], units: 8, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }) }),
        tf.layers.dense({ units: CLASSES, kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }) })
      ]
    })
    const lossFn = (model: TfModel, batch: MnistBatch): tf.Scalar =>
      softmaxCrossEntropy(model.apply(tf.tensor2d(batch.xs, [batch.size, FEATURES])), tf.tensor2d(batch.ys, [batch.size, CLASSES]))
    const models = [layersModel(), layersModel()]
    const first: number[] = []
    const w1 = await c.add('w1', { model: models[0] as tf.LayersModel, loss: lossFn, onStep: (r) => { first.push(r.globalLoss ?? Number.NaN) } })
    const w2 = await c.add('w2', { model: models[1] as tf.LayersModel, loss: lossFn })
    const [s1, s2] = await Promise.all([w1.run, w2.run])
    expect(s1).toMatchObject({ committed: TRAIN_JOB.steps, done: true })
    expect(s2.loss).toBe(s1.loss)
    expect(bitEqual(await extractState(models[0] as tf.LayersModel), await extractState(models[1] as tf.LayersModel))).toBe(true)
    expect(first.at(-1)).toBeLessThan(first[0] as number)
    for (const m of models) m.dispose()
  })
})

describe('train() on the wasm backend', () => {
  beforeAll(async () => { await selectBackend({ prefer: 'wasm' }) })

  it('2 workers, 3 workers, and 3 with one closed mid-run plus a late joiner are bit-identical to the plain loop', async () => {
    const reference = await plainReference(data)
    let c = await runWorkers(['w1', 'w2'])
    await expectAllEqual(c, ['w1', 'w2'], reference)
    await c.close()
    c = await runWorkers(['w1', 'w2', 'w3'])
    await expectAllEqual(c, ['w1', 'w2', 'w3'], reference)
    await c.close()
    c = await runWithCrashAndJoin()
    await expectAllEqual(c, ['w1', 'w2', 'w4'], reference)
  })
})
