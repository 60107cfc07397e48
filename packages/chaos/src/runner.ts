/**
 * The scenario runner: starts the job through a {@link JobDriver}, fires the scenario's faults on
 * schedule at seeded targets, watches every commit, and checks the invariants when the job ends
 * (or fails to). The report says what was injected, how the job recovered, and why the verdict is
 * what it is. Its `recording` replays the same faults at the same steps on the same processes.
 *
 * @module
 */
import {
  InvalidParametersError, componentLogger, raceSignal, systemClock, type AbortOptions, type Clock, type JsonValue,
  type Logger, type TimerHandle
} from '@phalanx/core'
import type { DriverRecovery, InjectionHandle, InProcessFault, JobDriver, JobOutcome, JobSpec, ProcessInfo } from './driver.js'
import { createChaosLog, type ChaosEvent, type ChaosLog, type FaultClass } from './event-log.js'
import { createChaosRng } from './rng.js'
import { expandSchedule, type Trigger } from './schedule.js'
import { parseScenario, type Scenario, type ScenarioFault, type ScenarioInput, type TargetSpec } from './scenario.js'

/** One fault the runner injected. */
export interface InjectedFault {
  /** Order of injection. */
  index: number
  /** Index of the fault in the scenario. */
  fault: number
  kind: ScenarioFault['kind']
  /** Process ids hit (`*` for the whole job). */
  targets: string[]
  /** Committed steps when it fired. */
  step: number
  /** The planned trigger. */
  trigger: Trigger
  /** Why nothing was done, when nothing was (no alive target, the job already done, the injection failed). */
  skipped?: string
}

/** A recovery time summary, ms. */
export interface MttrSummary {
  count: number
  p50: number
  p99: number
  max: number
}

/** One invariant's outcome. */
export interface InvariantCheck {
  invariant: string
  ok: boolean
  detail: string
}

/** What {@link replayScenario} needs to do a run again. */
export interface ScenarioRecording {
  scenario: Scenario
  actions: Array<{ fault: number, step: number, targets: string[] }>
}

/** The result of {@link runScenario}. */
export interface ScenarioReport {
  scenario: string
  seed: number
  driver: string
  /** `pass` when every invariant held. */
  verdict: 'pass' | 'fail'
  /** What the scenario expects (`fail` for a control scenario). */
  expected: 'pass' | 'fail'
  /** One line per violated invariant (empty on pass). */
  reasons: string[]
  checks: InvariantCheck[]
  /** Faults injected by class, from the event log (`network:drop`: 12, ...). */
  faultsByClass: Record<string, number>
  injected: InjectedFault[]
  recoveries: DriverRecovery[]
  mttr: MttrSummary
  /** Committed steps that were committed again (lost and redone) or never committed. */
  stepsLost: number
  committed: number
  steps: number
  finalLoss?: number
  baselineLoss?: number
  /** Final checksums equal the baseline's (when a baseline was given). */
  bitIdentical?: boolean
  /** Processes still running after the driver stopped. */
  leaks: string[]
  durationMs: number
  /** Error that ended the job early, if any. */
  error?: string
  /** The event log. */
  events: readonly ChaosEvent[]
  recording: ScenarioRecording
}

/** Options of {@link runScenario}. */
export interface RunScenarioOptions extends AbortOptions {
  driver: JobDriver
  /** The fault-free outcome to compare loss and weights with (see {@link runBaseline}). */
  baseline?: JobOutcome
  /** @default systemClock() */
  clock?: Clock
  /** Where injected faults are appended. @default the driver's log, else a new one */
  log?: ChaosLog
  /** @default silent */
  logger?: Logger
}

const CLASS_OF: Record<ScenarioFault['kind'], FaultClass> = {
  kill: 'process', crash: 'process', hang: 'process', stall: 'process', join: 'process',
  network: 'network', partition: 'network', byzantine: 'byzantine', 'label-flip': 'byzantine', disk: 'disk', 'clock-skew': 'clock'
}

