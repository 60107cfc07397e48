/**
 * Replica membership of the low-communication optimisers (NoLoCo, gossip, DiLoCo): the contract
 * between `@phalanx/coordinator`, which owns the membership (`createReplicaMembership`), and
 * `@phalanx/optim`'s membership client, which reports a replica's progress and installs the views it
 * receives into the outer optimiser.
 *
 * - A replica **heartbeats** the coordinator (a request, {@link ReplicaMessage.heartbeat}) with its
 *   id, address, process incarnation, the outer round it is at, and the view version it holds. The
 *   first heartbeat admits it; silence or a dropped connection loses it.
 * - On every loss or join the coordinator publishes a **view** ({@link ReplicaMessage.view}): a
 *   version (the membership epoch, stamped as the message epoch too) that increases with every
 *   change, the first outer round it applies to, and the members in rank order. The round is a
 *   boundary no member can have started yet, so all replicas switch pairings at the same round.
 *   A heartbeat reply repeats the current view to a replica that holds an older version.
 * - **Fencing**: a view whose version is not above the one a replica holds is ignored (and counted);
 *   a heartbeat reporting a round below what the same incarnation already reported, or coming from
 *   an incarnation that was replaced, is refused with `StaleEpochError`. Bodies are parsed with these
 *   schemas on receipt; a malformed one is refused with `MalformedMessageError` and a log line.
 *
 * @module
 */
import { z } from 'zod'
import { MalformedMessageError } from './errors.js'

/** Message types of the replica-membership protocol. */
export const ReplicaMessage = {
  /** replica → coordinator (request): liveness and progress; the reply says whether it is a member and may carry the current view. */
  heartbeat: 'replica-heartbeat',
  /** coordinator → replica: a new membership view (message epoch = view version). */
  view: 'replica-view',
  /** replica → coordinator: graceful departure. */
  leave: 'replica-leave'
} as const

/** Message types a coordinator endpoint with an epoch fence must admit whatever their epoch (replicas do not stamp one). */
export const REPLICA_FENCE_EXEMPT: readonly string[] = [ReplicaMessage.heartbeat, ReplicaMessage.leave]

const id = z.string().min(1).max(128)
const count = z.number().int().nonnegative()

/** One replica in a view: its endpoint id and the address it listens at. */
export const replicaMemberSchema = z.object({ id, address: z.string().min(1).max(1024) }).strict()
/** One replica in a view. */
export type ReplicaMember = z.infer<typeof replicaMemberSchema>

/** Body of `replica-heartbeat`. */
export const replicaHeartbeatBodySchema = z.object({
  id,
  address: z.string().min(1).max(1024),
  /** Random per process start, so a restarted replica is not taken for the old process. */
  incarnation: z.string().min(1).max(64),
  /** The outer optimiser's current round: the round it is in or will start next. */
  round: count,
  /** Version of the newest view the replica holds (0: none yet, it has not started training). */
  view: count
}).strict()
/** Body of `replica-heartbeat`. */
export type ReplicaHeartbeatBody = z.infer<typeof replicaHeartbeatBodySchema>

/** Body of `replica-view`: members in rank order, identical on every replica, from outer round `round` on. */
export const replicaViewBodySchema = z.object({
  /** Increases with every membership change. */
  version: z.number().int().positive(),
  /** First outer round the view applies to. */
  round: count,
  members: z.array(replicaMemberSchema).max(4096)
}).strict().refine((v) => new Set(v.members.map((m) => m.id)).size === v.members.length, { message: 'member ids must be unique', path: ['members'] })
/** Body of `replica-view`. */
export type ReplicaViewBody = z.infer<typeof replicaViewBodySchema>

/** Reply to `replica-heartbeat`. */
export const replicaHeartbeatReplySchema = z.object({
  /** True when the sender is a member of the current membership. */
  member: z.boolean(),
  /** The coordinator's current view version. */
  version: count,
  /** The current view, when the heartbeat reported an older version than the coordinator's. */
  view: replicaViewBodySchema.optional()
}).strict()
/** Reply to `replica-heartbeat`. */
export type ReplicaHeartbeatReply = z.infer<typeof replicaHeartbeatReplySchema>

/** Body of `replica-leave`. */
export const replicaLeaveBodySchema = z.object({ id, incarnation: z.string().min(1).max(64) }).strict()
/** Body of `replica-leave`. */
export type ReplicaLeaveBody = z.infer<typeof replicaLeaveBodySchema>

/**
 * Parses a peer-supplied body with `schema`; throws {@link MalformedMessageError} naming `what`,
 * with the first schema issues in `details.issues` (never the body itself).
 */
export function parseReplicaBody<T> (schema: z.ZodType<T>, body: unknown, what: string): T {
  const r = schema.safeParse(body)
  if (!r.success) {
    throw new MalformedMessageError(`Invalid ${what} body`, { details: { issues: r.error.issues.slice(0, 3).map((i) => `${i.path.join('.')}: ${i.message}`) } })
  }
  return r.data
}
