/**
 * `npm run eval -- lowcomm [--steps 400] [--seeds 1]`: data parallel every step vs DiLoCo vs NoLoCo vs
 * gossip vs local-only training of N = 8 replicas on non-IID shards of a character corpus.
 *
 * Model: a character-level MLP LM in plain Float32Array math (eval/lowcomm-model.ts), because the
 * TF.js transformer LM of @phalanx/tfjs was not available when this evaluation was written; the
 * corpus is packages/tfjs/data/licenses.txt (14 licence texts), split 90/10, the training part cut
 * into 8 contiguous shards (each replica sees different licences: non-IID).
 *
 * The outer optimisers are the real @phalanx/optim ones: pairs exchange over the in-memory
 * transport, DiLoCo uses an in-process all-reduce. Wall-clock is *simulated*: every replica's
 * compute per inner step is the median measured step time, and every synchronisation costs
 * `rounds × latency + bytes / bandwidth` (50 ms, 100 Mbit/s), rounds and bytes as counted by the
 * optimiser (a ring all-reduce for the all-replica methods: 2(N−1) rounds).
 */
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { mulberry32, type Endpoint } from '@phalanx/core'
import { createOuterOptimizer, meanInto, ringAllReduceCost, type AllReduce, type OuterOptimizer, type OuterSpecInput } from '@phalanx/optim'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { writeEvalResult } from './report.js'
import { createAdam, initParams, layoutOf, lossAndGrad, workspace, type MlpShape } from './lowcomm-model.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

function arg (name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`)
  const v = i >= 0 ? Number(process.argv[i + 1]) : fallback
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name} must be a positive number`)
  return v
}

const N = 8
const STEPS = arg('steps', 800)
const SEEDS = arg('seeds', 1)
const BATCH = 32
const LR = arg('lr', 1e-2)
const LATENCY_MS = 50
const BANDWIDTH_BYTES_PER_S = 100e6 / 8
const VAL_TOKENS = 8192

function progress (message: string): void {
  process.stderr.write(`[lowcomm] ${message}\n`)
}

// ---- data -------------------------------------------------------------------------------------
const text = readFileSync(join(root, 'packages/tfjs/data/licenses.txt'), 'latin1')
const chars = [...new Set(text)].sort()
const index = new Map(chars.map((c, i) => [c, i]))
const tokens = Uint8Array.from(text, (c) => index.get(c) as number)
const SHAPE: MlpShape = { vocab: chars.length, context: 6, embed: 12, hidden: 96 }
const SIZE = layoutOf(SHAPE).size
const split = Math.floor(tokens.length * 0.9)
const shardLength = Math.floor(split / N)
const valStart = split
const valPositions = Array.from({ length: Math.min(VAL_TOKENS, tokens.length - valStart - SHAPE.context - 1) }, (_, i) => valStart + i)

function sampleBatch (replica: number, random: () => number, out: number[]): void {
  const start = replica * shardLength
  const span = shardLength - SHAPE.context - 1
  for (let b = 0; b < out.length; b++) out[b] = start + Math.floor(random() * span)
}

// ---- methods ----------------------------------------------------------------------------------
interface Method {
  name: string
  interval: number
  /** Outer spec; undefined = data parallel (gradient all-reduce every step). */
  spec?: OuterSpecInput
}

const METHODS: Method[] = [
  { name: 'DP (grad all-reduce every step)', interval: 1 },
  { name: 'DiLoCo (all, Nesterov 0.7/0.9)', interval: 20, spec: { preset: 'diloco', interval: 20 } },
  { name: 'DiLoCo (all, heavy-ball 0.7/0.3)', interval: 20, spec: { preset: 'diloco', interval: 20, kind: 'heavy-ball', momentum: 0.3 } },
  { name: 'NoLoCo (pair, heavy-ball 0.7/0.5)', interval: 20, spec: { preset: 'noloco', interval: 20 } },
  { name: 'NoLoCo (pair, heavy-ball 0.7/0.5)', interval: 10, spec: { preset: 'noloco', interval: 10 } },
  { name: 'gossip (pair average)', interval: 10, spec: { preset: 'gossip', interval: 10 } },
  { name: 'local only (no sync)', interval: Number.POSITIVE_INFINITY, spec: 'none' }
]

