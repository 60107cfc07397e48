/**
 * NoLoCo in one process: 8 replicas fit y = w·x on different (non-IID) slices of the data with
 * their own SGD, and every 10 steps each one exchanges weights with one random partner only, over
 * the in-memory transport. Halfway through, one replica dies; its partner falls back to a local
 * outer step and everybody else carries on. Run: `npx tsx examples/optim-noloco.ts`.
 */
import type { Endpoint } from '@phalanx/core'
import { createOuterOptimizer, type OuterOptimizer } from '@phalanx/optim'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'

const REPLICAS = 8
const DIM = 16
const STEPS = 200
/** Step index at which replica-3 dies: just before the outer step that ends step 110. */
const CRASH = 109
const trueW = Float32Array.from({ length: DIM }, (_, i) => Math.sin(i + 1))

/** A deterministic value in [-1, 1) for (index, replica). */
function noise (index: number, replica: number): number {
  let h = Math.imul(index ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(replica + 1, 0xc2b2ae35)
  h ^= h >>> 15
  h = Math.imul(h, 0x27d4eb2d)
  h ^= h >>> 13
  return (h >>> 0) / 2147483648 - 1
}

/** Replica r sees inputs biased towards its own coordinates: every replica alone learns a skewed w. */
function gradient (w: Float32Array, replica: number, step: number, out: Float32Array): void {
  out.fill(0)
  for (let b = 0; b < 8; b++) {
    const x = Float32Array.from({ length: DIM }, (_, i) => noise((step * 8 + b) * DIM + i, replica) + (i % REPLICAS === replica ? 2 : 0))
    let err = 0
    for (let i = 0; i < DIM; i++) err += ((w[i] as number) - (trueW[i] as number)) * (x[i] as number)
    for (let i = 0; i < DIM; i++) out[i] = (out[i] as number) + err * (x[i] as number) / 8
  }
}

const transport = memoryTransport({ network: createMemoryNetwork() })
const members = Array.from({ length: REPLICAS }, (_, r) => `replica-${r}`)
const endpoints: Endpoint[] = []
for (const id of members) endpoints.push(await transport.open({ id, job: 'noloco-example' }))
for (const a of endpoints) for (const b of endpoints) if (a !== b) a.connect(b.id, b.address)

const initial = new Float32Array(DIM)
const weights = members.map(() => initial.slice())
const outers: OuterOptimizer[] = endpoints.map((endpoint) =>
  createOuterOptimizer({ spec: { preset: 'noloco', interval: 10 }, initial, members, seed: 42, exchangeTimeoutMs: 2000 }, { endpoint }))
for (const o of outers) o.start()

const alive = new Set(members.map((_, r) => r))
const grad = new Float32Array(DIM)
try {
  for (let step = 0; step < STEPS; step++) {
    if (step === CRASH) {
      // replica-3 crashes just before an outer step; its partner must not hang.
      alive.delete(3)
      await outers[3]?.stop()
      await endpoints[3]?.close({ lingerMs: 0 })
    }
    for (const r of alive) {
      gradient(weights[r] as Float32Array, r, step, grad)
      const w = weights[r] as Float32Array
      for (let i = 0; i < DIM; i++) w[i] = (w[i] as number) - 0.05 * (grad[i] as number)
    }
    const reports = await Promise.all([...alive].map(async (r) => await outers[r]?.step(weights[r] as Float32Array)))
    for (const rep of reports) {
      if (rep?.mode === 'fallback') console.log(`step ${step + 1}: exchange with ${rep.partner} failed (${rep.reason}); local outer step instead`)
    }
    // The coordinator publishes the survivors as membership view 1, effective from the next outer
    // round on every replica (a round boundary, so all of them pair by the same list).
    if (step === CRASH) {
      const next = outers[[...alive][0] as number]?.round ?? 0
      for (const r of alive) outers[r]?.setMembers(members.filter((_, k) => k !== 3), { version: 1, round: next })
    }
  }
  for (const r of alive) {
    const w = weights[r] as Float32Array
    let dist = 0
    for (let i = 0; i < DIM; i++) dist += ((w[i] as number) - (trueW[i] as number)) ** 2
    const m = outers[r]?.metrics()
    console.log(`${members[r]}: |w − w*| = ${Math.sqrt(dist).toFixed(4)}, syncs ${m?.syncs}, fallbacks ${m?.fallbacks}, sit-outs ${m?.sitOuts}, ` +
      `sent ${((m?.bytesSent ?? 0) / 1024).toFixed(1)} KiB in ${m?.rounds} rounds`)
  }
} finally {
  for (const o of outers) await o.stop()
  for (const e of endpoints) await e.close({ lingerMs: 0 })
}
