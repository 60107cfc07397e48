/**
 * The stage registry of a pipeline-parallel job: stage membership (which endpoints serve which
 * stage, in replica order) and the stage graph (the routes micro-batches take through the stages).
 * The contract is {@link StageRegistry} in `@phalanx/core`; `@phalanx/pipeline`'s controller gets an
 * instance injected and records joins, losses and replacements in it, so the coordinator side of a
 * job (dashboards, the state store, a launcher starting replacements) sees the same picture.
 *
 * @module
 */
import {
  InvalidParametersError, componentLogger, stageGraphSchema,
  type Logger, type PeerId, type StageChange, type StageGraph, type StageLeaveReason, type StageMember, type StageNeighbours,
  type StageRegistry, type StageRegistryEvents, type StageRegistrySnapshot
} from '@phalanx/core'

/** Tunables of {@link createStageRegistry}. */
export interface StageRegistryInit {
  /**
   * The stage graph. A plain number `S` stands for the in-order chain `0 → 1 → … → S-1`.
   * Every route must visit every stage index only within `[0, stages)`.
   */
  graph: StageGraph | number
  /** Most replicas one stage may have. @default 64 */
  maxReplicas?: number
}

/** Collaborators of {@link createStageRegistry}. */
export interface StageRegistryComponents {
  /** @default silent */
  logger?: Logger
}

/** The in-order chain through `stages` stages. */
export function chainGraph (stages: number): StageGraph {
  if (!Number.isInteger(stages) || stages < 1) throw new InvalidParametersError(`stages must be a positive integer, got ${stages}`)
  return { stages, routes: [Array.from({ length: stages }, (_, s) => s)] }
}

function validateGraph (graph: StageGraph): StageGraph {
  const parsed = stageGraphSchema.safeParse(graph)
  if (!parsed.success) throw new InvalidParametersError(`Invalid stage graph: ${parsed.error.message}`)
  const { stages, routes } = parsed.data
  const seen = new Set<number>()
  for (const route of routes) {
    for (const s of route) {
      if (s >= stages) throw new InvalidParametersError(`Route ${route.join('→')} visits stage ${s}, outside [0, ${stages})`)
      seen.add(s)
    }
  }
  // A stage no route visits could never receive work: that is a mistake in the graph, not a choice.
  if (seen.size !== stages) throw new InvalidParametersError(`Routes visit ${seen.size} of ${stages} stages`)
  return { stages, routes: routes.map((r) => [...r]) }
}

/** Creates an empty registry for `init.graph`. */
export function createStageRegistry (init: StageRegistryInit, components: StageRegistryComponents = {}): StageRegistry {
  const graph = validateGraph(typeof init.graph === 'number' ? chainGraph(init.graph) : init.graph)
  const maxReplicas = init.maxReplicas ?? 64
  if (!Number.isInteger(maxReplicas) || maxReplicas < 1) throw new InvalidParametersError(`maxReplicas must be a positive integer, got ${maxReplicas}`)
  const log = componentLogger(components.logger, 'stage-registry')
  const rows: StageMember[][] = Array.from({ length: graph.stages }, () => [])
  const lost = new Array<number>(graph.stages).fill(0)
  const where = new Map<PeerId, number>()
  const listeners = new Set<StageRegistryEvents['change']>()
  let version = 0

  const neighbours: StageNeighbours[] = Array.from({ length: graph.stages }, (_, s) => {
    const up = new Set<number>()
    const down = new Set<number>()
    for (const route of graph.routes) {
      route.forEach((stage, i) => {
        if (stage !== s) return
        const prev = route[i - 1]
        const next = route[i + 1]
        if (prev !== undefined && prev !== s) up.add(prev)
        if (next !== undefined && next !== s) down.add(next)
      })
    }
    return Object.freeze({ upstream: [...up].sort((a, b) => a - b), downstream: [...down].sort((a, b) => a - b) })
  })

  const checkStage = (stage: number): StageMember[] => {
    const row = rows[stage]
    if (!Number.isInteger(stage) || row === undefined) throw new InvalidParametersError(`stage ${stage} is not in [0, ${graph.stages})`)
    return row
  }

  const emit = (change: StageChange): void => {
    for (const l of listeners) {
      try { l(change) } catch (err) { log.warn({ err, kind: change.kind }, 'listener failed') }
    }
  }

  return {
    graph,
    get version () { return version },
    members: () => rows.map((row) => row.map((m) => ({ ...m }))),
    membersOf: (stage) => checkStage(stage).map((m) => ({ ...m })),
    stageOf: (id) => where.get(id),
    vacant: () => rows.flatMap((row, s) => row.length === 0 ? [s] : []),
    neighbours: (stage) => { checkStage(stage); return neighbours[stage] as StageNeighbours },
    join (stage, member) {
      const row = checkStage(stage)
      if (typeof member.id !== 'string' || member.id.length === 0 || typeof member.address !== 'string' || member.address.length === 0) {
        throw new InvalidParametersError('A stage member needs a non-empty id and address')
      }
      if (where.has(member.id)) throw new InvalidParametersError(`${member.id} is already a member of stage ${where.get(member.id)}`)
      if (row.length >= maxReplicas) throw new InvalidParametersError(`Stage ${stage} already has ${maxReplicas} replicas`)
      const copy = { id: member.id, address: member.address }
      row.push(copy)
      where.set(member.id, stage)
      version++
      log.debug({ stage, id: member.id, version }, 'stage member joined')
      emit({ kind: 'join', stage, member: { ...copy }, version })
    },
    leave (id, reason: StageLeaveReason) {
      const stage = where.get(id)
      if (stage === undefined) return undefined
      const row = rows[stage] as StageMember[]
      const at = row.findIndex((m) => m.id === id)
      const [member] = row.splice(at, 1)
      where.delete(id)
      if (reason === 'lost') lost[stage] = (lost[stage] ?? 0) + 1
      version++
      log.debug({ stage, id, reason, version }, 'stage member left')
      emit({ kind: 'leave', stage, member: { ...(member as StageMember) }, reason, version })
      return stage
    },
    on (event, listener) {
      if (event !== 'change') throw new InvalidParametersError(`Unknown event ${String(event)}`)
      listeners.add(listener)
      return () => { listeners.delete(listener) }
    },
    snapshot: (): StageRegistrySnapshot => ({
      version,
      graph: { stages: graph.stages, routes: graph.routes.map((r) => [...r]) },
      members: rows.map((row) => row.map((m) => ({ ...m }))),
      lost: [...lost]
    })
  }
}
