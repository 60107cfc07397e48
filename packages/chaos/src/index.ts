/**
 * @packageDocumentation
 * `@phalanx/chaos`: seeded, replayable failure injection for Phalanx jobs.
 *
 * - Decorators over core interfaces: {@link chaosTransport} (delay, jitter, drop, duplicate, reorder,
 *   partition, bandwidth cap, bit flips, freeze), {@link skewedClock} (offset and drift),
 *   {@link chaosStorage} (ENOSPC, slow fsync, truncated or corrupted writes).
 * - Byzantine workers: {@link createByzantineHook} (attacks of `@phalanx/aggregate`) and label flipping.
 * - Process faults through a {@link JobDriver} (kill, hang, join) and a {@link ChaosAgent} inside
 *   each process (crash, event-loop stall, and the decorators above at run time).
 * - Scenarios (YAML/JSON, zod-validated), {@link runScenario} with invariant checks,
 *   {@link replayScenario}, and `expectScenarioPasses` in `@phalanx/chaos/vitest`.
 *
 * Every decision comes from a seeded stream and every injected fault is appended to a {@link ChaosLog}.
 *
 * @example
 * ```ts
 * import { loadScenario, runScenario, formatReport } from '@phalanx/chaos'
 *
 * const report = await runScenario(await loadScenario('worker-kill.yaml'), { driver })
 * process.stdout.write(formatReport(report))
 * ```
 */
export { createChaosAgent, type ChaosAgent, type ChaosAgentComponents, type ChaosAgentInit } from './agent.js'
export { createByzantineHook, createLabelFlipHook, type ByzantineInit, type GradientHook, type GradientHookContext, type LabelHook } from './byzantine.js'
export { skewedClock, type ClockSkew, type SkewedClock, type SkewedClockComponents } from './clock.js'
export type {
  DriverJobStatus, DriverRecovery, FaultKind, InjectionHandle, InProcessFault, JobDriver, JobOutcome, JobSpec, ProcessInfo, ProcessRole, ProcessSignal
} from './driver.js'
export { comparableEvent, createChaosLog, type ChaosEvent, type ChaosEventInput, type ChaosLog, type ChaosLogInit, type FaultClass } from './event-log.js'
export { createChaosRng, hashKey, type ChaosRng } from './rng.js'
export {
  formatReport, jobSpecOf, replayScenario, runBaseline, runScenario,
  type InjectedFault, type InvariantCheck, type MttrSummary, type RunScenarioOptions, type ScenarioRecording, type ScenarioReport
} from './runner.js'
export {
  erasureJobConfigSchema, loadScenario, nolocoJobConfigSchema, parseScenario, parseScenarioText, pipelineJobConfigSchema, scenarioSchema,
  type ErasureJobConfig, type Invariants, type NolocoJobConfig, type PipelineJobConfig, type Scenario, type ScenarioFault, type ScenarioInput, type TargetSpec
} from './scenario.js'
export { expandSchedule, MAX_TRIGGERS, type ScheduleSpec, type Trigger } from './schedule.js'
export { chaosStorage, type ChaosStorage, type ChaosStorageComponents, type ChaosStoragePlan, type ChaosStorageTarget, type DiskRule } from './storage.js'
export {
  chaosTransport, type ChaosComponents, type ChaosNetworkPlan, type ChaosTransport, type LinkFaults, type NetworkRule, type PeerMatch
} from './transport.js'
