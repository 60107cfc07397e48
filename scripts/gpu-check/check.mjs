// GPU check: WebGPU (Dawn) through tfjs-backend-webgpu, plus tfjs-node-gpu when it is importable.
// Prints adapter info, matmul GFLOP/s (GPU_CHECK_SIZES, default 1024,4096), an MLP training step
// (784-256-10, batch 128, SGD), the data() round trip of 10M floats, and the error against cpu.
// The last stdout line is one JSON object with every number. Bundled by build.sh.
import { dawn } from './setup.mjs'
// The union package brings gradients, chained ops and the cpu backend (the reference).
import * as tf from '@tensorflow/tfjs'
import '@tensorflow/tfjs-backend-webgpu'

const sizes = (process.env.GPU_CHECK_SIZES ?? '1024,4096').split(',').map(Number).filter((n) => n > 0)
const report = { node: process.version, tfjs: tf.version, dawn: { options: dawn.options, compat: dawn.compat }, results: {} }
const log = (line) => process.stdout.write(line + '\n')

async function adapterInfo () {
  const adapter = await dawn.requestAdapter()
  if (adapter === null) return null
  const info = adapter.info ?? {}
  return {
    vendor: info.vendor, architecture: info.architecture, device: info.device, description: info.description,
    features: [...adapter.features].sort(),
    maxBufferSize: adapter.limits?.maxBufferSize, maxStorageBufferBindingSize: adapter.limits?.maxStorageBufferBindingSize
  }
}

function mlp (seed) {
  const w1 = tf.variable(tf.randomNormal([784, 256], 0, 0.05, 'float32', seed))
  const b1 = tf.variable(tf.zeros([256]))
  const w2 = tf.variable(tf.randomNormal([256, 10], 0, 0.05, 'float32', seed + 1))
  const b2 = tf.variable(tf.zeros([10]))
  return { vars: [w1, b1, w2, b2], apply: (x) => tf.add(tf.matMul(tf.relu(tf.add(tf.matMul(x, w1), b1)), w2), b2) }
}

async function measure (backend) {
  const out = { backend }
  // matmul GFLOP/s: k chained submissions, one sync at the end (a scalar, so no big download).
  for (const n of sizes) {
    const a = tf.randomNormal([n, n], 0, 1, 'float32', 1)
    const b = tf.randomNormal([n, n], 0, 1, 'float32', 2)
    const warm = tf.matMul(a, b); await tf.sum(warm).data(); warm.dispose()
    const k = n >= 4096 ? 10 : 30
    const t0 = performance.now()
    let acc = tf.scalar(0)
    for (let i = 0; i < k; i++) {
      const c = tf.matMul(a, b)
      const s = tf.add(acc, tf.sum(c))
      acc.dispose(); c.dispose(); acc = s
    }
    await acc.data()
    const ms = (performance.now() - t0) / k
    out[`matmul${n}_ms`] = ms
    out[`matmul${n}_gflops`] = (2 * n ** 3) / (ms * 1e6)
    log(`${backend}: matmul ${n}: ${ms.toFixed(2)} ms, ${(2 * n ** 3 / (ms * 1e6)).toFixed(1)} GFLOP/s`)
    tf.dispose([a, b, acc])
  }
  // MLP training step.
  const model = mlp(3)
  const opt = tf.train.sgd(0.05)
  const x = tf.randomUniform([128, 784], 0, 1, 'float32', 4)
  const y = tf.cast(tf.oneHot(tf.randomUniform([128], 0, 10, 'int32', 5), 10), 'float32')
  const times = []
  for (let i = 0; i < 25; i++) {
    const t0 = performance.now()
    const loss = opt.minimize(() => tf.losses.softmaxCrossEntropy(y, model.apply(x)), true, model.vars)
    await loss.data(); loss.dispose()
    if (i >= 5) times.push(performance.now() - t0)
  }
  times.sort((p, q) => p - q)
  out.mlp_step_ms = times[Math.floor(times.length / 2)]
  log(`${backend}: MLP train step: ${out.mlp_step_ms.toFixed(2)} ms (median of ${times.length})`)
  tf.dispose([...model.vars, x, y]); opt.dispose()
  // data() round trip of 10M floats.
  const big = new Float32Array(10_000_000).fill(1.5)
  const t0 = performance.now()
  const t = tf.tensor1d(big)
  const back = await tf.add(t, 0).data()
  out.roundtrip_10M_ms = performance.now() - t0
  out.roundtrip_ok = back[9_999_999] === 1.5
  log(`${backend}: 10M-float upload + add + data(): ${out.roundtrip_10M_ms.toFixed(1)} ms (ok: ${out.roundtrip_ok})`)
  t.dispose()
  return out
}

async function errorAgainstCpu (backend) {
  const run = async (name) => {
    await tf.setBackend(name)
    const a = tf.randomNormal([256, 300], 0, 1, 'float32', 7)
    const b = tf.randomNormal([300, 200], 0, 1, 'float32', 8)
    const c = tf.matMul(a, b, false, false)
    const d = await c.data()
    tf.dispose([a, b, c])
    return d
  }
  const ref = await run('cpu')
  const got = await run(backend)
  let err = 0
  for (let i = 0; i < ref.length; i++) err = Math.max(err, Math.abs(ref[i] - got[i]))
  return err
}

report.adapter = await adapterInfo()
log(`adapter: ${JSON.stringify(report.adapter)}`)
if (report.adapter !== null && await tf.setBackend('webgpu')) {
  await tf.ready()
  report.results.webgpu = await measure('webgpu')
  report.results.webgpu.max_abs_err_vs_cpu = await errorAgainstCpu('webgpu')
  log(`webgpu: max |err| vs cpu on a 256x300x200 matmul: ${report.results.webgpu.max_abs_err_vs_cpu}`)
} else {
  log('webgpu: no adapter or backend init failed')
}
for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
  try {
    await import(pkg)
  } catch (err) {
    log(`${pkg}: not importable (${err.code ?? err.message})`)
    continue
  }
  if (await tf.setBackend('tensorflow')) report.results[pkg] = await measure('tensorflow')
  break
}
log(JSON.stringify(report))
process.exit(0)
