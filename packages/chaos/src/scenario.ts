/**
 * Scenario files: the job to run, the faults and when they fire, and the invariants the run must
 * keep. YAML or JSON, validated with zod; every problem is reported at once with its path
 * (`faults.1.at: exactly one of step, steps, everySteps, everyMs, poisson`).
 *
 * @module
 */
import { readFile } from 'node:fs/promises'
import { extname } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { z } from 'zod'
import { InvalidConfigError, type AbortOptions } from '@phalanx/core'

const nonneg = z.number().int().nonnegative()
const ms = z.number().nonnegative().finite()
const probability = z.number().min(0).max(1)

const scheduleSchema = z.object({
  step: nonneg.optional(),
  steps: z.array(nonneg).min(1).max(10_000).optional(),
  everySteps: z.number().int().positive().optional(),
  fromStep: nonneg.optional(),
  everyMs: z.number().positive().finite().optional(),
  startMs: ms.optional(),
  count: z.number().int().positive().max(10_000).optional(),
  poisson: z.object({ ratePerSec: z.number().positive().finite(), count: z.number().int().positive().max(10_000), startMs: ms.optional(), endMs: ms.optional() }).strict().optional()
}).strict().superRefine((s, ctx) => {
  const kinds = (['step', 'steps', 'everySteps', 'everyMs', 'poisson'] as const).filter((k) => s[k] !== undefined)
  if (kinds.length !== 1) ctx.addIssue({ code: 'custom', message: `exactly one of step, steps, everySteps, everyMs, poisson (got ${kinds.length === 0 ? 'none' : kinds.join(', ')})` })
  if (s.everyMs !== undefined && s.count === undefined) ctx.addIssue({ code: 'custom', path: ['count'], message: 'everyMs needs a count (schedules are bounded)' })
})

const targetSchema = z.union([
  z.enum(['random-worker', 'coordinator', 'all-workers', 'job']),
  z.object({ id: z.string().min(1).max(128) }).strict(),
  z.object({ rank: nonneg }).strict(),
  z.object({ group: z.string().min(1).max(128) }).strict()
], { error: 'expected random-worker, coordinator, all-workers, job, { id }, { rank } or { group }' })

/** Who a fault hits. */
export type TargetSpec = z.infer<typeof targetSchema>

const base = {
  /** Name in the report. */
  name: z.string().max(128).optional(),
  at: scheduleSchema,
  target: targetSchema.optional()
}
/** How long a reversible fault lasts: ms, or until a committed step. */
const duration = {
  durationMs: ms.optional(),
  untilStep: nonneg.optional()
}

const linkFields = {
  delayMs: ms.optional(),
  jitterMs: ms.optional(),
  drop: probability.optional(),
  duplicate: probability.optional(),
  reorder: probability.optional(),
  reorderMs: ms.optional(),
  corrupt: probability.optional(),
  corruptBits: z.number().int().positive().max(64).optional(),
  bandwidthBytesPerSec: z.number().positive().finite().optional(),
  burstBytes: z.number().int().positive().optional(),
  to: z.union([z.string(), z.array(z.string())]).optional(),
  types: z.array(z.string().min(1).max(64)).optional()
}

const faultSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('kill'), ...base, restartAfterMs: ms.optional() }).strict(),
  z.object({ kind: z.literal('crash'), ...base, message: z.string().max(256).optional() }).strict(),
  z.object({ kind: z.literal('hang'), ...base, durationMs: ms }).strict(),
  z.object({ kind: z.literal('stall'), ...base, durationMs: z.number().positive().max(60_000) }).strict(),
  z.object({ kind: z.literal('join'), ...base, id: z.string().min(1).max(128).optional() }).strict(),
  z.object({ kind: z.literal('network'), ...base, ...duration, ...linkFields }).strict(),
  z.object({ kind: z.literal('partition'), ...base, ...duration, groups: z.array(z.array(z.string().min(1)).min(1)).min(2) }).strict(),
  z.object({ kind: z.literal('byzantine'), ...base, ...duration, attack: z.object({ name: z.string().min(1) }).passthrough() }).strict(),
  z.object({ kind: z.literal('label-flip'), ...base, ...duration, classes: z.number().int().min(2) }).strict(),
  z.object({
    kind: z.literal('disk'), ...base, ...duration,
    fault: z.enum(['enospc', 'slow-fsync', 'truncate', 'corrupt']),
    path: z.string().optional(), probability: probability.optional(), count: z.number().int().positive().optional(),
    delayMs: ms.optional(), keepFraction: z.number().min(0).lt(1).optional(), bits: z.number().int().positive().optional()
  }).strict(),
  z.object({ kind: z.literal('clock-skew'), ...base, ...duration, offsetMs: z.number().finite().optional(), driftPpm: z.number().gt(-1e6).finite().optional() }).strict()
], { error: 'kind must be one of kill, crash, hang, stall, join, network, partition, byzantine, label-flip, disk, clock-skew' })