interface RunResult {
  valMean: number
  valWorst: number
  valOfMean: number
  spread: number
  bytesPerReplica: number
  rounds: number
  syncs: number
  fallbacks: number
  commMs: number
}

function memoryAllReduce (n: number): AllReduce {
  const rounds = new Map<number, { inputs: Float32Array[], outs: Float32Array[], done: Array<() => void> }>()
  return async (input, out, { round }) => {
    await new Promise<void>((resolve) => {
      let g = rounds.get(round)
      if (g === undefined) { g = { inputs: [], outs: [], done: [] }; rounds.set(round, g) }
      g.inputs.push(input)
      g.outs.push(out)
      g.done.push(resolve)
      if (g.inputs.length === n) {
        const mean = meanInto(new Float32Array(input.length), g.inputs)
        for (const o of g.outs) o.set(mean)
        for (const d of g.done) d()
        rounds.delete(round)
      }
    })
  }
}

function valLoss (p: Float32Array): number {
  const ws = workspace(SHAPE, valPositions.length)
  return lossAndGrad(SHAPE, p, tokens, valPositions, ws)
}

/** NoLoCo's metric: sqrt(Σ (mean − p)² / (numel · N)). */
function weightSpread (ps: readonly Float32Array[]): { spread: number, mean: Float32Array } {
  const mean = meanInto(new Float32Array(SIZE), ps)
  let acc = 0
  for (const p of ps) for (let i = 0; i < SIZE; i++) acc += ((mean[i] as number) - (p[i] as number)) ** 2
  return { spread: Math.sqrt(acc / (SIZE * ps.length)), mean }
}

const stepTimes: number[] = []

