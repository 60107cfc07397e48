/**
 * The job configuration schema, its presets, and the checks that reject configurations that cannot
 * work (most importantly, timeouts that contradict each other).
 *
 * A configuration is resolved in three layers: the preset's values, then the user's file, then
 * flags. {@link resolveConfig} merges and validates them; every problem found is reported at once in
 * an {@link InvalidConfigError} whose `details.issues` lists `path: message` strings.
 *
 * @module
 */
import { z } from 'zod'
import { InvalidConfigError } from './errors.js'

/** Names of the built-in presets. */
export const PRESET_NAMES = ['local', 'lan', 'wan'] as const
/** A preset name: `local` (one machine), `lan` (a cluster), `wan` (hosts across the internet). */
export type PresetName = typeof PRESET_NAMES[number]

const positiveMs = z.number().int().positive()

/** Timeouts, from the fastest to the slowest; {@link resolveConfig} enforces their order. */
export const timeoutsSchema = z.object({
  /** How often workers send heartbeats. */
  heartbeatIntervalMs: positiveMs,
  /** Silence after which a member is suspected; at least 3 heartbeat intervals. */
  suspectAfterMs: positiveMs,
  /** Deadline of a single request (join, heal chunk, vote). */
  requestTimeoutMs: positiveMs,
  /** Upper bound on a training step before the hang detector may act regardless of statistics. */
  stepTimeoutMs: positiveMs,
  /** How long the coordinator waits for `minWorkers` to join before failing the rendezvous. */
  rendezvousTimeoutMs: positiveMs,
  /** How long a closing socket may keep sending queued messages. */
  closeLingerMs: z.number().int().nonnegative()
}).strict()

/** Timeouts section of the configuration. */
export type TimeoutsConfig = z.infer<typeof timeoutsSchema>

/** Transport section of the configuration. */
export const transportSchema = z.object({
  /** Which transport to use between processes. */
  kind: z.enum(['zmq', 'memory']),
  /** Largest tensor frame, bytes. */
  maxFrameBytes: z.number().int().min(4096).max(256 * 1024 * 1024),
  /** Largest message, bytes. */
  maxMessageBytes: z.number().int().min(4096),
  /** Messages queued per peer before sends fail with `QueueFullError`. */
  sendQueueLimit: z.number().int().min(1).max(1_000_000),
  /** CURVE encryption and authentication (required across untrusted networks). */
  curve: z.object({
    enabled: z.boolean(),
    /** Z85 key file of this process (`*.key`, mode 0600). */
    keyFile: z.string().optional(),
    /** Z85 public keys allowed to connect to a server endpoint. */
    allow: z.array(z.string().length(40)).optional(),
    /** Z85 public key of the server this process dials. */
    serverKey: z.string().length(40).optional()
  }).strict()
}).strict()

/** Transport section of the configuration. */
export type TransportConfig = z.infer<typeof transportSchema>

/** Job section: what is trained and by how many workers. */
export const jobSchema = z.object({
  /** Job id; stamped on every message. */
  id: z.string().min(1).max(128).regex(/^[A-Za-z0-9._-]+$/, 'only letters, digits, dot, dash and underscore'),
  /** Fewest workers that may form a quorum. */
  minWorkers: z.number().int().min(1),
  /** Most workers admitted; later joiners wait as spares. */
  maxWorkers: z.number().int().min(1),
  /** Samples per optimiser step, constant whatever the membership. */
  globalBatch: z.number().int().min(1),
  /** Samples per micro-batch, the unit of work redistributed among members. */
  microBatch: z.number().int().min(1),
  /** Optimiser steps to train. */
  steps: z.number().int().min(1),
  /** Seed of the data order and of every random choice. */
  seed: z.number().int().nonnegative(),
  /** Canonical reduction order so that failures do not change a single bit of the result. */
  deterministic: z.boolean()
}).strict()

/** Job section of the configuration. */
export type JobConfig = z.infer<typeof jobSchema>

