/**
 * `npm run bench -- tfjs`: training-step time of the MNIST MLP (784→256→10, batch 128, SGD) and of
 * one transformer block LM (B 8, T 64, d 128, 4 heads, FFN 512, Adam) on cpu, stock wasm and wasm
 * with the BatchMatMul override, as ratios measured in the same run; plus the largest difference
 * between stock and override results after identical steps (must be 0), and the cost of a pin.
 */
import {
  applyGradients, computeGradients, createMnistMlp, createTransformerLm, lmLoss, mnistLoss, pinState,
  selectBackend, setWasmMatMulOverride, tf, type MnistBatch, type SequenceBatch, type TfModel, createRng
} from '@phalanx/tfjs'
import { median, progress, writeBenchResult, type Metric } from '../report.js'

type Config = 'cpu' | 'wasm-stock' | 'wasm-override'

function mnistBatch (size: number): MnistBatch {
  const rng = createRng(1)
  const b: MnistBatch = { size, xs: new Float32Array(size * 784), ys: new Float32Array(size * 10), labels: new Uint8Array(size) }
  for (let i = 0; i < b.xs.length; i++) b.xs[i] = rng.next()
  for (let i = 0; i < size; i++) { const l = rng.int(10); b.labels[i] = l; b.ys[i * 10 + l] = 1 }
  return b
}

function tokenBatch (size: number, seqLen: number, vocab: number): SequenceBatch {
  const rng = createRng(2)
  const b: SequenceBatch = { size, seqLen, inputs: new Int32Array(size * seqLen), targets: new Int32Array(size * seqLen) }
  for (let i = 0; i < b.inputs.length; i++) { b.inputs[i] = rng.int(vocab); b.targets[i] = rng.int(vocab) }
  return b
}

async function use (config: Config): Promise<void> {
  if (config === 'cpu') { await selectBackend({ prefer: 'cpu' }); return }
  await selectBackend({ prefer: 'wasm', wasmMatMulOverride: config === 'wasm-override' })
  setWasmMatMulOverride(config === 'wasm-override')
}

interface Workload<B> { make: () => TfModel, optimizer: () => tf.Optimizer, loss: (m: TfModel, b: B) => tf.Scalar, batch: B }

interface StepTime { wall: number, cpu: number }

/**
 * Median wall and process-CPU ms of a plain tf training step (optimizer.minimize), after warm-up.
 * The machine is shared, so CPU time (the work is single-threaded) is the figure ratios use.
 */
async function timeSteps<B> (w: Workload<B>, warmup: number, steps: number, budgetMs: number): Promise<StepTime> {
  const model = w.make()
  const opt = w.optimizer()
  const vars = model.params.map((p) => p.variable)
  const wall: number[] = []
  const cpu: number[] = []
  const started = performance.now()
  try {
    for (let i = 0; i < warmup + steps; i++) {
      const t0 = performance.now()
      const c0 = process.cpuUsage()
      const loss = opt.minimize(() => w.loss(model, w.batch), true, vars)
      await loss?.data()
      loss?.dispose()
      const c = process.cpuUsage(c0)
      if (i >= warmup) { wall.push(performance.now() - t0); cpu.push((c.user + c.system) / 1000) }
      if (i >= warmup && performance.now() - started > budgetMs) break
    }
  } finally {
    model.dispose()
    opt.dispose()
  }
  return { wall: median(wall), cpu: median(cpu) }
}

/** Runs `steps` identical Phalanx steps and returns the final parameters. */
async function finalWeights<B> (w: Workload<B>, steps: number): Promise<Float32Array[]> {
  const model = w.make()
  const opt = w.optimizer()
  try {
    for (let i = 0; i < steps; i++) applyGradients(model, opt, (await computeGradients(model, w.loss, w.batch)).grads)
    return await Promise.all(model.params.map(async (p) => await p.variable.data() as Float32Array))
  } finally {
    model.dispose()
    opt.dispose()
  }
}

/** Largest absolute and largest relative (to max(|x|, 1e-3)) difference over all parameters. */
function maxDiff (a: Float32Array[], b: Float32Array[]): { abs: number, rel: number } {
  let abs = 0
  let rel = 0
  a.forEach((x, k) => {
    const y = b[k] as Float32Array
    for (let i = 0; i < x.length; i++) {
      const d = Math.abs((x[i] as number) - (y[i] as number))
      if (Number.isNaN(d)) { abs = Infinity; rel = Infinity; continue }
      abs = Math.max(abs, d)
      rel = Math.max(rel, d / Math.max(Math.abs(x[i] as number), 1e-3))
    }
  })
  return { abs, rel }
}

async function pinMs<B> (w: Workload<B>, repeats: number): Promise<number> {
  const model = w.make()
  const opt = w.optimizer()
  try {
    applyGradients(model, opt, (await computeGradients(model, w.loss, w.batch)).grads)
    const times: number[] = []
    for (let i = 0; i < repeats; i++) {
      const t0 = performance.now()
      const pin = pinState(model, opt, { step: i, epoch: 0 })
      times.push(performance.now() - t0)
      pin.release()
    }
    return median(times)
  } finally {
    model.dispose()
    opt.dispose()
  }
}

