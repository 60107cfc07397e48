/**
 * The elastic data-parallel protocol spoken between `@phalanx/coordinator` and `@phalanx/worker`
 * (and among workers): message type names and the schemas of their bodies. Every body received
 * from a peer is parsed with these schemas before it is used; see docs/elastic.md for the full
 * protocol (rendezvous, quorum/epoch, sharded reduce, two-phase commit, healing).
 *
 * @module
 */
import { z } from 'zod'

/** Message types of the elastic protocol. */
export const ElasticMessage = {
  /** worker → coordinator (request): ask to take part. Exempt from epoch fencing. */
  join: 'join',
  /** worker → coordinator (request): liveness and progress; the reply carries the coordinator's view. Exempt from fencing. */
  heartbeat: 'heartbeat',
  /** worker → coordinator: graceful departure. Exempt from fencing. */
  leave: 'leave',
  /** worker → coordinator: vote for the step after the all-gather, with the checksum of the aggregated gradient. */
  ready: 'ready',
  /** coordinator → worker: the quorum of a new epoch. */
  quorum: 'quorum',
  /** coordinator → worker: the step is committed; apply it. */
  commit: 'commit',
  /** coordinator → worker: the job has trained all its steps. */
  done: 'done',
  /** coordinator → worker: a restarted coordinator asks known members to join again. */
  rejoin: 'rejoin',
  /** worker → shard owner: this worker's gradient slices of the owner's shard (reduce-scatter). */
  grad: 'grad',
  /** shard owner → shard owners: partial Gram matrix of the owner's shard (robust rules only). */
  gram: 'gram',
  /** shard owner → worker: the aggregated slice of the owner's shard (all-gather). */
  agg: 'agg',
  /** healer → healthy peer (request): layout, meta and chunk checksums of the committed state. */
  healMeta: 'heal-meta',
  /** healer → healthy peer (request): one chunk of the committed flat state. */
  healChunk: 'heal-chunk'
} as const

/** Message types the coordinator admits whatever their epoch. */
export const ELASTIC_FENCE_EXEMPT: readonly string[] = [ElasticMessage.join, ElasticMessage.heartbeat, ElasticMessage.leave]

const id = z.string().min(1).max(128)
const count = z.number().int().nonnegative()

/** What a worker is doing, reported in its heartbeats (the hang detector blames by phase). */
export const workerPhaseSchema = z.enum(['idle', 'heal', 'compute', 'exchange', 'voted'])
/** What a worker is doing. */
export type WorkerPhase = z.infer<typeof workerPhaseSchema>

/** Body of `join`. */
export const joinBodySchema = z.object({
  id,
  address: z.string().min(1).max(1024),
  /** Random per process start, so a quick restart is not mistaken for the old process. */
  incarnation: z.string().min(1).max(64),
  /** Length of the flat parameter (gradient) vector. */
  size: count,
  /** Committed steps this worker's state holds. */
  committed: count,
  /** Step whose aggregated gradient the worker holds, voted but not yet known committed. */
  pending: count.optional(),
  /** Free-form capabilities (e.g. a relative speed hint). */
  capabilities: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).optional()
}).strict()
/** Body of `join`. */
export type JoinBody = z.infer<typeof joinBodySchema>

/** Reply to `join`. */
export const joinReplySchema = z.object({
  /** `member`: in the current quorum; `pending`: admitted at the next step boundary; `spare`: waits for a free seat. */
  role: z.enum(['member', 'pending', 'spare']),
  epoch: count,
  committed: count
}).strict()
/** Reply to `join`. */
export type JoinReply = z.infer<typeof joinReplySchema>

/** Body of `heartbeat`. */
export const heartbeatBodySchema = z.object({
  incarnation: z.string().min(1).max(64),
  epoch: count,
  step: count,
  committed: count,
  pending: count.optional(),
  phase: workerPhaseSchema
}).strict()
/** Body of `heartbeat`. */
export type HeartbeatBody = z.infer<typeof heartbeatBodySchema>

/** One member of a quorum. */
export const quorumMemberSchema = z.object({ id, address: z.string().min(1).max(1024), rank: count }).strict()
/** One member of a quorum. */
export type QuorumMember = z.infer<typeof quorumMemberSchema>

