/**
 * Slow, textbook float64 reference implementations of every rule, written directly from the
 * definitions (vectors as number[][], distances computed coordinate by coordinate, subsets
 * enumerated, the Flag Aggregator's SVD done in d-space). The fast kernels are checked against these.
 */
type Vec = number[]

const sub = (a: Vec, b: Vec): Vec => a.map((v, k) => v - b[k]!)
const add = (a: Vec, b: Vec): Vec => a.map((v, k) => v + b[k]!)
const scale = (a: Vec, s: number): Vec => a.map((v) => v * s)
const dot = (a: Vec, b: Vec): number => a.reduce((s, v, k) => s + v * b[k]!, 0)
const norm = (a: Vec): number => Math.sqrt(dot(a, a))
const sq = (a: Vec, b: Vec): number => dot(sub(a, b), sub(a, b))

export function refMean (xs: Vec[]): Vec {
  return scale(xs.reduce(add), 1 / xs.length)
}

function column (xs: Vec[], k: number): number[] {
  return xs.map((x) => x[k]!).sort((a, b) => a - b)
}

export function refMedian (xs: Vec[]): Vec {
  return xs[0]!.map((_, k) => {
    const c = column(xs, k)
    const h = Math.floor(c.length / 2)
    return c.length % 2 === 1 ? c[h]! : (c[h - 1]! + c[h]!) / 2
  })
}

export function refTrMean (xs: Vec[], f: number): Vec {
  return xs[0]!.map((_, k) => {
    const c = column(xs, k).slice(f, xs.length - f)
    return c.reduce((s, v) => s + v, 0) / c.length
  })
}

function krumScoresRef (xs: Vec[], f: number, neighbours = 1): number[] {
  return xs.map((x, i) => {
    const ds = xs.filter((_, j) => j !== i).map((y) => sq(x, y)).sort((a, b) => a - b)
    return ds.slice(0, Math.max(0, xs.length - f - neighbours)).reduce((s, v) => s + v, 0)
  })
}

function argsortStable (v: number[]): number[] {
  return v.map((_, i) => i).sort((a, b) => v[a]! - v[b]! || a - b)
}

export function refKrum (xs: Vec[], f: number, neighbours = 1): Vec {
  return xs[argsortStable(krumScoresRef(xs, f, neighbours))[0]!]!
}

export function refMultiKrum (xs: Vec[], f: number, m = xs.length - f): Vec {
  return refMean(argsortStable(krumScoresRef(xs, f)).slice(0, m).map((i) => xs[i]!))
}

export function refBulyan (xs: Vec[], f: number): Vec {
  let remaining = xs.map((x, i) => ({ x, i }))
  const selected: Array<{ x: Vec, i: number }> = []
  for (let t = 0; t < xs.length - 2 * f; t++) {
    const scores = krumScoresRef(remaining.map((r) => r.x), f)
    const best = argsortStable(scores)[0]!
    selected.push(remaining[best]!)
    remaining = remaining.filter((_, j) => j !== best)
  }
  const s = selected.sort((a, b) => a.i - b.i).map((r) => r.x)
  const beta = s.length - 2 * f
  const med = refMedian(s)
  return xs[0]!.map((_, k) => {
    const vals = column(s, k)
    const closest = vals.map((v) => ({ v, d: Math.abs(v - med[k]!) })).sort((a, b) => a.d - b.d || a.v - b.v).slice(0, beta)
    return closest.reduce((acc, c) => acc + c.v, 0) / beta
  })
}

export function refGeometricMedian (xs: Vec[], nu = 0.1, T = 3): Vec {
  let z = xs[0]!.map(() => 0)
  for (let t = 0; t < T; t++) {
    const betas = xs.map((x) => 1 / Math.max(nu, norm(sub(x, z))))
    const total = betas.reduce((s, b) => s + b, 0)
    z = xs.map((x, i) => scale(x, betas[i]! / total)).reduce(add)
  }
  return z
}

export function refCenteredClipping (xs: Vec[], tau = 100, L = 1, init: 'zero' | 'mean' = 'zero'): Vec {
  let v = init === 'mean' ? refMean(xs) : xs[0]!.map(() => 0)
  for (let l = 0; l < L; l++) {
    const steps = xs.map((x) => {
      const diff = sub(x, v)
      const n = norm(diff)
      return scale(diff, n === 0 ? 1 : Math.min(1, tau / n))
    })
    v = add(v, refMean(steps))
  }
  return v
}

function combinations (n: number, k: number): number[][] {
  if (k === 0) return [[]]
  const out: number[][] = []
  for (let i = 0; i <= n - k; i++) {
    for (const rest of combinations(n - i - 1, k - 1)) out.push([i, ...rest.map((r) => r + i + 1)])
  }
  return out
}

export function refMda (xs: Vec[], f: number): Vec {
  let best: number[] = []
  let bestDiam = Infinity
  for (const subset of combinations(xs.length, xs.length - f)) {
    let diam = 0
    for (const a of subset) for (const b of subset) diam = Math.max(diam, sq(xs[a]!, xs[b]!))
    if (diam < bestDiam) {
      bestDiam = diam
      best = subset
    }
  }
  return refMean(best.map((i) => xs[i]!))
}