async function run (method: Method, seed: number): Promise<RunResult> {
  const init = initParams(SHAPE, 1000 + seed)
  const randoms = Array.from({ length: N }, (_, r) => mulberry32(seed * 7919 + r + 1))
  const ws = workspace(SHAPE, BATCH)
  const batch = new Array<number>(BATCH).fill(0)
  const grad = new Float32Array(SIZE)
  const members = Array.from({ length: N }, (_, r) => `replica-${r}`)

  if (method.spec === undefined) {
    // Data parallel: every replica computes a gradient on its shard, the mean drives one Adam.
    const p = init.slice()
    const adam = createAdam(SIZE, LR)
    const grads = Array.from({ length: N }, () => new Float32Array(SIZE))
    const mean = new Float32Array(SIZE)
    for (let step = 0; step < STEPS; step++) {
      for (let r = 0; r < N; r++) {
        sampleBatch(r, randoms[r] as () => number, batch)
        const t0 = performance.now()
        lossAndGrad(SHAPE, p, tokens, batch, ws, grads[r])
        stepTimes.push(performance.now() - t0)
      }
      meanInto(mean, grads)
      adam.step(p, mean)
      if ((step + 1) % 100 === 0) progress(`${method.name} seed ${seed}: step ${step + 1}/${STEPS}`)
    }
    const cost = ringAllReduceCost(N, SIZE * 4)
    const v = valLoss(p)
    return {
      valMean: v, valWorst: v, valOfMean: v, spread: 0, bytesPerReplica: cost.bytesSent * STEPS, rounds: cost.rounds * STEPS, syncs: STEPS, fallbacks: 0,
      commMs: STEPS * (cost.rounds * LATENCY_MS + cost.bytesSent / BANDWIDTH_BYTES_PER_S * 1000)
    }
  }

  const params = Array.from({ length: N }, () => init.slice())
  const adams = Array.from({ length: N }, () => createAdam(SIZE, LR))
  const endpoints: Endpoint[] = []
  const opts: OuterOptimizer[] = []
  const allReduce = memoryAllReduce(N)
  let commMs = 0
  try {
    const transport = memoryTransport({ network: createMemoryNetwork() })
    for (const id of members) endpoints.push(await transport.open({ id, job: 'lowcomm' }))
    for (const a of endpoints) for (const b of endpoints) if (a !== b) a.connect(b.id, b.address)
    for (let r = 0; r < N; r++) {
      const o = createOuterOptimizer({ spec: method.spec, initial: init, members, seed, exchangeTimeoutMs: 30_000 }, { endpoint: endpoints[r], allReduce })
      o.start()
      opts.push(o)
    }
    for (let step = 0; step < STEPS; step++) {
      for (let r = 0; r < N; r++) {
        sampleBatch(r, randoms[r] as () => number, batch)
        const t0 = performance.now()
        lossAndGrad(SHAPE, params[r] as Float32Array, tokens, batch, ws, grad);
        (adams[r] as ReturnType<typeof createAdam>).step(params[r] as Float32Array, grad)
        stepTimes.push(performance.now() - t0)
      }
      const reports = await Promise.all(opts.map(async (o, r) => await o.step(params[r] as Float32Array)))
      // Replicas synchronise in parallel; the slowest one sets the pace of the round.
      let slowest = 0
      for (const rep of reports) {
        if (rep === undefined) continue
        slowest = Math.max(slowest, rep.rounds * LATENCY_MS + rep.bytesSent / BANDWIDTH_BYTES_PER_S * 1000)
      }
      commMs += slowest
      if ((step + 1) % 100 === 0) progress(`${method.name} H=${method.interval} seed ${seed}: step ${step + 1}/${STEPS}`)
    }
  } finally {
    for (const o of opts) await o.stop()
    for (const e of endpoints) await e.close({ lingerMs: 0 })
  }
  const vals = params.map(valLoss)
  const { spread, mean } = weightSpread(params)
  const metrics = opts.map((o) => o.metrics())
  const avg = (xs: number[]): number => xs.reduce((s, x) => s + x, 0) / xs.length
  return {
    valMean: avg(vals),
    valWorst: Math.max(...vals),
    valOfMean: valLoss(mean),
    spread,
    bytesPerReplica: avg(metrics.map((m) => m.bytesSent)),
    rounds: Math.max(...metrics.map((m) => m.rounds)),
    syncs: Math.max(...metrics.map((m) => m.syncs)),
    fallbacks: metrics.reduce((s, m) => s + m.fallbacks, 0),
    commMs
  }
}

// ---- main -------------------------------------------------------------------------------------
const started = performance.now()
progress(`corpus ${tokens.length} chars, vocab ${chars.length}, ${SIZE} params, ${N} replicas, ${STEPS} steps, ${SEEDS} seed(s)`)
const results: RunResult[][] = []
for (const method of METHODS) {
  const perSeed: RunResult[] = []
  for (let seed = 0; seed < SEEDS; seed++) perSeed.push(await run(method, seed))
  results.push(perSeed)
  progress(`${method.name} H=${method.interval}: val mean ${(perSeed.reduce((s, r) => s + r.valMean, 0) / SEEDS).toFixed(4)} (${((performance.now() - started) / 1000).toFixed(0)} s)`)
}
const sorted = [...stepTimes].sort((a, b) => a - b)
const computeMs = sorted[Math.floor(sorted.length / 2)] as number

