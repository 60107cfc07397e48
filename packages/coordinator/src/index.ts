/**
 * @packageDocumentation
 * The elastic coordinator of Phalanx: membership and rendezvous, crash and hang detection, epochs
 * and quorums, micro-batch scheduling with a constant global batch, the per-step two-phase commit,
 * the write-ahead-log state store, and Prometheus metrics. Workers (`@phalanx/worker`) talk to it
 * through an injected `Endpoint`; the protocol is described in docs/elastic.md.
 *
 * @example
 * ```ts
 * import { resolveConfig } from '@phalanx/core'
 * import { createCoordinator, coordinatorInitFromConfig, createWalStateStore } from '@phalanx/coordinator'
 *
 * const config = resolveConfig({ job: { id: 'demo', minWorkers: 2, maxWorkers: 4, globalBatch: 64, microBatch: 8, steps: 100 } })
 * const coordinator = createCoordinator(coordinatorInitFromConfig(config), { endpoint, store: createWalStateStore({ path: 'run/wal.log' }) })
 * await coordinator.start()
 * await coordinator.finished()
 * await coordinator.stop()
 * ```
 */
export {
  createCoordinator, coordinatorInitFromConfig, runCoordinator,
  type Coordinator, type CoordinatorComponents, type CoordinatorEvents, type CoordinatorInit, type CoordinatorStatus, type RecoveryRecord
} from './coordinator.js'
export { createFailureDetector, type FailureDetector, type FailureDetectorInit } from './failure-detector.js'
export { createCoordinatorMetrics, startMetricsServer, type CoordinatorMetrics, type MetricsServer, type MetricsServerExtras } from './metrics.js'
export {
  createDashboardFeed, dashboardAssets, dashboardHtml,
  type DashboardData, type DashboardEpoch, type DashboardFeed, type DashboardFeedInit, type DashboardSource, type DashboardStep, type DashboardSuspect
} from './dashboard.js'
export { assignMicroBatches, shardRange } from './schedule.js'
export {
  createMemoryStateStore, createWalStateStore, recoverState,
  type AppendOptions, type RecoveredState, type StateStore, type StoredMember, type StoreRecord, type WalStateStoreInit
} from './state-store.js'
export { createEtcdStateStore, type EtcdStateStoreInit } from './etcd-store.js'
export {
  createEtcdElection, etcdClientOptions,
  type EtcdElection, type EtcdElectionComponents, type EtcdElectionInit, type EtcdOp, type LeaderInfo, type Leadership
} from './leader.js'
export { chainGraph, createStageRegistry, type StageRegistryComponents, type StageRegistryInit } from './stage-registry.js'
export {
  createReplicaMembership,
  type ReplicaChange, type ReplicaChangeKind, type ReplicaMembership, type ReplicaMembershipComponents, type ReplicaMembershipEvents,
  type ReplicaMembershipInit, type ReplicaMembershipMetrics
} from './replica-membership.js'
