/**
 * Byzantine attacks (ByzFL names and defaults): each builds the f Byzantine vectors from the honest
 * ones, deterministically from a seed. Label flipping is a data-level attack: {@link flipLabels}
 * turns a worker's labels y into C − 1 − y before it computes its gradient.
 *
 * @module
 */
import { z } from 'zod'
import { InvalidConfigError, InvalidParametersError } from '@phalanx/core'
import { assertInputs } from './kernels.js'
import { createRng } from './rng.js'

const finite = z.number().finite()
const attackSchema = z.discriminatedUnion('name', [
  z.object({ name: z.literal('SignFlipping') }).strict(),
  z.object({ name: z.literal('Gaussian'), mu: finite.optional(), sigma: z.number().nonnegative().finite().optional() }).strict(),
  z.object({ name: z.literal('ALittleIsEnough'), tau: finite.optional(), z: z.literal('baruch').optional() }).strict(),
  z.object({ name: z.literal('InnerProductManipulation'), tau: finite.optional() }).strict(),
  z.object({ name: z.literal('Mimic'), idx: z.number().int().nonnegative().optional() }).strict(),
  z.object({ name: z.literal('ConstantDirection'), value: finite.optional() }).strict(),
  z.object({ name: z.literal('Inf') }).strict()
])

/**
 * An attack with its parameters:
 * - `SignFlipping`: −x̄_H.
 * - `Gaussian`: independent N(mu, sigma²) per coordinate and attacker. `mu` @default 0, `sigma` @default 1.
 * - `ALittleIsEnough` (ALIE): x̄_H + τ·σ_H (per-coordinate honest std, ddof 1). `tau` @default 1.5;
 *   `z: 'baruch'` uses z_max = Φ⁻¹((n − f − s)/(n − f)), s = ⌊n/2 + 1⌋ − f, instead of tau.
 * - `InnerProductManipulation` (IPM): −τ·x̄_H. `tau` @default 2 (the epfml papers use 0.1).
 * - `Mimic`: a copy of honest input `idx`. `idx` @default 0.
 * - `ConstantDirection`: every coordinate equal to `value`. `value` @default 10.
 * - `Inf`: every coordinate +∞.
 */
export type AttackSpec = z.infer<typeof attackSchema>

/** Every attack name `createAttack` accepts (plus the data-level `LabelFlipping` via {@link flipLabels}). */
export const ATTACK_NAMES = ['SignFlipping', 'Gaussian', 'ALittleIsEnough', 'InnerProductManipulation', 'Mimic', 'ConstantDirection', 'Inf'] as const

const ALIASES: Readonly<Record<string, string>> = { ALIE: 'ALittleIsEnough', IPM: 'InnerProductManipulation', SignFlip: 'SignFlipping' }

/** Options of {@link Attack.generate}. */
export interface AttackOptions {
  /** Seed of the attack's randomness (Gaussian). @default 0 */
  seed?: number
}

/** A Byzantine attack: given the honest inputs, the f vectors the attackers send. */
export interface Attack {
  readonly name: string
  generate(honest: readonly Float32Array[], f: number, options?: AttackOptions): Float32Array[]
}

/** Per-coordinate mean and (ddof 1) standard deviation of the honest inputs, in float64. */
export function honestMoments (honest: readonly Float32Array[]): { mean: Float64Array, std: Float64Array } {
  const h = honest.length
  const d = (honest[0] as Float32Array).length
  const mean = new Float64Array(d)
  const std = new Float64Array(d)
  for (const x of honest) for (let k = 0; k < d; k++) mean[k]! += x[k]!
  for (let k = 0; k < d; k++) mean[k] = mean[k]! / h
  if (h > 1) {
    for (const x of honest) {
      for (let k = 0; k < d; k++) {
        const e = x[k]! - mean[k]!
        std[k]! += e * e
      }
    }
    for (let k = 0; k < d; k++) std[k] = Math.sqrt(std[k]! / (h - 1))
  }
  return { mean, std }
}

/** The ALIE z of Baruch et al. for n inputs of which f are Byzantine: Φ⁻¹((n − f − s)/(n − f)), s = ⌊n/2 + 1⌋ − f. */
export function alieZ (n: number, f: number): number {
  const s = Math.floor(n / 2 + 1) - f
  return inverseNormalCdf((n - f - s) / (n - f))
}

