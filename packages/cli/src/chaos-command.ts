/**
 * `phalanx chaos run <scenario> [--seed N] [--report out.json]` and `phalanx chaos replay
 * <report.json>`: a scenario of `@phalanx/chaos` on real processes (the {@link createLaunchDriver}
 * driver) for the elastic job, or in one process for `job.kind: pipeline` ({@link createPipelineDriver})
 * `job.kind: noloco` ({@link createNolocoDriver}) and `job.kind: erasure` ({@link createErasureDriver}); its fault-free baseline, the invariant checks, and a JSON report. The exit code is the
 * verdict: 0 pass, 1 fail.
 *
 * @module
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { InvalidConfigError, InvalidParametersError, type AbortOptions } from '@phalanx/core'
import {
  formatReport, loadScenario, parseScenario, replayScenario, runBaseline, runScenario,
  type JobDriver, type JobOutcome, type Scenario, type ScenarioRecording, type ScenarioReport
} from '@phalanx/chaos'
import { createLaunchDriver, type LaunchDriverInit } from './chaos-driver.js'
import { createErasureDriver } from './chaos-erasure-driver.js'
import { createNolocoDriver } from './chaos-noloco-driver.js'
import { createPipelineDriver } from './chaos-pipeline-driver.js'

/** Where `phalanx chaos` writes. */
export interface ChaosCommandIO {
  stdout: (text: string) => void
  stderr: (text: string) => void
}

/** The report `phalanx chaos run` writes: the runner's report plus the baseline and where the logs are. */
export interface ChaosRunReport extends ScenarioReport {
  /** The fault-free run the loss and weights were compared with (absent with `--no-baseline`). */
  baseline?: JobOutcome
  /** Run directory (per-process logs of the baseline and the scenario run). */
  runDir: string
}

/** Tunables of {@link runChaosScenario}. */
export interface RunChaosInit {
  scenario: Scenario
  /** Run directory (created). */
  runDir: string
  /** The `phalanx` entry script the children run. */
  bin: string
  /**
   * Runs the fault-free baseline first (needed by the `loss` and `bitIdentical` invariants).
   * @default true
   */
  baseline?: boolean
  /** A baseline measured before (a replay reuses the recorded one). */
  baselineOutcome?: JobOutcome
  /** A recording to replay instead of drawing the schedule. */
  recording?: ScenarioRecording
  /** Launch-driver tunables besides bin, runDir and seed (elastic jobs). */
  driver?: Omit<LaunchDriverInit, 'bin' | 'runDir' | 'seed'>
  /** Progress lines (one per ~10% of the steps, and each phase). */
  progress?: (line: string) => void
}

/** The driver of the scenario's `job.kind`: real processes for the elastic job, in-process runtimes for the others. */
function driverFor (init: RunChaosInit, sub: string): JobDriver {
  const seed = init.scenario.seed
  switch (init.scenario.job.kind) {
    case 'pipeline': return createPipelineDriver({ seed })
    case 'noloco': return createNolocoDriver({ seed })
    case 'erasure': return createErasureDriver({ seed })
    default: return createLaunchDriver({ ...init.driver, bin: init.bin, runDir: join(init.runDir, sub), seed })
  }
}

/**
 * Runs a scenario on real processes: the fault-free baseline (unless disabled), then the scenario
 * (or the replay of a recording), and returns the report.
 */
export async function runChaosScenario (init: RunChaosInit, options: AbortOptions = {}): Promise<ChaosRunReport> {
  const progress = init.progress ?? (() => {})
  const s = init.scenario
  mkdirSync(init.runDir, { recursive: true })
  let baseline = init.baselineOutcome
  if (baseline === undefined && init.baseline !== false) {
    progress(`chaos: fault-free baseline of ${s.name} (${s.job.workers} workers, ${s.job.steps} steps)`)
    baseline = await runBaseline(s, { driver: driverFor(init, 'baseline'), ...(options.signal === undefined ? {} : { signal: options.signal }) })
    progress(`chaos: baseline committed ${baseline.committed} steps${baseline.loss === undefined ? '' : `, final loss ${baseline.loss.toPrecision(6)}`}`)
  }
  const driver = driverFor(init, 'scenario')
  const every = Math.max(1, Math.round(s.job.steps / 10))
  const off = driver.onCommit((e) => {
    if ((e.step + 1) % every === 0) progress(`chaos: ${s.name} committed ${e.step + 1}/${s.job.steps} (epoch ${e.epoch}, ${driver.recoveries().length} recoveries)`)
  })
  try {
    progress(`chaos: ${init.recording === undefined ? 'running' : 'replaying'} ${s.name} (seed ${s.seed}, ${s.faults.length} fault rules) in ${init.runDir}`)
    const runOptions = { ...(baseline === undefined ? {} : { baseline }), ...(options.signal === undefined ? {} : { signal: options.signal }) }
    const report = init.recording === undefined
      ? await runScenario(s, { driver, ...runOptions })
      : await replayScenario(init.recording, driver, runOptions)
    return { ...report, ...(baseline === undefined ? {} : { baseline }), runDir: init.runDir }
  } finally {
    off()
    await driver.stop()
  }
}