const mean = (xs: number[]): number => xs.reduce((s, x) => s + x, 0) / xs.length
const rows = METHODS.map((m, i) => {
  const rs = results[i] as RunResult[]
  const comm = mean(rs.map((r) => r.commMs))
  // `none` runs no-op outer steps: report them as no synchronisation.
  const syncs = mean(rs.map((r) => r.rounds)) > 0 ? mean(rs.map((r) => r.syncs)) : 0
  return {
    method: m.name,
    H: Number.isFinite(m.interval) ? m.interval : '∞',
    'val loss mean': mean(rs.map((r) => r.valMean)),
    'val loss worst': mean(rs.map((r) => r.valWorst)),
    'val loss of averaged model': mean(rs.map((r) => r.valOfMean)),
    'weight spread': mean(rs.map((r) => r.spread)),
    'KiB sent / replica': mean(rs.map((r) => r.bytesPerReplica)) / 1024,
    syncs,
    'seq. rounds': mean(rs.map((r) => r.rounds)),
    'rounds / sync': syncs > 0 ? mean(rs.map((r) => r.rounds)) / syncs : 0,
    fallbacks: mean(rs.map((r) => r.fallbacks)),
    'sim. comm s': comm / 1000,
    'sim. wall-clock s': (STEPS * computeMs + comm) / 1000
  }
})

const row = (i: number): typeof rows[number] => rows[i] as typeof rows[number]
// Compare with the better of the two DiLoCo variants (paper Nesterov, NoLoCo-repo heavy-ball).
const diloco = row(1)['val loss mean'] <= row(2)['val loss mean'] ? row(1) : row(2)
const noloco20 = row(3)
const noloco10 = row(4)
const gap20 = (noloco20['val loss mean'] / diloco['val loss mean'] - 1) * 100
const gap10 = (noloco10['val loss mean'] / diloco['val loss mean'] - 1) * 100
const best = Math.min(gap20, gap10)
const speedup = diloco['sim. wall-clock s'] / noloco10['sim. wall-clock s']
const summary = [
  `${N} replicas of a character-level MLP LM (${SIZE} parameters; plain Float32Array math, not the TF.js transformer, which was not available in time)`,
  `on non-IID contiguous shards of packages/tfjs/data/licenses.txt, ${STEPS} inner Adam steps (lr ${LR}, batch ${BATCH} per replica), ${SEEDS} seed(s);`,
  `validation on ${valPositions.length} held-out characters. Wall-clock is simulated: ${STEPS} × ${computeMs.toFixed(2)} ms median measured compute per step`,
  `plus, per synchronisation, rounds × ${LATENCY_MS} ms + bytes / 100 Mbit/s (slowest replica).`,
  `Targets (against the better DiLoCo variant, ${diloco.method}): NoLoCo within 2% of DiLoCo's validation loss — NoLoCo H=10 (similar bytes, half DiLoCo's H) ${gap10 >= 0 ? '+' : ''}${gap10.toFixed(2)}% (${gap10 <= 2 ? 'met' : 'not met'}),`,
  `NoLoCo at DiLoCo's H=20 ${gap20 >= 0 ? '+' : ''}${gap20.toFixed(2)}% (${gap20 <= 2 ? 'met' : 'not met'}; best ${best.toFixed(2)}%);`,
  `rounds per sync ${noloco10['rounds / sync']} (NoLoCo) vs ${diloco['rounds / sync']} = 2(N−1) (DiLoCo ring all-reduce) (${noloco10['rounds / sync'] === 1 ? 'met' : 'not met'});`,
  `simulated wall-clock NoLoCo H=10 ${noloco10['sim. wall-clock s'].toFixed(1)} s vs DiLoCo ${diloco['sim. wall-clock s'].toFixed(1)} s, ${speedup.toFixed(1)}× (${speedup > 1 ? 'met' : 'not met'}).`,
  `Run time ${((performance.now() - started) / 1000).toFixed(0)} s.`
].join(' ')

writeEvalResult('lowcomm', {
  summary,
  columns: Object.keys(rows[0] as object),
  rows,
  data: {
    settings: { replicas: N, steps: STEPS, seeds: SEEDS, batch: BATCH, lr: LR, shape: SHAPE, params: SIZE, latencyMs: LATENCY_MS, bandwidthMbit: 100, computeMsPerStep: computeMs },
    perSeed: METHODS.map((m, i) => ({ method: m.name, H: m.interval, runs: results[i] }))
  }
})
process.stdout.write(`${summary}\n`)
