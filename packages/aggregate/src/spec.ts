/**
 * Aggregator specifications: ByzFL names and defaults, validated with zod. A spec is a plain
 * JSON-able object `{ name, ...params, pre?: [...] }`, so it can live in a job configuration.
 *
 * @module
 */
import { z } from 'zod'
import { InvalidConfigError } from '@phalanx/core'

const count = z.number().int().nonnegative()
const positive = z.number().positive().finite()
const neighbours = z.enum(['n-f-1', 'n-f-2'])
const bound = z.enum(['theory', 'byzfl'])

/** Names of the pre-aggregators. */
export const PRE_AGGREGATOR_NAMES = ['NNM', 'Bucketing', 'Clipping', 'ARC'] as const

const preSchema = z.discriminatedUnion('name', [
  z.object({ name: z.literal('NNM'), f: count.optional() }).strict(),
  z.object({ name: z.literal('Bucketing'), s: z.number().int().positive().optional() }).strict(),
  z.object({ name: z.literal('Clipping'), c: positive.optional() }).strict(),
  z.object({ name: z.literal('ARC'), f: count.optional() }).strict()
])

/**
 * A pre-aggregator applied before the rule:
 * - `NNM` (nearest-neighbour mixing): each input replaced by the mean of its n − f nearest inputs. `f` @default the rule's f
 * - `Bucketing`: seeded shuffle, then means of groups of `s`. `s` @default 1
 * - `Clipping`: static clipping to norm `c`. `c` @default 2
 * - `ARC` (adaptive robust clipping): the ⌊2f(n−f)/n⌋ largest inputs clipped to the largest remaining norm. `f` @default the rule's f
 */
export type PreAggregatorSpec = z.infer<typeof preSchema>

const common = { f: count.optional(), pre: z.array(preSchema).optional() }

const ruleSchema = z.discriminatedUnion('name', [
  z.object({ name: z.literal('Average'), pre: common.pre }).strict(),
  z.object({ name: z.literal('Median'), ...common }).strict(),
  z.object({ name: z.literal('TrMean'), ...common }).strict(),
  z.object({ name: z.literal('Krum'), ...common, neighbours: neighbours.optional(), bound: bound.optional() }).strict(),
  z.object({ name: z.literal('MultiKrum'), ...common, m: z.number().int().positive().optional(), neighbours: neighbours.optional(), bound: bound.optional() }).strict(),
  z.object({ name: z.literal('Bulyan'), ...common, neighbours: neighbours.optional() }).strict(),
  z.object({ name: z.literal('GeometricMedian'), ...common, nu: positive.optional(), T: z.number().int().positive().optional() }).strict(),
  z.object({ name: z.literal('CenteredClipping'), ...common, tau: positive.optional(), L: z.number().int().positive().optional(), init: z.enum(['zero', 'mean', 'medoid']).optional() }).strict(),
  z.object({ name: z.literal('MDA'), ...common, maxSubsets: z.number().int().positive().optional() }).strict(),
  z.object({
    name: z.literal('FlagAggregator'),
    ...common,
    r: z.number().int().positive().optional(),
    lambda: z.number().nonnegative().finite().optional(),
    iterations: z.number().int().positive().optional(),
    eps: positive.optional(),
    scale: z.enum(['reference', 'medianNorm']).optional()
  }).strict()
])

/**
 * An aggregation rule with its parameters (ByzFL names and defaults). Every rule takes `f` (the
 * number of Byzantine inputs it must tolerate, @default 0) and `pre` (pre-aggregators applied in
 * order, @default none). Rule parameters:
 * - `Average`: the plain mean (tolerates f = 0; the non-robust control).
 * - `Median`: coordinate-wise median (even n: mean of the two middle values).
 * - `TrMean`: coordinate-wise mean after dropping the f lowest and f highest values.
 * - `Krum` / `MultiKrum`: `neighbours` 'n-f-1' (ByzFL, @default) or 'n-f-2' (Blanchard et al.);
 *   `bound` 'theory' (n ≥ 2f + 3, @default) or 'byzfl' (n ≥ 2f + 1); MultiKrum `m` @default n − f.
 * - `Bulyan`: n − 2f Krum rounds, then per coordinate the mean of the n − 4f values closest to the median. `neighbours` as Krum.
 * - `GeometricMedian`: smoothed Weiszfeld from 0. `nu` @default 0.1, `T` @default 3.
 * - `CenteredClipping`: `tau` @default 100, `L` @default 1, `init` 'zero' (@default) | 'mean' | 'medoid'.
 * - `MDA`: minimum-diameter averaging over subsets of n − f inputs. `maxSubsets` @default 1e6.
 * - `FlagAggregator`: `r` @default 1, `lambda` @default 0, `iterations` (IRLS) @default 1, `eps` @default 1e-7,
 *   `scale` 'reference' (@default, the released code's unit-vector output) | 'medianNorm'.
 */
export type AggregatorSpec = z.infer<typeof ruleSchema>

/** Every rule name `createAggregator` accepts. */
export const AGGREGATOR_NAMES = ['Average', 'Median', 'TrMean', 'Krum', 'MultiKrum', 'Bulyan', 'GeometricMedian', 'CenteredClipping', 'MDA', 'FlagAggregator'] as const

/** Accepted alternative names, mapped to the ByzFL name. */
const ALIASES: Readonly<Record<string, string>> = { CenteredClip: 'CenteredClipping', Mean: 'Average', GM: 'GeometricMedian', FA: 'FlagAggregator' }

/** Validates an unknown value as an {@link AggregatorSpec}; throws `InvalidConfigError` listing every problem and the valid names. */
export function parseAggregatorSpec (value: unknown): AggregatorSpec {
  let input = value
  if (typeof value === 'object' && value !== null && typeof (value as { name?: unknown }).name === 'string') {
    const alias = ALIASES[(value as { name: string }).name]
    if (alias !== undefined) input = { ...value, name: alias }
  }
  const result = ruleSchema.safeParse(input)
  if (result.success) return result.data
  const issues = result.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`)
  throw new InvalidConfigError(
    `Invalid aggregator spec: ${issues.join('; ')}. Rules: ${AGGREGATOR_NAMES.join(', ')}; pre-aggregators: ${PRE_AGGREGATOR_NAMES.join(', ')}`,
    { details: { issues, rules: [...AGGREGATOR_NAMES], pre: [...PRE_AGGREGATOR_NAMES] } })
}
