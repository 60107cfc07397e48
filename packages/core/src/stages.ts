/**
 * Stage membership and the stage graph of a pipeline-parallel job: the contract between
 * `@phalanx/coordinator`, which implements the registry (`createStageRegistry`), and
 * `@phalanx/pipeline`, whose controller receives it as an injected component (the pipeline does not
 * import the coordinator; both read this file).
 *
 * - The **stage graph** says which stages exist and which routes a micro-batch's forward pass takes
 *   through them (the in-order chain, plus CheckFree+'s swapped route when training out of order).
 *   Neighbours for recovery and the links activations and gradients cross follow from it.
 * - **Membership** says which endpoints serve each stage, in replica order. Every change bumps
 *   {@link StageRegistry.version}; a stage with no member is *vacant* and the pipeline cannot step
 *   until it is filled.
 *
 * @module
 */
import { z } from 'zod'
import type { PeerId } from './transport.js'

const count = z.number().int().nonnegative()

/** One replica of a stage: its endpoint id and the address it listens at. */
export const stageMemberSchema = z.object({ id: z.string().min(1).max(128), address: z.string().min(1).max(1024) }).strict()
/** One replica of a stage. */
export interface StageMember {
  readonly id: PeerId
  readonly address: string
}

/**
 * The stage graph: `stages` stages and the forward routes micro-batches take, each route a list of
 * stage indices (a stage may appear twice in a route, e.g. stage 0 runs the embedding and, after
 * stage 1, its blocks in CheckFree+'s swapped route). Backward passes retrace routes in reverse.
 */
export const stageGraphSchema = z.object({
  stages: z.number().int().positive().max(256),
  routes: z.array(z.array(count).min(1).max(1024)).min(1).max(64)
}).strict()
/** The stage graph. */
export interface StageGraph {
  readonly stages: number
  readonly routes: ReadonlyArray<readonly number[]>
}

/** The stages a stage exchanges activations and gradients with, over every route of the graph. */
export interface StageNeighbours {
  /** Stages whose output this stage consumes (ascending). */
  readonly upstream: readonly number[]
  /** Stages that consume this stage's output (ascending). */
  readonly downstream: readonly number[]
}

/** Why a member left a stage. */
export type StageLeaveReason = 'lost' | 'left' | 'replaced'

/** A membership change, as {@link StageRegistry.on} reports it. */
export type StageChange =
  | { readonly kind: 'join', readonly stage: number, readonly member: StageMember, readonly version: number }
  | { readonly kind: 'leave', readonly stage: number, readonly member: StageMember, readonly reason: StageLeaveReason, readonly version: number }

/** A JSON-able picture of a registry (for dashboards, logs and the state store). */
export const stageRegistrySnapshotSchema = z.object({
  version: count,
  graph: stageGraphSchema,
  /** Members by stage, in replica order. */
  members: z.array(z.array(stageMemberSchema).max(64)).max(256),
  /** Members lost so far, by stage. */
  lost: z.array(count).max(256)
}).strict()
/** A JSON-able picture of a registry. */
export type StageRegistrySnapshot = z.infer<typeof stageRegistrySnapshotSchema>

/** Events of a {@link StageRegistry}. */
export interface StageRegistryEvents {
  change: (change: StageChange) => void
}

/**
 * Who serves which stage, and how stages connect. Implemented by `@phalanx/coordinator`
 * (`createStageRegistry`); the pipeline controller reads and updates it. Synchronous: it is an
 * in-memory view owned by one process (the one driving the pipeline).
 */
export interface StageRegistry {
  /** The stage graph (fixed for the registry's lifetime). */
  readonly graph: StageGraph
  /** Bumped by every join and leave. */
  readonly version: number
  /** Members by stage, in replica order (copies). */
  members(): StageMember[][]
  /** Members of one stage, in replica order (a copy). */
  membersOf(stage: number): StageMember[]
  /** The stage `id` serves, or undefined when it is not a member. */
  stageOf(id: PeerId): number | undefined
  /** Stages without a member. */
  vacant(): number[]
  /** The stages `stage` exchanges activations and gradients with. */
  neighbours(stage: number): StageNeighbours
  /**
   * Adds `member` as the last replica of `stage` (a replacement, or a new data-parallel replica).
   * @throws InvalidParametersError when the stage does not exist, the id is already a member, or the stage is full.
   */
  join(stage: number, member: StageMember): void
  /** Removes member `id`; returns its stage, or undefined when it was not a member. */
  leave(id: PeerId, reason: StageLeaveReason): number | undefined
  /** Subscribes to an event; returns the unsubscribe function. */
  on<E extends keyof StageRegistryEvents>(event: E, listener: StageRegistryEvents[E]): () => void
  /** The registry as plain data. */
  snapshot(): StageRegistrySnapshot
}