export function refNnm (xs: Vec[], f: number): Vec[] {
  return xs.map((x) => refMean(argsortStable(xs.map((y) => sq(x, y))).slice(0, xs.length - f).map((j) => xs[j]!)))
}

export function refClipping (xs: Vec[], c = 2): Vec[] {
  return xs.map((x) => scale(x, Math.min(1, c / norm(x))))
}

export function refArc (xs: Vec[], f: number): Vec[] {
  const n = xs.length
  const k = Math.floor(2 * f * (n - f) / n)
  const norms = xs.map(norm)
  const order = norms.map((_, i) => i).sort((a, b) => norms[b]! - norms[a]! || a - b)
  if (k === 0 || k >= n) return xs
  const threshold = norms[order[k]!]!
  const clipped = new Set(order.slice(0, k))
  return xs.map((x, i) => clipped.has(i) ? scale(x, Math.min(1, threshold / norms[i]!)) : x)
}

export function refBucketing (xs: Vec[], s: number, perm: ArrayLike<number>): Vec[] {
  const out: Vec[] = []
  for (let start = 0; start < xs.length; start += s) {
    const group: Vec[] = []
    for (let t = start; t < Math.min(xs.length, start + s); t++) group.push(xs[perm[t]!]!)
    out.push(refMean(group))
  }
  return out
}

/** Cyclic Jacobi on a small symmetric matrix: eigenpairs sorted by descending value. */
function eigenRef (a: number[][]): Array<{ value: number, vector: number[] }> {
  const m = a.length
  const s = a.map((r) => [...r])
  const v: number[][] = s.map((_, i) => s.map((__, j) => i === j ? 1 : 0))
  for (let sweep = 0; sweep < 60; sweep++) {
    for (let p = 0; p < m; p++) {
      for (let q = p + 1; q < m; q++) {
        if (Math.abs(s[p]![q]!) < 1e-300) continue
        const theta = (s[q]![q]! - s[p]![p]!) / (2 * s[p]![q]!)
        const t = (theta >= 0 ? 1 : -1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1))
        const c = 1 / Math.sqrt(t * t + 1)
        const sn = t * c
        for (const row of s) { const x = row[p]!; const y = row[q]!; row[p] = c * x - sn * y; row[q] = sn * x + c * y }
        const rp = s[p]!.map((x, k) => c * x - sn * s[q]![k]!)
        const rq = s[q]!.map((y, k) => sn * s[p]![k]! + c * y)
        s[p] = rp; s[q] = rq
        for (const row of v) { const x = row[p]!; const y = row[q]!; row[p] = c * x - sn * y; row[q] = sn * x + c * y }
      }
    }
  }
  return s.map((_, i) => ({ value: s[i]![i]!, vector: v.map((row) => row[i]!) })).sort((x, y) => y.value - x.value)
}

/**
 * The released Flag Aggregator in d-space: weighted unit columns, Y = top-r left singular vectors
 * (eigenvectors of A Aᵀ, d × d), IRLS with the "return the previous Y if E did not decrease" rule,
 * output (1/r) Σ Y Yᵀ x̂_i. Y₀ is orthogonal to the data (all projections 0).
 */
export function refFlag (xs: Vec[], r = 1, iterations = 1, eps = 1e-7): Vec {
  const d = xs[0]!.length
  const unit = xs.map((x) => scale(x, 1 / Math.max(norm(x), 1e-12)))
  let vsq = unit.map(() => 0)
  let energy = vsq.reduce((s, v) => s + Math.sqrt(Math.max(0, 1 - v)), 0)
  let Y: Vec[] | undefined
  for (let it = 0; it < iterations; it++) {
    const cols = unit.map((u, i) => scale(u, (Math.abs(1 - vsq[i]!) + eps) ** -0.25))
    const aat = Array.from({ length: d }, (_, a) => Array.from({ length: d }, (__, b) => cols.reduce((s, c) => s + c[a]! * c[b]!, 0)))
    const eig = eigenRef(aat)
    const top = eig[0]!.value
    const ys = eig.slice(0, r).filter((e) => e.value > 1e-12 * top).map((e) => e.vector)
    const next = unit.map((u) => ys.reduce((s, y) => s + dot(y, u) ** 2, 0))
    const nextEnergy = next.reduce((s, v) => s + Math.sqrt(Math.max(0, 1 - v)), 0)
    const decrease = energy - nextEnergy
    if (!(decrease > 0)) break
    Y = ys
    vsq = next
    energy = nextEnergy
    if (decrease <= 1e-10) break
  }
  if (Y === undefined) return xs[0]!.map(() => 0)
  const ys = Y
  return scale(unit.map((u) => ys.map((y) => scale(y, dot(y, u))).reduce(add, u.map(() => 0))).reduce(add), 1 / r)
}