/** Body of `quorum`: everything a member needs to run steps in this epoch. */
export const quorumBodySchema = z.object({
  epoch: count,
  /** False while the coordinator waits for enough members: abort and stand by. */
  active: z.boolean(),
  /** The step to run next: the number of committed steps. */
  step: count,
  /** Global sample cursor at {@link step}: `step × globalBatch`. */
  cursor: count,
  /** Total steps of the job. */
  steps: count,
  /** Members in rank order. */
  members: z.array(quorumMemberSchema).max(4096),
  /** Micro-batches per rank, in rank order; rank r runs a contiguous run of micro-batch indices. */
  assignment: z.array(count).max(4096),
  /** Flat vector length; shard r is `[floor(r·size/W), floor((r+1)·size/W))`. */
  size: count,
  globalBatch: z.number().int().positive(),
  microBatch: z.number().int().positive(),
  deterministic: z.boolean(),
  /** Members whose state is at {@link step}: heal sources for the others. */
  upToDate: z.array(id).max(4096)
}).strict()
/** Body of `quorum`. */
export type QuorumBody = z.infer<typeof quorumBodySchema>

/** Reply to `heartbeat`. */
export const heartbeatReplySchema = z.object({
  /** False when the coordinator does not know this worker incarnation: it must join again. */
  known: z.boolean(),
  epoch: count,
  committed: count,
  /** The current quorum, when the heartbeat carried an older epoch than the coordinator's. */
  quorum: quorumBodySchema.optional(),
  /** True once the job has trained all its steps. */
  done: z.boolean().optional()
}).strict()
/** Reply to `heartbeat`. */
export type HeartbeatReply = z.infer<typeof heartbeatReplySchema>

/** Body of `ready`. */
export const readyBodySchema = z.object({
  /** CRC-32C of the aggregated gradient's bytes. */
  checksum: z.number().int().nonnegative(),
  /** Milliseconds the worker spent computing its micro-batches. */
  computeMs: z.number().nonnegative(),
  /** Micro-batches it computed. */
  microBatches: count,
  /** Milliseconds spent healing before this step, when it healed. */
  healMs: z.number().nonnegative().optional(),
  /** Mean training loss of the micro-batches this worker computed (the coordinator weights it by {@link microBatches}). */
  loss: z.number().optional(),
  /** Workers whose inputs the robust aggregation rule rejected on this worker's shard in this step. */
  rejected: z.array(id).max(4096).optional()
}).strict()
/** Body of `ready`. */
export type ReadyBody = z.infer<typeof readyBodySchema>

/** Body of `commit`. */
export const commitBodySchema = z.object({
  step: count,
  epoch: count,
  /** Global sample cursor after the step. */
  cursor: count,
  /** A new micro-batch assignment for the following steps (rebalanced by measured speed). */
  assignment: z.array(count).max(4096).optional(),
  /** Mean training loss of the step over all its micro-batches, when every member reported one. */
  loss: z.number().optional()
}).strict()
/** Body of `commit`. */
export type CommitBody = z.infer<typeof commitBodySchema>

/** Body of `done`. */
export const doneBodySchema = z.object({ committed: count }).strict()

/** Body of `grad`: in deterministic mode the micro-batch index of each tensor; otherwise how many micro-batches were summed. */
export const gradBodySchema = z.object({
  microBatches: z.array(count).max(65536).optional(),
  count: count.optional()
}).strict()
/** Body of `grad`. */
export type GradBody = z.infer<typeof gradBodySchema>

/** Body of `gram`. */
export const gramBodySchema = z.object({ rank: count, n: count, gram: z.array(z.number()).max(65536 * 16) }).strict()
/** Body of `agg`. */
export const aggBodySchema = z.object({ rank: count }).strict()

/** Body of `heal-meta` (request). */
export const healMetaBodySchema = z.object({ step: count }).strict()
/** Reply to `heal-meta`. */
export const healMetaReplySchema = z.object({
  step: count,
  meta: z.record(z.string(), z.unknown()),
  specs: z.array(z.object({ name: z.string().min(1).max(256), shape: z.array(count).max(8), dtype: z.literal('float32') }).strict()).max(65536),
  size: count,
  chunkFloats: z.number().int().positive(),
  /** CRC-32C of each chunk's bytes, in order. */
  crcs: z.array(z.number().int().nonnegative()).max(1 << 20)
}).strict()
/** Reply to `heal-meta`. */
export type HealMetaReply = z.infer<typeof healMetaReplySchema>
/** Body of `heal-chunk` (request). */
export const healChunkBodySchema = z.object({ step: count, index: count }).strict()