/** One fault of a scenario. */
export type ScenarioFault = z.infer<typeof faultSchema>

const invariantsSchema = z.object({
  /** The job trains all its steps within `timeoutMs`. */
  finishes: z.boolean().default(true),
  /** The committed step count never decreases and every step is committed exactly once. */
  committedMonotonic: z.boolean().default(true),
  /** Final committed = job steps. */
  allStepsCommitted: z.boolean().default(true),
  /** Final weights are bit-identical to the fault-free baseline (deterministic mode). */
  bitIdentical: z.boolean().default(false),
  /** Final loss at most `baseline × (1 + maxRelativeIncrease)` (+ `maxAbsoluteIncrease`). */
  loss: z.object({ maxRelativeIncrease: z.number().nonnegative().default(0), maxAbsoluteIncrease: z.number().nonnegative().default(0) }).strict().optional(),
  /** Nothing the driver started is still running after it stopped. */
  noProcessLeak: z.boolean().default(true),
  /** Recovery time bound: p99 of the recoveries' total time (suspicion to first commit). */
  mttr: z.object({ p99Ms: z.number().positive() }).strict().optional(),
  /** At least this many recoveries must be observed (proves the faults hit). */
  minRecoveries: nonneg.optional(),
  /** Gives up after this long. */
  timeoutMs: z.number().int().positive().max(3_600_000).default(60_000)
}).strict()

/** The invariants of a scenario, defaults filled in. */
export type Invariants = z.infer<typeof invariantsSchema>

const jobSchema = z.object({
  /**
   * What the job is: the elastic data-parallel job (coordinator + workers), a pipeline with stage
   * recovery, NoLoCo replicas with an outer optimiser, or hosts protecting their state with
   * erasure-coded in-memory snapshots. `job.config` holds the kind's settings
   * ({@link pipelineJobConfigSchema}, {@link nolocoJobConfigSchema}, {@link erasureJobConfigSchema}).
   */
  kind: z.enum(['elastic', 'pipeline', 'noloco', 'erasure']).default('elastic'),
  workers: z.number().int().min(1).max(4096).default(3),
  steps: z.number().int().min(1).max(10_000_000).default(30),
  minWorkers: z.number().int().min(1).optional(),
  maxWorkers: z.number().int().min(1).optional(),
  deterministic: z.boolean().default(true),
  seed: nonneg.default(0),
  /** False disables failure detection and recovery: the control that must fail. */
  recovery: z.boolean().default(true),
  /** Configuration overrides for the launcher (merged over the preset). */
  config: z.record(z.string(), z.unknown()).default({})
}).strict()

/** The scenario schema. */
export const scenarioSchema = z.object({
  name: z.string().min(1).max(128).regex(/^[A-Za-z0-9._-]+$/, 'only letters, digits, dot, dash and underscore'),
  description: z.string().max(4096).optional(),
  /** Seed of every fault decision (targets, schedules, network draws). */
  seed: nonneg.default(0),
  job: jobSchema.default({ kind: 'elastic', workers: 3, steps: 30, deterministic: true, seed: 0, recovery: true, config: {} }),
  faults: z.array(faultSchema).max(1000).default([]),
  invariants: invariantsSchema.default({ finishes: true, committedMonotonic: true, allStepsCommitted: true, bitIdentical: false, noProcessLeak: true, timeoutMs: 60_000 }),
  /** Expected verdict: `fail` marks a control scenario that proves the checker catches a broken run. */
  expect: z.enum(['pass', 'fail']).default('pass')
}).strict()

/** A validated scenario, defaults filled in. */
export type Scenario = z.infer<typeof scenarioSchema>
/** A scenario as written (defaults optional). */
export type ScenarioInput = z.input<typeof scenarioSchema>

/**
 * Validates a scenario object.
 * @throws {InvalidConfigError} listing every problem as `path: message` in `details.issues`
 */