/** The job spec of a scenario. */
export function jobSpecOf (s: Scenario): JobSpec {
  return {
    workers: s.job.workers,
    steps: s.job.steps,
    minWorkers: s.job.minWorkers ?? Math.min(s.job.workers, 1),
    maxWorkers: s.job.maxWorkers ?? Math.max(s.job.workers, 8),
    deterministic: s.job.deterministic,
    seed: s.job.seed,
    recovery: s.job.recovery,
    config: s.job.config
  }
}

/** p-th percentile (nearest rank) of sorted values. */
function percentile (sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] as number
}

function mttrOf (recoveries: readonly DriverRecovery[]): MttrSummary {
  const t = recoveries.map((r) => r.totalMs).sort((a, b) => a - b)
  return { count: t.length, p50: percentile(t, 0.5), p99: percentile(t, 0.99), max: t[t.length - 1] ?? 0 }
}

/** Runs the scenario's job with no faults: the baseline for loss and bit-identity checks. */
export async function runBaseline (scenario: Scenario | ScenarioInput, options: { driver: JobDriver } & AbortOptions): Promise<JobOutcome> {
  const s = parseScenario(scenario)
  const { driver } = options
  try {
    await driver.start({ ...jobSpecOf(s), recovery: true }, options)
    return await driver.finished(options)
  } finally {
    await driver.stop()
  }
}

function targetsOf (spec: TargetSpec | undefined, processes: readonly ProcessInfo[], pick: () => number): string[] {
  const alive = processes.filter((p) => p.alive)
  const workers = alive.filter((p) => p.role === 'worker').sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  const t = spec ?? 'random-worker'
  if (t === 'random-worker') {
    if (workers.length === 0) return []
    return [(workers[pick() % workers.length] as ProcessInfo).id]
  }
  if (t === 'coordinator') return alive.filter((p) => p.role === 'coordinator').map((p) => p.id)
  if (t === 'all-workers') return workers.map((p) => p.id)
  if (t === 'job') return ['*']
  if ('id' in t) return alive.some((p) => p.id === t.id) ? [t.id] : []
  if ('rank' in t) return workers.filter((p) => p.rank === t.rank).map((p) => p.id)
  return alive.filter((p) => p.group === t.group).map((p) => p.id)
}

/** The in-process fault a scenario fault applies, for the kinds the agent handles. */
function inProcessFault (f: ScenarioFault, seed: number, index: number): InProcessFault | undefined {
  switch (f.kind) {
    case 'crash': return { kind: 'crash', ...(f.message === undefined ? {} : { message: f.message }) }
    case 'stall': return { kind: 'stall', ms: f.durationMs }
    case 'network': {
      const { kind: _k, name, at: _a, target: _t, durationMs: _d, untilStep: _u, ...rule } = f
      return { kind: 'network', rule: { ...rule, id: name ?? `fault-${index}` } }
    }
    case 'partition': return { kind: 'partition', groups: f.groups }
    case 'byzantine': return { kind: 'byzantine', attack: f.attack, seed: seed + index }
    case 'label-flip': return { kind: 'label-flip', classes: f.classes }
    case 'disk': {
      const { fault, path, probability, count, delayMs, keepFraction, bits } = f
      return {
        kind: 'disk',
        rule: {
          id: f.name ?? `fault-${index}`, kind: fault,
          ...(path === undefined ? {} : { path }), ...(probability === undefined ? {} : { probability }), ...(count === undefined ? {} : { count }),
          ...(delayMs === undefined ? {} : { delayMs }), ...(keepFraction === undefined ? {} : { keepFraction }), ...(bits === undefined ? {} : { bits })
        }
      }
    }
    case 'clock-skew': return { kind: 'clock-skew', skew: { offsetMs: f.offsetMs ?? 0, driftPpm: f.driftPpm ?? 0 } }
    default: return undefined
  }
}

interface Planned {
  fault: number
  trigger: Trigger
  /** Fixed targets (replay); otherwise drawn when it fires. */
  targets?: string[]
}

