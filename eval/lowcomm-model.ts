/**
 * A character-level MLP language model in plain Float32Array math (forward, backward, Adam), used
 * by the `lowcomm` evaluation: context of `context` characters → embeddings → tanh hidden layer →
 * softmax over the vocabulary. Small enough that 8 replicas × several methods train in minutes
 * on a shared 2-core machine.
 */
import { mulberry32 } from '@phalanx/core'

export interface MlpShape {
  vocab: number
  context: number
  embed: number
  hidden: number
}

export interface Layout {
  emb: number
  w1: number
  b1: number
  w2: number
  b2: number
  size: number
}

export function layoutOf (s: MlpShape): Layout {
  const emb = 0
  const w1 = emb + s.vocab * s.embed
  const b1 = w1 + s.context * s.embed * s.hidden
  const w2 = b1 + s.hidden
  const b2 = w2 + s.hidden * s.vocab
  return { emb, w1, b1, w2, b2, size: b2 + s.vocab }
}


export function initParams (s: MlpShape, seed: number): Float32Array {
  const l = layoutOf(s)
  const p = new Float32Array(l.size)
  const r = mulberry32(seed)
  const normal = (): number => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r())
  for (let i = l.emb; i < l.w1; i++) p[i] = 0.1 * normal()
  const s1 = 1 / Math.sqrt(s.context * s.embed)
  for (let i = l.w1; i < l.b1; i++) p[i] = s1 * normal()
  const s2 = 1 / Math.sqrt(s.hidden)
  for (let i = l.w2; i < l.b2; i++) p[i] = 0.5 * s2 * normal()
  return p
}

/** Reusable work buffers for a batch of up to `batch` examples. */
export interface Workspace {
  x: Float32Array
  h: Float32Array
  logits: Float64Array
  dh: Float64Array
}

export function workspace (s: MlpShape, batch: number): Workspace {
  return {
    x: new Float32Array(batch * s.context * s.embed),
    h: new Float32Array(batch * s.hidden),
    logits: new Float64Array(s.vocab),
    dh: new Float64Array(s.hidden)
  }
}

/**
 * Mean cross-entropy of predicting `tokens[pos + context]` from `tokens[pos .. pos+context)` for each
 * position; when `grad` is given, also its gradient (overwritten).
 */
export function lossAndGrad (s: MlpShape, p: Float32Array, tokens: Uint8Array, positions: ArrayLike<number>, ws: Workspace, grad?: Float32Array): number {
  const l = layoutOf(s)
  const { context: C, embed: D, hidden: H, vocab: V } = s
  const CD = C * D
  const B = positions.length
  if (grad !== undefined) grad.fill(0)
  let loss = 0
  const { x, h, logits, dh } = ws
  for (let b = 0; b < B; b++) {
    const pos = positions[b] as number
    const xo = b * CD
    for (let c = 0; c < C; c++) {
      const t = tokens[pos + c] as number
      x.set(p.subarray(l.emb + t * D, l.emb + (t + 1) * D), xo + c * D)
    }
    const ho = b * H
    for (let j = 0; j < H; j++) h[ho + j] = p[l.b1 + j] as number
    for (let i = 0; i < CD; i++) {
      const xi = x[xo + i] as number
      const row = l.w1 + i * H
      for (let j = 0; j < H; j++) h[ho + j] = (h[ho + j] as number) + xi * (p[row + j] as number)
    }
    for (let j = 0; j < H; j++) h[ho + j] = Math.tanh(h[ho + j] as number)
    for (let v = 0; v < V; v++) logits[v] = p[l.b2 + v] as number
    for (let j = 0; j < H; j++) {
      const hj = h[ho + j] as number
      const row = l.w2 + j * V
      for (let v = 0; v < V; v++) logits[v] = (logits[v] as number) + hj * (p[row + v] as number)
    }
    let max = -Infinity
    for (let v = 0; v < V; v++) if ((logits[v] as number) > max) max = logits[v] as number
    let z = 0
    for (let v = 0; v < V; v++) {
      const e = Math.exp((logits[v] as number) - max)
      logits[v] = e
      z += e
    }
    const target = tokens[pos + C] as number
    loss += -Math.log((logits[target] as number) / z)
    if (grad === undefined) continue
    // dlogits = softmax - onehot, scaled by 1/B
    const inv = 1 / (z * B)
    for (let v = 0; v < V; v++) logits[v] = (logits[v] as number) * inv
    logits[target] = (logits[target] as number) - 1 / B
    for (let v = 0; v < V; v++) grad[l.b2 + v] = (grad[l.b2 + v] as number) + (logits[v] as number)
    for (let j = 0; j < H; j++) {
      const hj = h[ho + j] as number
      const row = l.w2 + j * V
      let acc = 0
      for (let v = 0; v < V; v++) {
        const d = logits[v] as number
        grad[row + v] = (grad[row + v] as number) + hj * d
        acc += d * (p[row + v] as number)
      }
      dh[j] = acc * (1 - hj * hj)
    }
    for (let j = 0; j < H; j++) grad[l.b1 + j] = (grad[l.b1 + j] as number) + (dh[j] as number)
    for (let i = 0; i < CD; i++) {
      const xi = x[xo + i] as number
      const row = l.w1 + i * H
      let acc = 0
      for (let j = 0; j < H; j++) {
        const d = dh[j] as number
        grad[row + j] = (grad[row + j] as number) + xi * d
        acc += d * (p[row + j] as number)
      }
      const c = Math.floor(i / D)
      const t = tokens[pos + c] as number
      const e = l.emb + t * D + (i - c * D)
      grad[e] = (grad[e] as number) + acc
    }
  }
  return loss / B
}

/** Adam with global-norm clipping, state per replica (never averaged). */
export interface Adam {
  step(p: Float32Array, g: Float32Array): void
}

export function createAdam (size: number, lr: number, clip = 1, beta1 = 0.9, beta2 = 0.999, eps = 1e-8): Adam {
  const m = new Float32Array(size)
  const v = new Float32Array(size)
  let t = 0
  return {
    step (p, g) {
      let norm = 0
      for (let i = 0; i < size; i++) norm += (g[i] as number) ** 2
      norm = Math.sqrt(norm)
      const scale = norm > clip ? clip / norm : 1
      t++
      const c1 = 1 - beta1 ** t
      const c2 = 1 - beta2 ** t
      for (let i = 0; i < size; i++) {
        const gi = (g[i] as number) * scale
        const mi = beta1 * (m[i] as number) + (1 - beta1) * gi
        const vi = beta2 * (v[i] as number) + (1 - beta2) * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = (p[i] as number) - lr * (mi / c1) / (Math.sqrt(vi / c2) + eps)
      }
    }
  }
}