/** Φ⁻¹(p) by Acklam's rational approximation (relative error < 1.2e-9). */
export function inverseNormalCdf (p: number): number {
  if (p <= 0) return -Infinity
  if (p >= 1) return Infinity
  const a = [-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00]
  const b = [-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01, -1.328068155288572e+01]
  const c = [-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00]
  const d = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00]
  const low = 0.02425
  if (p < low) {
    const q = Math.sqrt(-2 * Math.log(p))
    return (((((c[0]! * q + c[1]!) * q + c[2]!) * q + c[3]!) * q + c[4]!) * q + c[5]!) / ((((d[0]! * q + d[1]!) * q + d[2]!) * q + d[3]!) * q + 1)
  }
  if (p <= 1 - low) {
    const q = p - 0.5
    const r = q * q
    return (((((a[0]! * r + a[1]!) * r + a[2]!) * r + a[3]!) * r + a[4]!) * r + a[5]!) * q / (((((b[0]! * r + b[1]!) * r + b[2]!) * r + b[3]!) * r + b[4]!) * r + 1)
  }
  const q = Math.sqrt(-2 * Math.log(1 - p))
  return -(((((c[0]! * q + c[1]!) * q + c[2]!) * q + c[3]!) * q + c[4]!) * q + c[5]!) / ((((d[0]! * q + d[1]!) * q + d[2]!) * q + d[3]!) * q + 1)
}

/** Validates an unknown value as an {@link AttackSpec}; throws `InvalidConfigError` listing the valid names. */
export function parseAttackSpec (value: unknown): AttackSpec {
  let input = value
  if (typeof value === 'object' && value !== null && typeof (value as { name?: unknown }).name === 'string') {
    const alias = ALIASES[(value as { name: string }).name]
    if (alias !== undefined) input = { ...value, name: alias }
  }
  const result = attackSchema.safeParse(input)
  if (result.success) return result.data
  const issues = result.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`)
  throw new InvalidConfigError(`Invalid attack spec: ${issues.join('; ')}. Attacks: ${ATTACK_NAMES.join(', ')}`, { details: { issues, attacks: [...ATTACK_NAMES] } })
}

/**
 * Creates an attack from its spec.
 *
 * @example
 * ```ts
 * const alie = createAttack({ name: 'ALittleIsEnough', z: 'baruch' })
 * const byzantine = alie.generate(honestGradients, 3)
 * ```
 */
export function createAttack (spec: AttackSpec | Record<string, unknown>): Attack {
  const parsed = parseAttackSpec(spec)
  const filled = (d: number, f: number, value: (k: number) => number): Float32Array[] => {
    const v = new Float32Array(d)
    for (let k = 0; k < d; k++) v[k] = value(k)
    return Array.from({ length: f }, () => v.slice())
  }
  const generate = (honest: readonly Float32Array[], f: number, options: AttackOptions = {}): Float32Array[] => {
    if (!Number.isInteger(f) || f < 0) throw new InvalidParametersError(`f must be a non-negative integer, got ${f}`)
    if (honest.length === 0) throw new InvalidParametersError('An attack needs at least one honest input')
    const d = (honest[0] as Float32Array).length
    assertInputs(honest, d)
    switch (parsed.name) {
      case 'SignFlipping': {
        const { mean } = honestMoments(honest)
        return filled(d, f, (k) => -mean[k]!)
      }
      case 'InnerProductManipulation': {
        const { mean } = honestMoments(honest)
        const tau = parsed.tau ?? 2
        return filled(d, f, (k) => -tau * mean[k]!)
      }
      case 'ALittleIsEnough': {
        const { mean, std } = honestMoments(honest)
        const tau = parsed.z === 'baruch' ? alieZ(honest.length + f, f) : parsed.tau ?? 1.5
        return filled(d, f, (k) => mean[k]! + tau * std[k]!)
      }
      case 'Gaussian': {
        const rng = createRng(options.seed ?? 0)
        const mu = parsed.mu ?? 0
        const sigma = parsed.sigma ?? 1
        return Array.from({ length: f }, () => Float32Array.from({ length: d }, () => mu + sigma * rng.normal()))
      }
      case 'Mimic': {
        const idx = parsed.idx ?? 0
        const src = honest[idx]
        if (src === undefined) throw new InvalidParametersError(`Mimic idx ${idx} is not an honest input (there are ${honest.length})`)
        return Array.from({ length: f }, () => src.slice())
      }
      case 'ConstantDirection': {
        const value = parsed.value ?? 10
        return filled(d, f, () => value)
      }
      case 'Inf':
        return filled(d, f, () => Infinity)
    }
  }
  return { name: parsed.name, generate }
}

/** Label flipping: writes C − 1 − y for every label (into `out`, or a new array). */
export function flipLabels (labels: ArrayLike<number>, classes = 10, out?: Int32Array): Int32Array {
  const result = out ?? new Int32Array(labels.length)
  if (result.length !== labels.length) throw new InvalidParametersError(`Output has ${result.length} labels, input has ${labels.length}`)
  for (let i = 0; i < labels.length; i++) result[i] = classes - 1 - labels[i]!
  return result
}