const HELP = `phalanx chaos: fault scenarios.
  phalanx chaos run <scenario.yaml|json> [--seed <n>] [--report <out.json>] [--run-dir <dir>] [--no-baseline]
  phalanx chaos replay <report.json> [--report <out.json>] [--run-dir <dir>]
Runs the fault-free baseline, then the scenario's job (coordinator + workers over loopback ZeroMQ)
with its faults injected, checks its invariants and prints the report; exit code 0 when the verdict
is pass, 1 when it is fail. Supported faults: kill, crash, hang, stall, join, network, partition.
job.kind pipeline runs an in-process pipeline (createLocalPipeline; faults: kill, network),
job.kind noloco N NoLoCo replicas in one process (faults: kill, network, partition) and
job.kind erasure N hosts with erasure-coded in-memory snapshots (faults: kill, network, partition).
`

function bin (): string {
  return join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'phalanx.js')
}

function timestamp (): string {
  return new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15)
}

/** `phalanx chaos ...`: resolves with the exit code. */
export async function chaosCommand (args: string[], io: ChaosCommandIO, options: AbortOptions = {}): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      seed: { type: 'string' },
      report: { type: 'string' },
      'run-dir': { type: 'string' },
      'no-baseline': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' }
    },
    allowPositionals: true,
    strict: true
  })
  const [sub, file] = positionals
  if (values.help === true || sub === undefined) { io.stdout(HELP); return values.help === true ? 0 : 2 }
  if (file === undefined || positionals.length > 2) throw new InvalidParametersError(`phalanx chaos ${sub} needs one file\n${HELP}`)
  let scenario: Scenario
  let recording: ScenarioRecording | undefined
  let baselineOutcome: JobOutcome | undefined
  if (sub === 'run') {
    scenario = await loadScenario(file)
    if (values.seed !== undefined) {
      const seed = Number(values.seed)
      if (!Number.isInteger(seed) || seed < 0) throw new InvalidConfigError(`--seed expects an integer ≥ 0, got "${values.seed}"`)
      scenario = parseScenario({ ...scenario, seed }, file)
    }
  } else if (sub === 'replay') {
    let report: Partial<ChaosRunReport>
    try {
      report = JSON.parse(readFileSync(file, 'utf8')) as Partial<ChaosRunReport>
    } catch (cause) {
      throw new InvalidConfigError(`${file}: not a chaos report (${(cause as Error).message})`, { cause })
    }
    if (report.recording === undefined) throw new InvalidConfigError(`${file}: the report holds no recording`)
    scenario = parseScenario(report.recording.scenario, `${file} recording`)
    recording = { scenario, actions: report.recording.actions }
    baselineOutcome = report.baseline
  } else {
    throw new InvalidParametersError(`Unknown chaos subcommand "${sub}"; expected run or replay`)
  }
  const runDir = resolve(values['run-dir'] ?? join('runs', `chaos-${scenario.name}-${timestamp()}`))
  const report = await runChaosScenario({
    scenario, runDir, bin: bin(),
    baseline: values['no-baseline'] !== true,
    ...(baselineOutcome === undefined ? {} : { baselineOutcome }),
    ...(recording === undefined ? {} : { recording }),
    progress: (line) => { io.stderr(line + '\n') }
  }, options)
  const out = values.report ?? join(runDir, 'report.json')
  mkdirSync(dirname(resolve(out)), { recursive: true })
  writeFileSync(out, JSON.stringify(report, null, 2) + '\n')
  io.stdout(`${formatReport(report)}\n  report: ${out}\n  logs: ${runDir}\n`)
  return report.verdict === 'pass' ? 0 : 1
}
