import type { Endpoint } from '@phalanx/core'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'

/** Deterministic pseudo-random vector in [-0.5, 0.5) (an LCG: the tests need values, not quality). */
export function rand (n: number, seed: number): Float32Array {
  let s = seed >>> 0
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    out[i] = s / 4294967296 - 0.5
  }
  return out
}

/**
 * Opens `n` endpoints `r0..r{n-1}` on a fresh in-memory network, every one connected to every other;
 * each close is pushed onto `cleanup` for the test's afterEach.
 */
export async function openMesh (n: number, job: string, cleanup: Array<() => Promise<void>>): Promise<{ ids: string[], endpoints: Endpoint[] }> {
  const transport = memoryTransport({ network: createMemoryNetwork() })
  const ids = Array.from({ length: n }, (_, i) => `r${i}`)
  const endpoints: Endpoint[] = []
  for (const id of ids) {
    const ep = await transport.open({ id, job })
    endpoints.push(ep)
    cleanup.push(async () => { await ep.close({ lingerMs: 0 }) })
  }
  for (const a of endpoints) for (const b of endpoints) if (a !== b) a.connect(b.id, b.address)
  return { ids, endpoints }
}