export function parseScenario (value: unknown, source = 'scenario'): Scenario {
  const r = scenarioSchema.safeParse(value)
  if (!r.success) {
    const issues = r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`)
    throw new InvalidConfigError(`Invalid ${source}:\n  ${issues.join('\n  ')}`, { details: { issues } })
  }
  const s = r.data
  const issues: string[] = []
  const min = s.job.minWorkers ?? 1
  if (min > s.job.workers) issues.push(`job.minWorkers: ${min} exceeds job.workers (${s.job.workers})`)
  s.faults.forEach((f, i) => {
    const steps = [f.at.step, ...(f.at.steps ?? [])].filter((x): x is number => x !== undefined)
    for (const st of steps) if (st >= s.job.steps) issues.push(`faults.${i}.at: step ${st} is not before the job's last step (${s.job.steps})`)
    if ('untilStep' in f && f.untilStep !== undefined && steps.some((st) => f.untilStep !== undefined && f.untilStep <= st)) issues.push(`faults.${i}.untilStep: ${f.untilStep} must come after the fault's step`)
  })
  if (s.invariants.bitIdentical && !s.job.deterministic) issues.push('invariants.bitIdentical: needs job.deterministic: true')
  if (s.job.kind !== 'elastic') {
    const r = (s.job.kind === 'pipeline' ? pipelineJobConfigSchema : s.job.kind === 'noloco' ? nolocoJobConfigSchema : erasureJobConfigSchema).safeParse(s.job.config)
    // The kind's defaults are filled in, so drivers read a complete configuration.
    if (r.success) s.job.config = r.data
    else issues.push(...r.error.issues.map((i) => `job.config${i.path.length === 0 ? '' : '.' + i.path.join('.')}: ${i.message} (job.kind ${s.job.kind})`))
  }
  if (issues.length > 0) throw new InvalidConfigError(`Invalid ${source}:\n  ${issues.join('\n  ')}`, { details: { issues } })
  return s
}

/** Parses scenario text: YAML (which includes JSON). */
export function parseScenarioText (text: string, source = 'scenario'): Scenario {
  let value: unknown
  try {
    value = parseYaml(text)
  } catch (cause) {
    throw new InvalidConfigError(`${source} is not valid YAML/JSON: ${(cause as Error).message}`, { cause, details: { issues: [`(root): ${(cause as Error).message}`] } })
  }
  return parseScenario(value, source)
}

/** Reads and validates a `.yaml`, `.yml` or `.json` scenario file. */
export async function loadScenario (path: string, options: AbortOptions = {}): Promise<Scenario> {
  const ext = extname(path).toLowerCase()
  if (!['.yaml', '.yml', '.json'].includes(ext)) throw new InvalidConfigError(`${path}: a scenario file ends in .yaml, .yml or .json`)
  const text = await readFile(path, { encoding: 'utf8', ...(options.signal === undefined ? {} : { signal: options.signal }) })
  return parseScenarioText(text, path)
}

/**
 * `job.config` of a `job.kind: pipeline` scenario: a tiny transformer LM cut into `stages` stages
 * (`createLocalPipeline` of `@phalanx/pipeline`), trained for `job.steps` pipeline steps.
 */
export const pipelineJobConfigSchema = z.object({
  /** Number of stages. */
  stages: z.number().int().min(2).max(16).default(4),
  /** Data-parallel replicas of each stage (one entry per stage). @default one each */
  replicas: z.array(z.number().int().min(1).max(8)).optional(),
  /** Strategy for a stage that lost every replica (a surviving replica is copied exactly first, unless `preferReplica` is false). */
  recovery: z.enum(['checkfree', 'checkfree-plus', 'random', 'rollback']).default('checkfree-plus'),
  /** Neighbour weighting of the CheckFree average. */
  weighting: z.enum(['gradNorm', 'uniform']).default('gradNorm'),
  /** Copy a surviving data-parallel replica when one exists. */
  preferReplica: z.boolean().default(true),
  /** Pipeline schedule. */
  schedule: z.enum(['gpipe', '1f1b']).default('1f1b'),
  /** Micro-batches per step. */
  microBatches: z.number().int().min(1).max(64).default(4),
  /** Sequences per micro-batch. */
  microBatchSize: z.number().int().min(1).max(64).default(2),
  /** CheckFree+ out-of-order execution of odd micro-batches. */
  outOfOrder: z.boolean().default(false),
  /** Neighbours keep embedding / head copies (CheckFree+ edge recovery). */
  edgeReplicas: z.boolean().default(false),
  /** Model width. */
  dModel: z.number().int().min(4).max(256).default(16),
  /** Transformer blocks (at least one per stage). @default stages */
  layers: z.number().int().min(1).max(64).optional(),
  /** Sequence length. */
  seqLen: z.number().int().min(2).max(128).default(8),
  /** Adam learning rate. */
  lr: z.number().positive().max(1).default(0.01),
  /** Deadline of one step's requests (a hung stage is found lost after it). */
  stepTimeoutMs: z.number().int().positive().max(600_000).default(5_000),
  /** How long a member may take to answer the liveness probe after a failed step. */
  probeTimeoutMs: z.number().int().positive().max(60_000).default(500)
}).strict().superRefine((c, ctx) => {
  if (c.replicas !== undefined && c.replicas.length !== c.stages) ctx.addIssue({ code: 'custom', path: ['replicas'], message: `needs one entry per stage (${c.stages}), got ${c.replicas.length}` })
  if (c.layers !== undefined && c.layers < c.stages) ctx.addIssue({ code: 'custom', path: ['layers'], message: `needs at least one block per stage (${c.stages}), got ${c.layers}` })
  if (c.outOfOrder && c.stages < 4) ctx.addIssue({ code: 'custom', path: ['outOfOrder'], message: 'out-of-order training needs at least 4 stages' })
  if (c.dModel % 2 !== 0) ctx.addIssue({ code: 'custom', path: ['dModel'], message: 'must be even (2 attention heads)' })
})

