/**
 * Outer-optimiser specifications: one family, five named presets.
 *
 * Every `interval` inner steps each replica computes a target mean `θ̄` over a **group** (all replicas,
 * a random pair, or nobody but itself) and moves its anchor `φ` (the weights after the previous outer
 * step) towards it with learning rate `alpha` and momentum `momentum`:
 *
 * - `heavy-ball` (NoLoCo code): `m ← μ·m + α·(θ̄ − φ)`, `φ ← φ + m`
 * - `nesterov` (DiLoCo, torch `SGD(nesterov=True)` on `g = φ − θ̄`): `b ← μ·b + g`, `φ ← φ − α·(g + μ·b)`
 *
 * then the inner weights restart from the new anchor (`θ ← φ`).
 *
 * @module
 */
import { z } from 'zod'
import { InvalidConfigError } from '@phalanx/core'

/** Names of the built-in presets. */
export const OUTER_PRESET_NAMES = ['diloco', 'noloco', 'gossip', 'local-sgd', 'fedavg', 'none'] as const

/** A preset name. `fedavg` is an alias of `local-sgd`. */
export type OuterPresetName = typeof OUTER_PRESET_NAMES[number]

/** Who a replica averages with at an outer step. */
export type OuterGroup = 'all' | 'pair' | 'none'

/** How the outer momentum is applied. */
export type MomentumKind = 'nesterov' | 'heavy-ball'

/** The schema of a resolved outer-optimiser specification. Unknown keys are rejected. */
export const outerSpecSchema = z.object({
  /** Preset the values came from (informational once resolved). */
  preset: z.enum(OUTER_PRESET_NAMES).optional(),
  /** `all`: mean over every replica (injected all-reduce); `pair`: the step's random partner; `none`: itself. */
  group: z.enum(['all', 'pair', 'none']),
  /** Outer learning rate α; 1 with momentum 0 replaces the anchor by the group mean. */
  alpha: z.number().finite().gt(0).max(2),
  /** Outer momentum μ, in [0, 1). */
  momentum: z.number().finite().min(0).lt(1),
  /** `nesterov` (DiLoCo) or `heavy-ball` (NoLoCo). */
  kind: z.enum(['nesterov', 'heavy-ball']),
  /** Inner steps between outer steps (H). */
  interval: z.number().int().min(1).max(1_000_000)
}).strict()

/** A resolved, validated outer-optimiser specification. */
export type OuterSpec = z.infer<typeof outerSpecSchema>

/** What a user may write: a preset name, or a preset plus overrides, or a complete spec. */
export type OuterSpecInput = OuterPresetName | (Partial<OuterSpec> & { preset?: OuterPresetName })

/**
 * The preset values.
 * - `diloco`: all replicas, α 0.7, μ 0.9, Nesterov, H 500 (DiLoCo paper / OpenDiLoCo defaults).
 * - `noloco`: random pair with a per-replica anchor, α 0.7, μ 0.5, heavy-ball, H 50 (gensyn-ai/noloco `_mean` configs).
 * - `gossip`: random pair averaging (α 1, μ 0), H 50.
 * - `local-sgd` / `fedavg`: all-replica averaging (α 1, μ 0), H 50.
 * - `none`: no communication; the outer step leaves the weights as they are (α 1, μ 0 over the replica itself).
 */
export const OUTER_PRESETS: Readonly<Record<OuterPresetName, OuterSpec>> = Object.freeze({
  diloco: { preset: 'diloco', group: 'all', alpha: 0.7, momentum: 0.9, kind: 'nesterov', interval: 500 },
  noloco: { preset: 'noloco', group: 'pair', alpha: 0.7, momentum: 0.5, kind: 'heavy-ball', interval: 50 },
  gossip: { preset: 'gossip', group: 'pair', alpha: 1, momentum: 0, kind: 'heavy-ball', interval: 50 },
  'local-sgd': { preset: 'local-sgd', group: 'all', alpha: 1, momentum: 0, kind: 'heavy-ball', interval: 50 },
  fedavg: { preset: 'fedavg', group: 'all', alpha: 1, momentum: 0, kind: 'heavy-ball', interval: 50 },
  none: { preset: 'none', group: 'none', alpha: 1, momentum: 0, kind: 'heavy-ball', interval: 1 }
})

/**
 * Resolves a preset name or a (preset +) overrides object into a validated {@link OuterSpec}.
 * Without a preset every field must be given.
 *
 * @throws {InvalidConfigError} listing every problem in `details.issues`
 */
export function resolveOuterSpec (input: OuterSpecInput): OuterSpec {
  const raw: unknown = typeof input === 'string' ? { preset: input } : input
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new InvalidConfigError('Outer optimiser spec must be a preset name or an object', { details: { issues: ['spec: not an object'] } })
  }
  const presetName = (raw as { preset?: unknown }).preset
  let base: Partial<OuterSpec> = {}
  if (presetName !== undefined) {
    if (typeof presetName !== 'string' || !(OUTER_PRESET_NAMES as readonly string[]).includes(presetName)) {
      const issue = `preset: unknown "${String(presetName)}"; expected one of ${OUTER_PRESET_NAMES.join(', ')}`
      throw new InvalidConfigError(`Invalid outer optimiser spec: ${issue}`, { details: { issues: [issue] } })
    }
    base = OUTER_PRESETS[presetName as OuterPresetName]
  }
  const merged: Record<string, unknown> = { ...base }
  for (const [k, v] of Object.entries(raw)) if (v !== undefined) merged[k] = v
  const parsed = outerSpecSchema.safeParse(merged)
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || 'spec'}: ${i.message}`)
    throw new InvalidConfigError(`Invalid outer optimiser spec:\n  ${issues.join('\n  ')}`, { details: { issues } })
  }
  return parsed.data
}