async function execute (s: Scenario, planned: readonly Planned[], options: RunScenarioOptions): Promise<ScenarioReport> {
  const { driver } = options
  const clock = options.clock ?? systemClock()
  const log = options.log ?? driver.log ?? createChaosLog({ now: () => clock.now() })
  const logger = componentLogger(options.logger, 'chaos-runner')
  const unsupported = [...new Set(s.faults.map((f) => f.kind))].filter((k) => !driver.supports(k))
  if (unsupported.length > 0) throw new InvalidParametersError(`Driver "${driver.name}" cannot inject: ${unsupported.join(', ')}`, { details: { unsupported } })

  const started = clock.now()
  const job = jobSpecOf(s)
  const injected: InjectedFault[] = []
  const handles = new Set<InjectionHandle>()
  const untilStep: Array<{ step: number, handle: InjectionHandle }> = []
  const timers = new Set<TimerHandle>()
  const fireCount = new Map<number, number>()
  let committed = 0
  let lastStep = -1
  let stepsLost = 0
  const orderViolations: string[] = []
  let chain: Promise<void> = Promise.resolve()
  /** Fault ends due at a time (SIGCONT, restarts), run beside the chain; awaited at the end. */
  const sideTasks = new Set<Promise<void>>()
  const track = (p: Promise<unknown>): void => {
    const t: Promise<void> = p.then(() => {}, () => {}).finally(() => { sideTasks.delete(t) })
    sideTasks.add(t)
  }
  let stopped = false
  const stepQueue = planned.filter((p) => p.trigger.step !== undefined).sort((a, b) => (a.trigger.step as number) - (b.trigger.step as number) || a.fault - b.fault)

  const revertLater = (handle: InjectionHandle, f: ScenarioFault, index: number, target: string): void => {
    handles.add(handle)
    const revert = (): void => {
      if (!handles.delete(handle)) return
      chain = chain.then(async () => {
        log.append({ class: CLASS_OF[f.kind], kind: `${f.kind}-end`, target, step: committed, details: { fault: index } })
        await handle.revert()
      }).catch((err: unknown) => { logger.warn({ err }, 'revert failed') })
    }
    if ('durationMs' in f && f.durationMs !== undefined && f.kind !== 'hang' && f.kind !== 'stall') {
      const t = clock.setTimeout(() => { timers.delete(t); revert() }, f.durationMs)
      timers.add(t)
    }
    if ('untilStep' in f && f.untilStep !== undefined) untilStep.push({ step: f.untilStep, handle: { revert: async () => { revert() } } })
  }

  const fire = async (p: Planned): Promise<void> => {
    if (stopped) return
    const f = s.faults[p.fault] as ScenarioFault
    const n = fireCount.get(p.fault) ?? 0
    fireCount.set(p.fault, n + 1)
    const rng = createChaosRng(s.seed, 'target', p.fault, n)
    const targets = f.kind === 'join' ? [] : p.targets ?? targetsOf(f.target ?? (f.kind === 'partition' ? 'job' : undefined), driver.processes(), () => rng.int(1 << 30))
    const record: InjectedFault = { index: injected.length, fault: p.fault, kind: f.kind, targets, step: committed, trigger: p.trigger }
    injected.push(record)
    const details: Record<string, JsonValue> = { fault: p.fault, ...(f.name === undefined ? {} : { name: f.name }) }
    if (committed >= s.job.steps || driver.status().phase === 'done') {
      // The job is over: a process frozen or started now could never hear it, and nothing is left to hit.
      record.skipped = 'job done'
      log.append({ class: CLASS_OF[f.kind], kind: `${f.kind}-skipped`, target: '', step: committed, details })
      return
    }
    if (f.kind !== 'join' && targets.length === 0) {
      record.skipped = 'no alive target'
      log.append({ class: CLASS_OF[f.kind], kind: `${f.kind}-skipped`, target: '', step: committed, details })
      return
    }
    switch (f.kind) {
      case 'kill':
        for (const id of targets) {
          log.append({ class: 'process', kind: 'kill', target: id, step: committed, details })
          await driver.signal(id, 'SIGKILL')
          if (f.restartAfterMs !== undefined) {
            const t = clock.setTimeout(() => {
              timers.delete(t)
              // Not queued behind pending injections: a restart is due after restartAfterMs, whatever
              // else is slow (an injection waiting on a frozen process must not prolong an outage).
              if (stopped) return
              if (committed >= s.job.steps || driver.status().phase === 'done') {
                log.append({ class: 'process', kind: 'restart-skipped', target: id, step: committed, details })
                return
              }
              log.append({ class: 'process', kind: 'restart', target: id, step: committed, details })
              track(driver.spawn({ id }).catch((err: unknown) => { logger.warn({ err, id }, 'restart failed') }))
            }, f.restartAfterMs)
            timers.add(t)
          }
        }
        return
      case 'hang':
        for (const id of targets) {
          log.append({ class: 'process', kind: 'hang', target: id, step: committed, details: { ...details, ms: f.durationMs } })
          await driver.signal(id, 'SIGSTOP')
          const t = clock.setTimeout(() => {
            timers.delete(t)
            // Due after durationMs, not after whatever the chain is waiting on (see restarts above).
            if (!stopped) track(driver.signal(id, 'SIGCONT').catch((err: unknown) => { logger.warn({ err, id }, 'SIGCONT failed') }))
          }, f.durationMs)
          timers.add(t)
        }
        return
      case 'join': {
        const info = await driver.spawn(f.id === undefined ? {} : { id: f.id })
        record.targets = [info.id]
        log.append({ class: 'process', kind: 'join', target: info.id, step: committed, details })
        return
      }
      default: {
        const fault = inProcessFault(f, s.seed, p.fault) as InProcessFault
        for (const id of targets) {
          const once = f.kind === 'crash' || f.kind === 'stall'
          log.append({ class: CLASS_OF[f.kind], kind: once ? f.kind : `${f.kind}-start`, target: id, step: committed, details })
          const handle = await driver.inject(id, fault)
          if (!once) revertLater(handle, f, p.fault, id)
        }
      }
    }
  }

  const enqueue = (p: Planned): void => {
    chain = chain.then(async () => {
      const at = injected.length
      try {
        await fire(p)
      } catch (err) {
        // Not counted as injected: the report must not claim a fault that never took effect.
        const record = injected[at]
        if (record !== undefined && record.skipped === undefined) record.skipped = `injection failed: ${(err as Error).message}`
        throw err
      }
    }).catch((err: unknown) => {
      logger.warn({ err, fault: p.fault }, 'fault injection failed')
      log.append({ class: CLASS_OF[(s.faults[p.fault] as ScenarioFault).kind], kind: 'inject-failed', target: '', step: committed, details: { fault: p.fault, error: String((err as Error).message) } })
    })
  }

  const releaseSteps = (): void => {
    while (stepQueue.length > 0 && (stepQueue[0] as Planned).trigger.step as number <= committed) enqueue(stepQueue.shift() as Planned)
    for (let i = untilStep.length - 1; i >= 0; i--) {
      const u = untilStep[i] as { step: number, handle: InjectionHandle }
      if (u.step <= committed) { untilStep.splice(i, 1); void u.handle.revert() }
    }
  }

  const offCommit = driver.onCommit((e) => {
    if (e.step <= lastStep) {
      stepsLost += lastStep - e.step + 1
      orderViolations.push(`step ${e.step} committed again after step ${lastStep}`)
    } else if (e.step > lastStep + 1) {
      orderViolations.push(`steps ${lastStep + 1}..${e.step - 1} skipped`)
    }
    lastStep = Math.max(lastStep, e.step)
    committed = Math.max(committed, e.step + 1)
    releaseSteps()
  })

  const deadline = new AbortController()
  const onOuterAbort = (): void => { deadline.abort(options.signal?.reason) }
  options.signal?.addEventListener('abort', onOuterAbort, { once: true })
  const deadlineTimer = clock.setTimeout(() => { deadline.abort(new Error('scenario timeout')) }, s.invariants.timeoutMs)
  let outcome: JobOutcome | undefined
  let error: string | undefined
  let leaks: string[] = []
  try {
    await driver.start(job, { signal: deadline.signal })
    for (const p of planned) {
      if (p.trigger.atMs === undefined) continue
      const t = clock.setTimeout(() => { timers.delete(t); enqueue(p) }, p.trigger.atMs)
      timers.add(t)
    }
    releaseSteps()
    outcome = await raceSignal(driver.finished({ signal: deadline.signal }), deadline.signal)
  } catch (err) {
    const e = err as Error
    error = deadline.signal.aborted && options.signal?.aborted !== true
      ? `job did not finish within ${s.invariants.timeoutMs} ms (committed ${committed} of ${s.job.steps})`
      : `${e.name}: ${e.message}`
  } finally {
    stopped = true
    deadlineTimer.cancel()
    options.signal?.removeEventListener('abort', onOuterAbort)
    for (const t of timers) t.cancel()
    timers.clear()
    offCommit()
    await chain.catch(() => {})
    await Promise.all([...sideTasks])
    for (const h of handles) await h.revert().catch(() => {})
    handles.clear()
    await driver.stop().catch((err: unknown) => { logger.warn({ err }, 'driver stop failed') })
    leaks = await driver.leaks()
  }
  if (error === undefined && options.signal?.aborted === true) error = 'aborted'

  const recoveries = driver.recoveries()
  const mttr = mttrOf(recoveries)
  const finalCommitted = outcome?.committed ?? committed
  if (outcome !== undefined && finalCommitted < s.job.steps) stepsLost += s.job.steps - finalCommitted
  const checks: InvariantCheck[] = []
  const inv = s.invariants
  const check = (invariant: string, ok: boolean, detail: string): void => { checks.push({ invariant, ok, detail }) }
  if (inv.finishes) check('finishes', outcome !== undefined, outcome !== undefined ? `finished with ${finalCommitted} committed steps` : error ?? 'did not finish')
  if (inv.committedMonotonic) check('committedMonotonic', orderViolations.length === 0, orderViolations.length === 0 ? `${lastStep + 1} steps committed once each, in order` : orderViolations.slice(0, 5).join('; '))
  if (inv.allStepsCommitted) check('allStepsCommitted', finalCommitted === s.job.steps, `committed ${finalCommitted} of ${s.job.steps}`)
  let bitIdentical: boolean | undefined
  if (options.baseline !== undefined && outcome !== undefined) {
    const ref = options.baseline.checksums[0]
    bitIdentical = ref !== undefined && outcome.checksums.length > 0 && outcome.checksums.every((c) => c === ref)
  }
  if (inv.bitIdentical) {
    if (options.baseline === undefined) check('bitIdentical', false, 'no baseline given (runBaseline)')
    else check('bitIdentical', bitIdentical === true, `final checksums [${(outcome?.checksums ?? []).map((c) => c.toString(16)).join(', ')}] vs baseline ${options.baseline.checksums[0]?.toString(16) ?? 'none'}`)
  }
  if (inv.loss !== undefined) {
    const base = options.baseline?.loss
    const got = outcome?.loss
    if (base === undefined || got === undefined) check('loss', false, base === undefined ? 'no baseline loss given' : 'the job reported no final loss')
    else {
      const bound = base * (1 + inv.loss.maxRelativeIncrease) + inv.loss.maxAbsoluteIncrease
      check('loss', got <= bound, `final loss ${got.toPrecision(6)} vs bound ${bound.toPrecision(6)} (baseline ${base.toPrecision(6)})`)
    }
  }
  if (inv.noProcessLeak) check('noProcessLeak', leaks.length === 0, leaks.length === 0 ? 'nothing left running' : `still running: ${leaks.join(', ')}`)
  if (inv.mttr !== undefined) check('mttr', mttr.p99 <= inv.mttr.p99Ms, `p99 recovery ${mttr.p99.toFixed(1)} ms over ${mttr.count} recoveries (bound ${inv.mttr.p99Ms} ms)`)
  if (inv.minRecoveries !== undefined) check('minRecoveries', recoveries.length >= inv.minRecoveries, `${recoveries.length} recoveries (at least ${inv.minRecoveries} expected)`)
  const reasons = checks.filter((c) => !c.ok).map((c) => `${c.invariant}: ${c.detail}`)

  return {
    scenario: s.name,
    seed: s.seed,
    driver: driver.name,
    verdict: reasons.length === 0 ? 'pass' : 'fail',
    expected: s.expect,
    reasons,
    checks,
    faultsByClass: log.counts(),
    injected,
    recoveries,
    mttr,
    stepsLost,
    committed: finalCommitted,
    steps: s.job.steps,
    ...(outcome?.loss === undefined ? {} : { finalLoss: outcome.loss }),
    ...(options.baseline?.loss === undefined ? {} : { baselineLoss: options.baseline.loss }),
    ...(bitIdentical === undefined ? {} : { bitIdentical }),
    leaks,
    durationMs: clock.now() - started,
    ...(error === undefined ? {} : { error }),
    events: log.events(),
    recording: {
      scenario: s,
      actions: injected.filter((i) => i.skipped === undefined).map((i) => ({ fault: i.fault, step: i.step, targets: i.targets }))
    }
  }
}