/**
 * Aggregation rule of the job's reduce: `{ name, ...params }` as `createAggregator` of
 * `@phalanx/aggregate` takes it (e.g. `{ name: 'Krum', f: 1 }`). Only the name is checked here;
 * the rule's own parser validates the whole spec when the job is composed.
 */
export const aggregatorConfigSchema = z.object({ name: z.string() }).passthrough()

/** Aggregator section of the configuration. */
export type AggregatorConfig = z.infer<typeof aggregatorConfigSchema>

/** The whole configuration. */
export const configSchema = z.object({
  preset: z.enum(PRESET_NAMES),
  job: jobSchema,
  timeouts: timeoutsSchema,
  transport: transportSchema,
  log: z.object({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']) }).strict(),
  /** The reduce's aggregation rule; every preset uses the plain mean, `{ name: 'Average' }`. */
  aggregator: aggregatorConfigSchema
}).strict()

/** A fully resolved, validated configuration. */
export type PhalanxConfig = z.infer<typeof configSchema>

/** Anything a user may write: every field optional, at any depth. */
export type ConfigInput = { [K in keyof PhalanxConfig]?: PhalanxConfig[K] extends object ? Partial<PhalanxConfig[K]> : PhalanxConfig[K] }

const BASE_JOB: JobConfig = {
  id: 'phalanx', minWorkers: 1, maxWorkers: 64, globalBatch: 256, microBatch: 32, steps: 100, seed: 0, deterministic: true
}
const BASE_TRANSPORT: TransportConfig = {
  kind: 'zmq', maxFrameBytes: 8 * 1024 * 1024, maxMessageBytes: 1024 * 1024 * 1024, sendQueueLimit: 64, curve: { enabled: false }
}

/** The preset values. `local` reacts fastest; `wan` tolerates slow, lossy links. */
export const PRESETS: Readonly<Record<PresetName, PhalanxConfig>> = {
  local: {
    preset: 'local',
    job: BASE_JOB,
    timeouts: { heartbeatIntervalMs: 100, suspectAfterMs: 500, requestTimeoutMs: 2_000, stepTimeoutMs: 60_000, rendezvousTimeoutMs: 60_000, closeLingerMs: 200 },
    transport: BASE_TRANSPORT,
    log: { level: 'info' },
    aggregator: { name: 'Average' }
  },
  lan: {
    preset: 'lan',
    job: BASE_JOB,
    timeouts: { heartbeatIntervalMs: 200, suspectAfterMs: 1_500, requestTimeoutMs: 5_000, stepTimeoutMs: 300_000, rendezvousTimeoutMs: 300_000, closeLingerMs: 500 },
    transport: BASE_TRANSPORT,
    log: { level: 'info' },
    aggregator: { name: 'Average' }
  },
  wan: {
    preset: 'wan',
    job: BASE_JOB,
    timeouts: { heartbeatIntervalMs: 1_000, suspectAfterMs: 10_000, requestTimeoutMs: 30_000, stepTimeoutMs: 900_000, rendezvousTimeoutMs: 900_000, closeLingerMs: 2_000 },
    transport: { ...BASE_TRANSPORT, curve: { enabled: true } },
    log: { level: 'info' },
    aggregator: { name: 'Average' }
  }
}

/** Cross-field rules: each returns problems as `path: message`. */
function consistencyIssues (c: PhalanxConfig): string[] {
  const issues: string[] = []
  const t = c.timeouts
  if (t.suspectAfterMs < 3 * t.heartbeatIntervalMs) {
    issues.push(`timeouts.suspectAfterMs: ${t.suspectAfterMs} ms must be at least 3 × heartbeatIntervalMs (${3 * t.heartbeatIntervalMs} ms), or one late heartbeat evicts a healthy worker`)
  }
  if (t.requestTimeoutMs <= t.heartbeatIntervalMs) {
    issues.push(`timeouts.requestTimeoutMs: ${t.requestTimeoutMs} ms must exceed heartbeatIntervalMs (${t.heartbeatIntervalMs} ms)`)
  }
  if (t.stepTimeoutMs <= t.suspectAfterMs) {
    issues.push(`timeouts.stepTimeoutMs: ${t.stepTimeoutMs} ms must exceed suspectAfterMs (${t.suspectAfterMs} ms): a hang cannot be declared before a crash could be`)
  }
  if (t.stepTimeoutMs <= t.requestTimeoutMs) {
    issues.push(`timeouts.stepTimeoutMs: ${t.stepTimeoutMs} ms must exceed requestTimeoutMs (${t.requestTimeoutMs} ms): a step is made of requests`)
  }
  if (t.rendezvousTimeoutMs < t.suspectAfterMs) {
    issues.push(`timeouts.rendezvousTimeoutMs: ${t.rendezvousTimeoutMs} ms must be at least suspectAfterMs (${t.suspectAfterMs} ms)`)
  }
  if (t.closeLingerMs > t.requestTimeoutMs) {
    issues.push(`timeouts.closeLingerMs: ${t.closeLingerMs} ms must not exceed requestTimeoutMs (${t.requestTimeoutMs} ms)`)
  }
  const j = c.job
  if (j.minWorkers > j.maxWorkers) issues.push(`job.minWorkers: ${j.minWorkers} exceeds job.maxWorkers (${j.maxWorkers})`)
  if (j.globalBatch % j.microBatch !== 0) {
    issues.push(`job.globalBatch: ${j.globalBatch} is not a multiple of job.microBatch (${j.microBatch}); the global batch is split into whole micro-batches`)
  } else if (j.globalBatch / j.microBatch < j.minWorkers) {
    issues.push(`job.globalBatch: ${j.globalBatch / j.microBatch} micro-batches cannot give each of job.minWorkers (${j.minWorkers}) workers one`)
  }
  const tr = c.transport
  if (tr.maxFrameBytes > tr.maxMessageBytes) issues.push(`transport.maxFrameBytes: ${tr.maxFrameBytes} exceeds transport.maxMessageBytes (${tr.maxMessageBytes})`)
  if (tr.curve.enabled && tr.kind === 'memory') issues.push('transport.curve.enabled: CURVE applies to the zmq transport only')
  return issues
}

function isPlainObject (v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** Merges `over` into `base` recursively (objects merge, everything else replaces). Inputs are not changed. */
export function mergeConfig<T> (base: T, over: unknown): T {
  if (!isPlainObject(base) || !isPlainObject(over)) return (over === undefined ? base : over) as T
  const out: Record<string, unknown> = { ...base }
  for (const [k, v] of Object.entries(over)) out[k] = v === undefined ? out[k] : mergeConfig(out[k], v)
  return out as T
}

/**
 * Resolves a configuration: preset (from `input.preset`, default `local`), then each of `layers`
 * merged over it in order, then schema and consistency checks.
 *
 * @throws {InvalidConfigError} listing every problem in `details.issues`
 */
export function resolveConfig (...layers: unknown[]): PhalanxConfig {
  let presetName: unknown = 'local'
  for (const layer of layers) if (isPlainObject(layer) && layer.preset !== undefined) presetName = layer.preset
  if (typeof presetName !== 'string' || !(PRESET_NAMES as readonly string[]).includes(presetName)) {
    throw new InvalidConfigError(`Unknown preset "${String(presetName)}"; expected one of ${PRESET_NAMES.join(', ')}`, { details: { issues: [`preset: unknown "${String(presetName)}"`] } })
  }
  let merged: unknown = PRESETS[presetName as PresetName]
  for (const layer of layers) merged = mergeConfig(merged, layer)
  const parsed = configSchema.safeParse(merged)
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`)
    throw new InvalidConfigError(`Invalid configuration:\n  ${issues.join('\n  ')}`, { details: { issues } })
  }
  const issues = consistencyIssues(parsed.data)
  if (issues.length > 0) throw new InvalidConfigError(`Inconsistent configuration:\n  ${issues.join('\n  ')}`, { details: { issues } })
  return parsed.data
}