const mlp: Workload<MnistBatch> = {
  make: () => createMnistMlp({ hidden: 256, seed: 1 }),
  optimizer: () => tf.train.sgd(0.05),
  loss: mnistLoss,
  batch: mnistBatch(128)
}
const VOCAB = 86
const block: Workload<SequenceBatch> = {
  make: () => createTransformerLm({ vocab: VOCAB, dModel: 128, heads: 4, layers: 1, seqLen: 64, ffn: 512, seed: 1 }),
  optimizer: () => tf.train.adam(1e-3),
  loss: lmLoss,
  batch: tokenBatch(8, 64, VOCAB)
}

const configs: Config[] = ['cpu', 'wasm-stock', 'wasm-override']
const mlpMs: Partial<Record<Config, StepTime>> = {}
const blockMs: Partial<Record<Config, StepTime>> = {}
for (const c of configs) {
  await use(c)
  const slow = c === 'cpu'
  mlpMs[c] = await timeSteps(mlp, slow ? 2 : 5, slow ? 10 : 60, slow ? 4000 : 4000)
  progress(`mlp ${c}: ${mlpMs[c]?.wall.toFixed(2)} ms/step wall, ${mlpMs[c]?.cpu.toFixed(2)} ms CPU`)
  blockMs[c] = await timeSteps(block, slow ? 1 : 3, slow ? 4 : 15, slow ? 6000 : 4000)
  progress(`transformer block ${c}: ${blockMs[c]?.wall.toFixed(2)} ms/step wall, ${blockMs[c]?.cpu.toFixed(2)} ms CPU`)
}

await use('wasm-stock')
const mlpStock = await finalWeights(mlp, 3)
const blockStock = await finalWeights(block, 2)
await use('wasm-override')
const mlpOverride = await finalWeights(mlp, 3)
const blockOverride = await finalWeights(block, 2)
const mlpDiff = maxDiff(mlpStock, mlpOverride)
const blockDiff = maxDiff(blockStock, blockOverride)
progress(`stock vs override max |diff|: mlp ${mlpDiff.abs} (rel ${mlpDiff.rel}), block ${blockDiff.abs} (rel ${blockDiff.rel})`)

const pinWasm = await pinMs(block, 20)
await use('cpu')
const pinCpu = await pinMs(block, 20)

const ms = (value: number | undefined): Metric => ({ value: value ?? NaN, unit: 'ms', target: null, better: 'lower' })
const ratio = (value: number, target: number | null): Metric => ({ value, unit: 'x', target, better: 'higher' })
const cpuOf = (t: StepTime | undefined): number => t?.cpu ?? NaN
writeBenchResult('tfjs', {
  mlp_step_ms_cpu: ms(mlpMs.cpu?.wall),
  mlp_step_ms_wasm_stock: ms(mlpMs['wasm-stock']?.wall),
  mlp_step_ms_wasm_override: ms(mlpMs['wasm-override']?.wall),
  mlp_step_cpu_ms_wasm_stock: ms(mlpMs['wasm-stock']?.cpu),
  mlp_step_cpu_ms_wasm_override: ms(mlpMs['wasm-override']?.cpu),
  mlp_override_speedup: ratio(cpuOf(mlpMs['wasm-stock']) / cpuOf(mlpMs['wasm-override']), 3),
  mlp_override_speedup_wall: ratio((mlpMs['wasm-stock']?.wall ?? NaN) / (mlpMs['wasm-override']?.wall ?? NaN), null),
  mlp_override_vs_cpu_speedup: ratio(cpuOf(mlpMs.cpu) / cpuOf(mlpMs['wasm-override']), null),
  transformer_block_step_ms_cpu: ms(blockMs.cpu?.wall),
  transformer_block_step_ms_wasm_stock: ms(blockMs['wasm-stock']?.wall),
  transformer_block_step_ms_wasm_override: ms(blockMs['wasm-override']?.wall),
  transformer_override_speedup: ratio(cpuOf(blockMs['wasm-stock']) / cpuOf(blockMs['wasm-override']), null),
  transformer_override_vs_cpu_speedup: ratio(cpuOf(blockMs.cpu) / cpuOf(blockMs['wasm-override']), null),
  mlp_stock_vs_override_max_abs_diff: { value: mlpDiff.abs, unit: 'abs', target: 0, better: 'lower' },
  mlp_stock_vs_override_max_rel_diff: { value: mlpDiff.rel, unit: 'rel', target: null, better: 'lower' },
  transformer_stock_vs_override_max_abs_diff: { value: blockDiff.abs, unit: 'abs', target: 0, better: 'lower' },
  pin_ms_transformer_wasm: ms(pinWasm),
  pin_ms_transformer_cpu: ms(pinCpu)
}, { workloads: { mlp: '784-256-10, batch 128, SGD, optimizer.minimize, 3 steps for the diff', transformerBlock: '1 block, B 8, T 64, d 128, 4 heads, FFN 512, vocab 86, Adam, 2 steps for the diff' }, ratios: 'speedups use median process CPU time per step (single-threaded work on a shared machine)' })
