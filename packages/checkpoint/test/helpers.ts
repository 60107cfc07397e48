import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createStateDict, type StateDict, mulberry32 } from '@phalanx/core'

/** A deterministic state whose every value depends on (step, tensor, index). */
export function makeState (step: number, sizes: readonly number[] = [1000, 37, 4096, 1]): StateDict {
  const random = mulberry32((step * 2654435761) >>> 0)
  const next = (): number => random() - 0.5
  const tensors = sizes.map((n, i) => ({ name: `layer${i}/w`, shape: i === 0 && n % 10 === 0 ? [10, n / 10] : [n], dtype: 'float32' as const, data: Float32Array.from({ length: n }, next) }))
  return createStateDict(tensors, { step, epoch: 1, cursor: step * 32, rng: { s: step } })
}

export async function tempDir (prefix = 'phx-ckpt-'): Promise<{ dir: string, cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  return { dir, cleanup: async () => { await rm(dir, { recursive: true, force: true }) } }
}
