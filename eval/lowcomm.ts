/**
 * `npm run eval -- lowcomm [--steps 300] [--batch 8] [--seq 32] [--lr 0.003] [--latency 50] [--mbit 100] [--methods dp,diloco,...]`
 *
 * Data parallel every step vs DiLoCo vs NoLoCo vs gossip vs local-only training of N = 8 replicas
 * of the @phalanx/tfjs transformer LM (2 layers, d 64, 4 heads) on non-IID shards of the character
 * corpus (packages/tfjs/data/licenses.txt: the training split cut into 8 contiguous pieces, so each
 * replica reads different licences), wasm backend with the fast matmul.
 *
 * Every replica has its own endpoint on one in-memory network wrapped by the chaos network
 * decorator, which delays every message by the link latency and caps every link's bandwidth
 * (token bucket): pairs (NoLoCo, gossip) exchange through @phalanx/optim's pair exchange, DiLoCo
 * and DP through @phalanx/optim's ring all-reduce (2(N−1) sequential rounds), all over those links.
 *
 * Wall-clock: the replicas share one process and one CPU here, so their inner steps run one after
 * another; each is timed, and a step costs the slowest replica's time (as if they ran in parallel).
 * Each synchronisation is timed as it runs — all 8 replicas concurrently over the delayed links — so
 * the communication part of the wall-clock is measured, not computed from a latency model.
 */
import { mulberry32, type Endpoint } from '@phalanx/core'
import { chaosTransport } from '@phalanx/chaos'
import {
  createOuterOptimizer, createRingAllReduce, meanInto,
  type OuterOptimizer, type OuterSpecInput, type RingAllReduce
} from '@phalanx/optim'
import {
  applyGradients, charCorpus, computeGradients, createTransformerLm, lmLoss, selectBackend, tensorFrom, tf,
  type SequenceBatch, type TransformerLm
} from '@phalanx/tfjs'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { writeEvalResult } from './report.js'