/** `job.config` of a pipeline scenario, defaults filled in. */
export type PipelineJobConfig = z.infer<typeof pipelineJobConfigSchema>

/**
 * `job.config` of a `job.kind: noloco` scenario: `replicas` replicas each training a small
 * regression model with their own SGD, and every `interval` inner steps an outer round of the
 * `@phalanx/optim` outer optimiser (`preset`); membership from the coordinator's replica
 * membership service. `job.steps` counts outer rounds.
 */
export const nolocoJobConfigSchema = z.object({
  /** Replicas started at once. */
  replicas: z.number().int().min(2).max(64).default(8),
  /** Inner steps per outer round (H). */
  interval: z.number().int().min(1).max(1000).default(5),
  /** Outer optimiser preset (the pair-exchange and local ones; the all-reduce presets need a ring, not wired here). */
  preset: z.enum(['noloco', 'gossip', 'none']).default('noloco'),
  /** Parameters of the regression model. */
  dim: z.number().int().min(1).max(4096).default(16),
  /** Inner SGD learning rate. */
  lr: z.number().positive().max(1).default(0.05),
  /** Deadline of one pair exchange or all-reduce (a dead partner falls back to a local step after it). */
  exchangeTimeoutMs: z.number().int().positive().max(60_000).default(1_000),
  /** Replica heartbeat interval of the membership service. */
  heartbeatIntervalMs: z.number().int().positive().max(10_000).default(20),
  /** A replica silent this long is declared failed. */
  suspectAfterMs: z.number().int().positive().max(60_000).default(200)
}).strict()

/** `job.config` of a NoLoCo scenario, defaults filled in. */
export type NolocoJobConfig = z.infer<typeof nolocoJobConfigSchema>

/**
 * `job.config` of a `job.kind: erasure` scenario: `hosts` hosts in one erasure group, each holding a
 * state of `stateFloats` floats that it updates once per step and protects with an erasure-coded
 * in-memory snapshot (`createErasureMember` of `@phalanx/checkpoint/erasure`); lost hosts are rebuilt
 * from the survivors' pieces (`createErasureL1Source`). `job.steps` counts snapshot rounds.
 */
export const erasureJobConfigSchema = z.object({
  /** Hosts of the group (k + m of the scheme). */
  hosts: z.number().int().min(2).max(32).default(6),
  /** Code of the group. @default `chooseScheme(hosts)` (6–9 hosts: RS(4,2)) */
  scheme: z.object({ kind: z.enum(['replication', 'xor', 'rs']), k: z.number().int().min(1).max(24), m: z.number().int().min(1).max(8) }).strict().optional(),
  /** Failure domains (racks): host i is in `rack-(i mod racks)`, the target of `{ group }` kills. */
  racks: z.number().int().min(1).max(32).default(3),
  /** Floats of each host's state. */
  stateFloats: z.number().int().min(1).max(4_194_304).default(65_536),
  /** Bytes of an exchange chunk (CRC, fetch and decode unit; a multiple of 8). */
  chunkBytes: z.number().int().min(64).max(8_388_608).multipleOf(8).default(16_384),
  /** Losses seen within this window are rebuilt together (the failure detector's delay), ms. */
  detectMs: z.number().int().nonnegative().max(10_000).default(50),
  /** How long a snapshot may take to be prepared by every member before it is skipped, ms. */
  prepareTimeoutMs: z.number().int().positive().max(60_000).default(1_000),
  /** How long a member may take to answer the rebuild probe, ms. */
  probeTimeoutMs: z.number().int().positive().max(60_000).default(300)
}).strict().superRefine((c, ctx) => {
  if (c.scheme !== undefined && c.scheme.k + c.scheme.m !== c.hosts) ctx.addIssue({ code: 'custom', path: ['scheme'], message: `k + m must equal hosts (${c.hosts}), got ${c.scheme.k + c.scheme.m}` })
  if (c.scheme?.kind === 'xor' && c.scheme.m !== 1) ctx.addIssue({ code: 'custom', path: ['scheme', 'm'], message: 'xor has m = 1' })
  if (c.scheme?.kind === 'replication' && (c.scheme.k !== 1 || c.scheme.m !== 1)) ctx.addIssue({ code: 'custom', path: ['scheme'], message: 'replication is k = m = 1' })
})

/** `job.config` of an erasure scenario, defaults filled in. */
export type ErasureJobConfig = z.infer<typeof erasureJobConfigSchema>
