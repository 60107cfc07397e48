/**
 * @packageDocumentation
 * The `phalanx` command and the only composition root of Phalanx: configuration → pino logger →
 * ZeroMQ endpoint → coordinator or worker. Besides the binary (`phalanx launch | coordinator |
 * worker | status | checkpoint | keygen`, see docs/cli.md) it exports the pieces the binary is made
 * of, so programs and tests can launch jobs, run coordinator or worker processes, and write jobs.
 *
 * @example
 * ```ts
 * import { launch, parseFaults } from '@phalanx/cli'
 * import { resolveConfig } from '@phalanx/core'
 *
 * const config = resolveConfig({ job: { id: 'demo', globalBatch: 64, microBatch: 8, steps: 200 } })
 * const summary = await launch(
 *   { config, job: 'linear', workers: 3, faults: parseFaults({ kill: ['worker-2@50'] }), runDir: 'runs/demo', bin: 'node_modules/.bin/phalanx' },
 *   { progress: { write: (t) => process.stderr.write(t), isTTY: false }, summary: (t) => { console.log(t) } }
 * )
 * ```
 */
export { readConfigFile, parseOverrides, loadConfig } from './config-file.js'
export { aggregatorFromConfig, createProcessLogger, curveFromConfig, openEndpoint, type OpenEndpointInit, type ProcessLoggerInit } from './compose.js'
export { holderCommand, runHolderProcess, type HolderProcessInit } from './holder-process.js'
export {
  runStepLoop, stateChecksum,
  type Job, type JobModule, type JobOptions, type JobProgress, type JobResult, type JobRunContext, type StepLoopInit, type StepTrainer
} from './job.js'
export { createLinearJob, createLinearModel, linearInitFromOptions, referenceLinearRun, type LinearJobInit, type LinearModel } from './builtin-linear.js'
export { BUILTIN_JOBS, loadJob, mnistJobAvailable } from './load-job.js'
export { runCoordinatorProcess, type CoordinatorProcessComponents, type CoordinatorProcessInit, type JobStatus } from './coordinator-process.js'
export { runWorkerProcess, type WorkerProcessComponents, type WorkerProcessInit, type WorkerProcessResult } from './worker-process.js'
export { isProcessEvent, type CoordinatorProcessEvent, type ProcessEvent, type WorkerProcessEvent } from './events.js'
export { describeFault, parseFaults, type Fault } from './faults.js'
export { createProgressDisplay, progressLine, recoveryLine, type ProgressDisplay, type ProgressOutput, type ProgressState } from './progress.js'
export { formatSummary, freePort, launch, type FaultOutcome, type LaunchInit, type LaunchOutput, type LaunchSummary, type WorkerOutcome } from './launch.js'
export { STATUS_URL_FILE, fetchStatus, formatStatus, statusUrlOf } from './status.js'
export { main, type CliIO } from './main.js'
export { createLaunchDriver, splitJobConfig, type LaunchDriver, type LaunchDriverComponents, type LaunchDriverInit } from './chaos-driver.js'
export {
  createPipelineDriver, type PipelineDriver, type PipelineDriverComponents, type PipelineDriverInit, type PipelineRecovery, type PipelineScenarioConfig
} from './chaos-pipeline-driver.js'
export { createErasureDriver, type ErasureDriverComponents, type ErasureDriverInit, type ErasureScenarioConfig } from './chaos-erasure-driver.js'
export { createNolocoDriver, type NolocoDriverComponents, type NolocoDriverInit, type NolocoScenarioConfig } from './chaos-noloco-driver.js'
export { chaosCommand, runChaosScenario, type ChaosCommandIO, type ChaosRunReport, type RunChaosInit } from './chaos-command.js'
export {
  CHAOS_ENV, childChaosFromEnv, createChildChaos,
  type ChaosAckEvent, type ChaosControlMessage, type ChildChaos, type ChildChaosComponents, type ChildChaosInit, type ChildChaosSettings
} from './chaos-child.js'