function arg (name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? String(process.argv[i + 1]) : fallback
}
function num (name: string, fallback: number): number {
  const v = Number(arg(name, String(fallback)))
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name} must be a positive number`)
  return v
}

const N = 8
const STEPS = num('steps', 300)
const BATCH = num('batch', 8)
const SEQ = num('seq', 32)
const LR = num('lr', 3e-3)
const CLIP = 1
const LATENCY_MS = num('latency', 50)
const MBIT = num('mbit', 100)
const BANDWIDTH = MBIT * 1e6 / 8
const VAL_SEQS = 256
const SEED = 1
const MODEL = { dModel: 64, heads: 4, layers: 2 }

const progress = (message: string): void => { process.stderr.write(`[lowcomm] ${message}\n`) }

interface Method {
  key: string
  name: string
  interval: number
  /** undefined = data parallel (gradient ring all-reduce every step). */
  spec?: OuterSpecInput
}

const ALL_METHODS: Method[] = [
  { key: 'dp', name: 'DP (grad ring all-reduce every step)', interval: 1 },
  { key: 'diloco', name: 'DiLoCo (all, Nesterov 0.7/0.9)', interval: 10, spec: { preset: 'diloco', interval: 10 } },
  { key: 'diloco-hb', name: 'DiLoCo (all, heavy-ball 0.7/0.3)', interval: 10, spec: { preset: 'diloco', interval: 10, kind: 'heavy-ball', momentum: 0.3 } },
  { key: 'noloco', name: 'NoLoCo (pair, heavy-ball 0.7/0.5)', interval: 10, spec: { preset: 'noloco', interval: 10 } },
  // The same outer settings as the heavy-ball DiLoCo row: tuning one family's momentum and not the
  // other's would make the comparison about tuning, not about pairs vs all.
  { key: 'noloco-hb', name: 'NoLoCo (pair, heavy-ball 0.7/0.3)', interval: 10, spec: { preset: 'noloco', interval: 10, momentum: 0.3 } },
  { key: 'noloco5', name: 'NoLoCo (pair, heavy-ball 0.7/0.5)', interval: 5, spec: { preset: 'noloco', interval: 5 } },
  { key: 'gossip', name: 'gossip (pair average)', interval: 10, spec: { preset: 'gossip', interval: 10 } },
  { key: 'local', name: 'local only (no sync)', interval: Number.POSITIVE_INFINITY, spec: 'none' }
]
const wanted = arg('methods', ALL_METHODS.map((m) => m.key).join(',')).split(',')
const METHODS = ALL_METHODS.filter((m) => wanted.includes(m.key))

// ---- data and model ---------------------------------------------------------------------------
const backend = await selectBackend({ prefer: 'wasm' })
const train = await charCorpus({ seqLen: SEQ, split: 'train' })
const val = await charCorpus({ seqLen: SEQ, split: 'test' })
const VOCAB = train.vocab.length
const shard = Math.floor(train.size / N)
const valBatch = val.batch(Array.from({ length: Math.min(VAL_SEQS, val.size) }, (_, i) => i))
const newModel = (): TransformerLm => createTransformerLm({ vocab: VOCAB, ...MODEL, seqLen: SEQ, seed: SEED })
const evalModel = newModel()
const SIZE = evalModel.params.reduce((n, p) => n + p.variable.size, 0)

/** Replica r's batches: uniform draws from its own contiguous shard, the same for every method. */
function batcher (r: number): () => SequenceBatch {
  const random = mulberry32(SEED * 7919 + r + 1)
  const idx = new Array<number>(BATCH).fill(0)
  return () => {
    for (let b = 0; b < BATCH; b++) idx[b] = r * shard + Math.floor(random() * shard)
    return train.batch(idx)
  }
}

async function readFlat (model: TransformerLm, out: Float32Array): Promise<Float32Array> {
  let off = 0
  for (const p of model.params) {
    out.set(await p.variable.data() as Float32Array, off)
    off += p.variable.size
  }
  return out
}

function writeFlat (model: TransformerLm, flat: Float32Array): void {
  let off = 0
  for (const p of model.params) {
    const t = tensorFrom(flat.subarray(off, off + p.variable.size), p.variable.shape)
    p.variable.assign(t)
    t.dispose()
    off += p.variable.size
  }
}

function clip (g: Float32Array): void {
  let s = 0
  for (let i = 0; i < g.length; i++) s += (g[i] as number) ** 2
  const norm = Math.sqrt(s)
  if (norm > CLIP) for (let i = 0; i < g.length; i++) g[i] = (g[i] as number) * (CLIP / norm)
}

async function valLoss (flat: Float32Array): Promise<number> {
  writeFlat(evalModel, flat)
  let sum = 0
  for (let off = 0; off < valBatch.size; off += 64) {
    const n = Math.min(64, valBatch.size - off)
    const b: SequenceBatch = { size: n, seqLen: SEQ, inputs: valBatch.inputs.subarray(off * SEQ, (off + n) * SEQ), targets: valBatch.targets.subarray(off * SEQ, (off + n) * SEQ) }
    const l = tf.tidy(() => lmLoss(evalModel, b))
    sum += ((await l.data())[0] as number) * n
    l.dispose()
  }
  return sum / valBatch.size
}

/** NoLoCo's metric: sqrt(Σ (mean − p)² / (numel · N)). */
function weightSpread (ps: readonly Float32Array[]): { spread: number, mean: Float32Array } {
  const mean = meanInto(new Float32Array(SIZE), ps)
  let acc = 0
  for (const p of ps) for (let i = 0; i < SIZE; i++) acc += ((mean[i] as number) - (p[i] as number)) ** 2
  return { spread: Math.sqrt(acc / (SIZE * ps.length)), mean }
}

interface RunResult {
  valMean: number
  valWorst: number
  valOfMean: number
  spread: number
  bytesPerReplica: number
  rounds: number
  syncs: number
  fallbacks: number
  computeS: number
  commS: number
  wallS: number
}

/** 8 endpoints on a fresh network behind the latency/bandwidth decorator, fully connected. */
async function openLinks (): Promise<{ endpoints: Endpoint[], members: string[] }> {
  const transport = chaosTransport(memoryTransport({ network: createMemoryNetwork() }), {
    seed: SEED,
    rules: [{ id: 'wan', delayMs: LATENCY_MS, bandwidthBytesPerSec: BANDWIDTH }]
  })
  const members = Array.from({ length: N }, (_, r) => `replica-${r}`)
  const endpoints: Endpoint[] = []
  for (const id of members) endpoints.push(await transport.open({ id, job: 'lowcomm', requestTimeoutMs: 60_000, sendQueueLimit: 4096 }))
  for (const a of endpoints) for (const b of endpoints) if (a !== b) a.connect(b.id, b.address)
  return { endpoints, members }
}

async function run (method: Method): Promise<RunResult> {
  const batches = Array.from({ length: N }, (_, r) => batcher(r))
  const { endpoints, members } = await openLinks()
  const rings: RingAllReduce[] = endpoints.map((endpoint) => createRingAllReduce({ members, stepTimeoutMs: 60_000 }, { endpoint }))
  const grad = new Float32Array(SIZE)
  let computeMs = 0
  let commMs = 0
  const models: TransformerLm[] = []
  const opts: OuterOptimizer[] = []
  try {
    if (method.spec === undefined) {
      // Data parallel: every replica's gradient on its own shard, ring-averaged, one shared Adam step.
      const model = newModel()
      models.push(model)
      const adam = tf.train.adam(LR)
      const grads = Array.from({ length: N }, () => new Float32Array(SIZE))
      const means = Array.from({ length: N }, () => new Float32Array(SIZE))
      for (let step = 0; step < STEPS; step++) {
        let slowest = 0
        for (let r = 0; r < N; r++) {
          const t0 = performance.now()
          await computeGradients(model, lmLoss, (batches[r] as () => SequenceBatch)(), { out: grads[r] })
          slowest = Math.max(slowest, performance.now() - t0)
        }
        const t1 = performance.now()
        await Promise.all(rings.map(async (ring, r) => await ring.reduce(grads[r] as Float32Array, means[r] as Float32Array, { round: step })))
        commMs += performance.now() - t1
        const t2 = performance.now()
        clip(means[0] as Float32Array)
        applyGradients(model, adam, means[0] as Float32Array)
        computeMs += slowest + (performance.now() - t2)
        if ((step + 1) % 50 === 0) progress(`${method.name}: step ${step + 1}/${STEPS}, comm ${(commMs / 1000).toFixed(1)} s`)
      }
      const flat = await readFlat(model, new Float32Array(SIZE))
      const v = await valLoss(flat)
      const bytes = 2 * (N - 1) * Math.ceil(SIZE / N) * 4 * STEPS
      return {
        valMean: v, valWorst: v, valOfMean: v, spread: 0, bytesPerReplica: bytes, rounds: 2 * (N - 1) * STEPS, syncs: STEPS, fallbacks: 0,
        computeS: computeMs / 1000, commS: commMs / 1000, wallS: (computeMs + commMs) / 1000
      }
    }

    const adams = Array.from({ length: N }, () => tf.train.adam(LR))
    for (let r = 0; r < N; r++) models.push(newModel())
    const initial = await readFlat(models[0] as TransformerLm, new Float32Array(SIZE))
    for (let r = 0; r < N; r++) {
      const o = createOuterOptimizer({ spec: method.spec, initial, members, seed: SEED, exchangeTimeoutMs: 60_000 },
        { endpoint: endpoints[r], allReduce: (rings[r] as RingAllReduce).reduce })
      o.start()
      opts.push(o)
    }
    const thetas = Array.from({ length: N }, () => new Float32Array(SIZE))
    for (let step = 0; step < STEPS; step++) {
      let slowest = 0
      for (let r = 0; r < N; r++) {
        const model = models[r] as TransformerLm
        const t0 = performance.now()
        await computeGradients(model, lmLoss, (batches[r] as () => SequenceBatch)(), { out: grad })
        clip(grad)
        applyGradients(model, adams[r] as tf.Optimizer, grad)
        slowest = Math.max(slowest, performance.now() - t0)
      }
      computeMs += slowest
      if (Number.isFinite(method.interval) && (step + 1) % method.interval === 0) {
        for (let r = 0; r < N; r++) await readFlat(models[r] as TransformerLm, thetas[r] as Float32Array)
        const t1 = performance.now()
        await Promise.all(opts.map(async (o, r) => await o.sync(thetas[r] as Float32Array)))
        commMs += performance.now() - t1
        for (let r = 0; r < N; r++) writeFlat(models[r] as TransformerLm, thetas[r] as Float32Array)
      }
      if ((step + 1) % 50 === 0) progress(`${method.name} H=${method.interval}: step ${step + 1}/${STEPS}, comm ${(commMs / 1000).toFixed(1)} s`)
    }
    const params = await Promise.all(models.map(async (m) => await readFlat(m, new Float32Array(SIZE))))
    const vals: number[] = []
    for (const p of params) vals.push(await valLoss(p))
    const { spread, mean } = weightSpread(params)
    const metrics = opts.map((o) => o.metrics())
    const avg = (xs: number[]): number => xs.reduce((s, x) => s + x, 0) / xs.length
    return {
      valMean: avg(vals),
      valWorst: Math.max(...vals),
      valOfMean: await valLoss(mean),
      spread,
      bytesPerReplica: avg(metrics.map((m) => m.bytesSent)),
      rounds: Math.max(...metrics.map((m) => m.rounds)),
      syncs: Number.isFinite(method.interval) ? Math.max(...metrics.map((m) => m.syncs)) : 0,
      fallbacks: metrics.reduce((s, m) => s + m.fallbacks, 0),
      computeS: computeMs / 1000,
      commS: commMs / 1000,
      wallS: (computeMs + commMs) / 1000
    }
  } finally {
    for (const o of opts) await o.stop()
    for (const r of rings) await r.stop()
    for (const e of endpoints) await e.close({ lingerMs: 0 })
    for (const m of models) m.dispose()
  }
}

// ---- main -------------------------------------------------------------------------------------
const started = performance.now()
progress(`backend ${backend.name} (matmul override ${backend.matMulOverride}); corpus vocab ${VOCAB}, ${train.size} training sequences of ${SEQ}; ` +
  `${SIZE} params; ${N} replicas × ${STEPS} steps × batch ${BATCH}; links ${LATENCY_MS} ms, ${MBIT} Mbit/s`)
// The pair-vs-all comparison first and DP (the slowest: 2(N−1) delayed rounds every step) last;
// the table is rewritten after every method, so an interrupted run still leaves its rows.
const RUN_ORDER = ['noloco', 'diloco-hb', 'diloco', 'local', 'gossip', 'noloco5', 'dp']
const results = new Map<string, RunResult>()
for (const method of [...METHODS].sort((a, b) => RUN_ORDER.indexOf(a.key) - RUN_ORDER.indexOf(b.key))) {
  const r = await run(method)
  results.set(method.key, r)
  progress(`${method.name} H=${method.interval}: val mean ${r.valMean.toFixed(4)}, worst ${r.valWorst.toFixed(4)}, wall ${r.wallS.toFixed(1)} s (${((performance.now() - started) / 1000).toFixed(0)} s elapsed)`)
  report()
}

function report (): void {
  const done = METHODS.filter((m) => results.has(m.key))
  const rows = done.map((m) => {
    const r = results.get(m.key) as RunResult
    return {
      method: m.name,
      H: Number.isFinite(m.interval) ? m.interval : '∞',
      'val loss mean': r.valMean,
      'val loss worst': r.valWorst,
      'val loss of averaged model': r.valOfMean,
      'weight spread': r.spread,
      'KiB sent / replica': r.bytesPerReplica / 1024,
      syncs: r.syncs,
      'seq. rounds': r.rounds,
      'rounds / sync': r.syncs > 0 ? r.rounds / r.syncs : 0,
      fallbacks: r.fallbacks,
      'compute s': r.computeS,
      'comm s (measured)': r.commS,
      'wall-clock s': r.wallS
    }
  })
  type Row = typeof rows[number]
  const byKey = (key: string): Row | undefined => { const i = done.findIndex((m) => m.key === key); return i < 0 ? undefined : rows[i] }
  // Each NoLoCo row against the DiLoCo row it is meant to be read against: the presets, the
  // same outer settings, and the best of each family at H = 10.
  const best = (keys: string[]): Row | undefined => keys.map(byKey).filter((r): r is Row => r !== undefined)
    .reduce<Row | undefined>((b, r) => b === undefined || r['val loss mean'] < b['val loss mean'] ? r : b, undefined)
  const comparisons: Array<[string, Row | undefined, Row | undefined]> = [
    ['presets', byKey('noloco'), byKey('diloco')],
    ['same outer settings', byKey('noloco-hb'), byKey('diloco-hb')],
    ['best of each family at H=10', best(['noloco', 'noloco-hb']), best(['diloco', 'diloco-hb'])],
    ['NoLoCo H=5 vs best DiLoCo H=10', byKey('noloco5'), best(['diloco', 'diloco-hb'])]
  ]
  const targets: string[] = []
  for (const [label, nl, diloco] of comparisons) {
    if (nl === undefined || diloco === undefined) continue
    const gap = (nl['val loss mean'] / diloco['val loss mean'] - 1) * 100
    const speed = diloco['wall-clock s'] / nl['wall-clock s']
    targets.push(`${label}: ${nl.method} H=${nl.H} vs ${diloco.method} H=${diloco.H}: validation loss ${gap >= 0 ? '+' : ''}${gap.toFixed(2)}% (within 2%: ${gap <= 2 ? 'met' : 'NOT met'}), ` +
      `${nl['rounds / sync']} round per sync vs ${diloco['rounds / sync']} = 2(N−1) (${nl['rounds / sync'] === 1 && diloco['rounds / sync'] === 2 * (N - 1) ? 'met' : 'NOT met'}), ` +
      `wall-clock ${nl['wall-clock s'].toFixed(1)} s vs ${diloco['wall-clock s'].toFixed(1)} s, ${speed.toFixed(2)}× (${speed > 1 ? 'met' : 'NOT met'})`)
  }
  const missing = METHODS.filter((m) => !results.has(m.key)).map((m) => m.key)
  const summary = [
    `${N} replicas of the @phalanx/tfjs transformer LM (${MODEL.layers} layers, d ${MODEL.dModel}, ${MODEL.heads} heads, context ${SEQ}, ${SIZE} parameters, ${backend.name} backend)`,
    `on non-IID contiguous shards of the licence-text corpus; ${STEPS} inner Adam steps per replica for every method (lr ${LR}, clip ${CLIP}, batch ${BATCH} × ${SEQ} characters);`,
    `validation on ${valBatch.size * SEQ} held-out characters. Links: chaos network decorator on the in-memory transport, ${LATENCY_MS} ms per message and ${MBIT} Mbit/s per link;`,
    `pairs exchange over it, DiLoCo and DP ring-all-reduce over it. Wall-clock = Σ per step of the slowest replica's timed inner step + every sync timed as it ran over the delayed links.`,
    `Targets: ${targets.length > 0 ? targets.join('; ') : 'not evaluated'}.`,
    missing.length > 0 ? `Not run (yet): ${missing.join(', ')}.` : '',
    `Run time ${((performance.now() - started) / 1000).toFixed(0)} s.`
  ].filter((x) => x !== '').join(' ')

  writeEvalResult('lowcomm', {
    summary,
    columns: Object.keys(rows[0] as object),
    rows,
    data: {
      settings: { replicas: N, steps: STEPS, batch: BATCH, seqLen: SEQ, lr: LR, clip: CLIP, model: MODEL, params: SIZE, latencyMs: LATENCY_MS, bandwidthMbit: MBIT, backend: backend.name, valChars: valBatch.size * SEQ },
      runs: done.map((m) => ({ key: m.key, method: m.name, H: Number.isFinite(m.interval) ? m.interval : null, spec: m.spec ?? 'data-parallel', ...results.get(m.key) }))
    }
  })
  process.stderr.write(`${summary}\n`)
}