/**
 * Runs a scenario: starts its job through `driver`, injects its faults, checks its invariants.
 * Deterministic given the seed: the same faults fire at the same committed steps on the same
 * targets (time-based schedules fire at the same times, which may fall on other steps).
 *
 * @throws `InvalidConfigError` for an invalid scenario, `InvalidParametersError` when the driver cannot inject one of its faults
 */
export async function runScenario (scenario: Scenario | ScenarioInput, options: RunScenarioOptions): Promise<ScenarioReport> {
  const s = parseScenario(scenario)
  const planned: Planned[] = []
  s.faults.forEach((f, i) => {
    for (const trigger of expandSchedule(f.at, { seed: s.seed, key: `fault-${i}`, steps: s.job.steps })) planned.push({ fault: i, trigger })
  })
  return await execute(s, planned, options)
}

/**
 * Runs a recorded scenario again: every fault that was injected fires again at the committed step
 * it fired at, on the same process ids (time-based faults become step-based), so a failure found
 * by a random schedule can be reproduced and debugged.
 */
export async function replayScenario (recording: ScenarioRecording, driver: JobDriver, options: Omit<RunScenarioOptions, 'driver'> = {}): Promise<ScenarioReport> {
  const s = parseScenario(recording.scenario)
  const planned: Planned[] = recording.actions.map((a) => {
    if (s.faults[a.fault] === undefined) throw new InvalidParametersError(`Recording names fault ${a.fault}, the scenario has ${s.faults.length}`)
    return { fault: a.fault, trigger: { step: a.step }, targets: a.targets }
  })
  return await execute(s, planned, { ...options, driver })
}

/** A short human summary of a report (for logs and test failures). */
export function formatReport (r: ScenarioReport): string {
  const lines = [
    `scenario ${r.scenario} (seed ${r.seed}, driver ${r.driver}): ${r.verdict.toUpperCase()}${r.expected === 'fail' ? ' (expected to fail)' : ''}`,
    `  committed ${r.committed}/${r.steps}, steps lost ${r.stepsLost}, ${r.injected.length} faults injected, ${r.mttr.count} recoveries (p50 ${r.mttr.p50.toFixed(1)} ms, p99 ${r.mttr.p99.toFixed(1)} ms)`,
    `  faults: ${Object.entries(r.faultsByClass).map(([k, v]) => `${k}=${v}`).join(' ') || 'none'}`
  ]
  if (r.finalLoss !== undefined) lines.push(`  final loss ${r.finalLoss.toPrecision(6)}${r.baselineLoss === undefined ? '' : ` (baseline ${r.baselineLoss.toPrecision(6)})`}`)
  for (const c of r.checks) lines.push(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.invariant}: ${c.detail}`)
  if (r.error !== undefined) lines.push(`  error: ${r.error}`)
  return lines.join('\n')
}
