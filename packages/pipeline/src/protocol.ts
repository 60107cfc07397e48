/**
 * The pipeline protocol between the controller and stage workers, and among stage workers:
 * message types and the schemas every received body is parsed with.
 *
 * @module
 */
import { z } from 'zod'

/** Message types of the pipeline protocol. */
export const PipelineMessage = {
  /** controller → stage (request): run your ops of one step; the reply carries the losses you computed. */
  step: 'pp-step',
  /**
   * controller → stage (request), phase 1 of the step commit: sum your gradients, all-reduce with
   * your replicas and clip; keep the result ready and reply with the norms. Nothing is applied.
   */
  prepare: 'pp-prepare',
  /**
   * controller → stage (request), phase 2: every replica reported ready, the controller decided to
   * commit: keep a pre-step copy of your state, then apply the prepared gradient.
   */
  commit: 'pp-commit',
  /**
   * controller → stage (request): a member was lost while a commit was being applied; if you
   * applied step `step`, restore your pre-step copy, so every stage is at `step` again.
   */
  revert: 'pp-revert',
  /** controller → stage: the epoch moved on; drop the running step. */
  abort: 'pp-abort',
  /** stage → stage: forward activation of one hop. */
  act: 'pp-act',
  /** stage → stage: gradient w.r.t. one hop's input. */
  grad: 'pp-grad',
  /** replica → replica: this replica's gradient sum of a step (or its weights, for replica averaging). */
  dpGrad: 'pp-dp-grad',
  /** edge stage → neighbour: a copy of the embedding (stage 0) or head (last stage). */
  edge: 'pp-edge',
  /** any → stage (request): a part of the stage's state. */
  get: 'pp-get',
  /** controller → replacement (request): build your state from these sources. */
  recover: 'pp-recover',
  /** controller → stage (request): load this full state (rollback). */
  load: 'pp-load'
} as const

const count = z.number().int().nonnegative()
const id = z.string().min(1).max(128)

/** A member of the pipeline: a stage replica's endpoint id and address. */
export const memberSchema = z.object({ id, address: z.string().min(1).max(1024) }).strict()
/** A member of the pipeline. */
export type Member = z.infer<typeof memberSchema>

/** Body of `pp-step`. */
export const stepBodySchema = z.object({
  step: count,
  epoch: count,
  /** Members by stage, in replica order. */
  members: z.array(z.array(memberSchema).min(1).max(64)).min(1).max(256)
}).strict()
/** Body of `pp-step`. */
export type StepBody = z.infer<typeof stepBodySchema>

/** Reply to `pp-step`: `[microBatch, loss]` pairs for the micro-batches whose loss this executor computed. */
export const stepReplySchema = z.object({ losses: z.array(z.tuple([count, z.number()])).max(65536) }).strict()

/** Body of `pp-prepare`. */
export const prepareBodySchema = z.object({ step: count }).strict()
/** Reply to `pp-prepare`: the gradient norm before and after clipping. */
export const prepareReplySchema = z.object({ norm: z.number(), clipped: z.number() }).strict()

/** Body of `pp-commit`. */
export const commitBodySchema = z.object({ step: count }).strict()
/** Reply to `pp-commit`: the committed steps after applying. */
export const commitReplySchema = z.object({ committed: count }).strict()

/** Body of `pp-revert`. */
export const revertBodySchema = z.object({ step: count }).strict()
/** Reply to `pp-revert`: the committed steps now, and whether an applied step was undone. */
export const revertReplySchema = z.object({ committed: count, reverted: z.boolean() }).strict()

/** Body of `pp-abort`. */
export const abortBodySchema = z.object({ epoch: count }).strict()

/** Body of `pp-act` and `pp-grad`. */
export const hopBodySchema = z.object({ step: count, microBatch: count, hop: count }).strict()

/** Body of `pp-dp-grad`. */
export const dpGradBodySchema = z.object({
  step: count,
  replica: count,
  /** `grad`: the replica's gradient sum (all-reduce); `weights`: its weights (periodic replica averaging). @default 'grad' */
  kind: z.enum(['grad', 'weights']).optional()
}).strict()

/** Body of `pp-edge`. */
export const edgeBodySchema = z.object({ step: count, part: z.enum(['embed', 'head']) }).strict()

/** Body of `pp-get`. */
export const getBodySchema = z.object({ part: z.enum(['blocks', 'full', 'embed-copy', 'head-copy']) }).strict()
/** Reply body of `pp-get`. */
export const getReplySchema = z.object({ step: count, lrScale: z.number().positive() }).strict()

/** Body of `pp-recover`. */
export const recoverBodySchema = z.object({
  kind: z.enum(['replica-copy', 'average', 'copy', 'random']),
  sources: z.array(z.object({ member: memberSchema, part: z.enum(['blocks', 'full', 'edge']), weight: z.number() }).strict()).max(8),
  lrScale: z.number().positive(),
  /** Seed of a random re-initialisation (the whole stage for `random`, a missing embedding/head for `copy`). */
  seed: count,
  /** The committed step the pipeline is at. */
  step: count
}).strict()
/** Body of `pp-recover`. */
export type RecoverBody = z.infer<typeof recoverBodySchema>

/** Body of `pp-load`. */
export const loadBodySchema = z.object({ step: count, lrScale: z.number().positive() }).strict()
