/**
 * `phalanx launch`: one coordinator process and N worker processes on this machine, scheduled
 * faults, a live progress display, per-process logs in a run directory, and a summary.
 *
 * The launcher learns progress from its children's Node IPC channel: the coordinator process sends
 * its quorum, commit, suspect, recovery and done events, workers their losses, heals and final
 * checksums. A fault scheduled at step N therefore fires right after the commit of step N.
 *
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, mkdirSync, openSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { InvalidParametersError, type AbortOptions, type PhalanxConfig } from '@phalanx/core'
import type { RecoveryRecord } from '@phalanx/coordinator'
import type { JobStatus } from './coordinator-process.js'
import { isProcessEvent, type ProcessEvent } from './events.js'
import { describeFault, type Fault } from './faults.js'
import { createProgressDisplay, ms, recoveryLine, type ProgressOutput } from './progress.js'

/** Tunables of {@link launch}. */
export interface LaunchInit {
  /** The resolved configuration (written to `<runDir>/config.json` for the children). */
  config: PhalanxConfig
  /** Built-in job name or job module path. */
  job: string
  /** `--job-opt` values handed to every worker. */
  jobOptions?: Readonly<Record<string, unknown>>
  /** Workers started at once. */
  workers: number
  /** Scheduled faults. */
  faults?: readonly Fault[]
  /** Directory of this run's logs, WAL, config and results (created). */
  runDir: string
  /** Path of the `phalanx` entry script the children run. */
  bin: string
  /**
   * Coordinator port on 127.0.0.1.
   * @default a free port
   */
  port?: number
  /**
   * How long the first rendezvous waits for more workers once one joined.
   * @default 2000
   */
  lastCallMs?: number
  /**
   * Gives up (and kills everything) after this long.
   * @default 600000
   */
  timeoutMs?: number
  /** Writes the summary as JSON here too. */
  summaryJson?: string
  /** Extra Node flags for the children (e.g. `--expose-gc`). */
  nodeArgs?: readonly string[]
  /**
   * Start a snapshot holder (`phalanx holder`, its own process group, slots in `<runDir>/holder`)
   * and have every worker snapshot to it at each commit (`PHALANX_HOLDER`); a worker restarted
   * with the same id then restores from it instead of healing from peers.
   * @default false
   */
  snapshots?: boolean
}

/** Where {@link launch} writes. */
export interface LaunchOutput {
  /** Progress and events (stderr). */
  progress: ProgressOutput
  /** The final summary (stdout). */
  summary: (text: string) => void
}

/** What happened to one scheduled fault. */
export interface FaultOutcome {
  fault: Fault
  /** Wall time it fired (ms since the launch started); undefined when it never fired. */
  firedAtMs?: number
  /** Committed steps when it fired. */
  firedAtStep?: number
  /** From firing to the next committed step, ms: the user-visible time to recover. */
  nextCommitMs?: number
  /** Id of the worker a join started. */
  joined?: string
}

/** One worker's outcome. */
export interface WorkerOutcome {
  id: string
  exitCode: number | null
  signal: string | null
  steps?: number
  checksum?: number
  loss?: number
  accuracy?: number
  killed: boolean
  /** Still waiting for a seat when the job was done, so it was stopped. */
  idleAtEnd?: boolean
}

/** The launch summary (also written as JSON with `summaryJson`). */
export interface LaunchSummary {
  ok: boolean
  job: string
  runDir: string
  steps: number
  committed: number
  epoch: number
  durationMs: number
  stepsPerSecond: number
  loss?: number
  accuracy?: number
  /** Final-state checksums of the workers that trained every step (one value when they agree). */
  checksums: number[]
  workers: WorkerOutcome[]
  recoveries: RecoveryRecord[]
  faults: FaultOutcome[]
  heals: Array<{ id: string, step: number, bytes: number, ms: number, sources: string[] }>
  /** The coordinator's final `/status`. */
  coordinator?: JobStatus
  error?: string
}

interface Child {
  id: string
  proc: ChildProcess
  exited: Promise<void>
  exitCode: number | null
  signal: string | null
  killed: boolean
  stopped: boolean
}

/** A free TCP port on 127.0.0.1 (released before it is returned; the coordinator binds it next). */
export async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(0, '127.0.0.1', resolve) })
  const address = server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
  return port
}

function hex (n: number): string {
  return n.toString(16).padStart(8, '0')
}

/** Formats the summary for people. */
export function formatSummary (s: LaunchSummary): string {
  const lines: string[] = []
  const head = s.ok ? 'finished' : 'FAILED'
  lines.push(`phalanx: job ${s.job} ${head}: ${s.committed}/${s.steps} steps in ${(s.durationMs / 1000).toFixed(1)} s (${s.stepsPerSecond.toFixed(1)} steps/s), epoch ${s.epoch}`)
  if (s.error !== undefined) lines.push(`  error: ${s.error}`)
  const metrics: string[] = []
  if (s.loss !== undefined) metrics.push(`final loss ${s.loss.toPrecision(5)}`)
  if (s.accuracy !== undefined) metrics.push(`final accuracy ${(100 * s.accuracy).toFixed(2)}%`)
  if (metrics.length > 0) lines.push(`  ${metrics.join(', ')}`)
  const full = s.workers.filter((w) => w.checksum !== undefined && w.steps === s.steps)
  if (full.length > 0) {
    lines.push(`  final state crc32c ${s.checksums.map(hex).join(', ')} on ${full.map((w) => w.id).join(', ')}${s.checksums.length === 1 ? (full.length > 1 ? ' (bit-identical)' : '') : ' (DIFFERENT)'}`)
  }
  const ended = s.workers.filter((w) => w.killed || (w.exitCode !== 0 && w.checksum === undefined))
    .map((w) => `${w.id} (${w.killed ? 'killed' : w.idleAtEnd === true ? 'joined too late, stopped' : w.signal ?? `exit ${String(w.exitCode)}`})`)
  if (ended.length > 0) lines.push(`  workers without a final state: ${ended.join(', ')}`)
  if (s.faults.length > 0) {
    lines.push('  faults:')
    for (const f of s.faults) {
      const when = f.firedAtStep === undefined ? 'never fired' : `fired at step ${f.firedAtStep}`
      const next = f.nextCommitMs === undefined ? '' : `, next commit ${ms(f.nextCommitMs)} ms later`
      lines.push(`    ${describeFault(f.fault)}${f.joined === undefined ? '' : ` (${f.joined})`}: ${when}${next}`)
    }
  }
  if (s.heals.length > 0) {
    lines.push('  heals:')
    for (const h of s.heals) lines.push(`    ${h.id} healed step ${h.step} (${h.bytes} B) from ${h.sources.join(',')} in ${ms(h.ms)} ms`)
  }
  if (s.recoveries.length > 0) {
    lines.push('  recoveries (MTTR by phase, ms):')
    const rows = [['reason', 'peers', 'step', 'detect', 'quorum', 'reconfigure', 'heal', 'first commit', 'total']]
    for (const r of s.recoveries) rows.push([r.reason, r.peers.join(','), String(r.step), ms(r.detectMs), ms(r.quorumMs), ms(r.reconfigureMs), ms(r.healMs), ms(r.firstCommitMs), ms(r.totalMs)])
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] as string).length)))
    for (const r of rows) lines.push('    ' + r.map((c, i) => (i < 2 ? c.padEnd(widths[i] as number) : c.padStart(widths[i] as number))).join('  '))
  } else {
    lines.push('  recoveries: none')
  }
  if (s.coordinator !== undefined) {
    const rejected = Object.entries(s.coordinator.transport.rejected).map(([k, v]) => `${k} ${v}`).join(', ')
    lines.push(`  coordinator: ${s.coordinator.transport.received} messages received, rejected: ${rejected === '' ? 'none' : rejected}, stale-epoch dropped ${s.coordinator.staleDropped}`)
  }
  lines.push(`  logs: ${s.runDir}`)
  return lines.join('\n')
}

/**
 * Runs a job on this machine and resolves with its summary. Every process it started is gone when
 * it resolves; `options.signal` interrupts the run (the summary then has `ok: false`).
 */
export async function launch (init: LaunchInit, output: LaunchOutput, options: AbortOptions = {}): Promise<LaunchSummary> {
  const { config } = init
  const steps = config.job.steps
  if (!Number.isInteger(init.workers) || init.workers < 1) throw new InvalidParametersError(`--workers must be a positive integer, got ${init.workers}`)
  mkdirSync(init.runDir, { recursive: true })
  const configFile = join(init.runDir, 'config.json')
  writeFileSync(configFile, JSON.stringify(config, null, 2) + '\n')
  const port = init.port ?? await freePort()
  const address = `tcp://127.0.0.1:${port}`
  const wal = join(init.runDir, 'coordinator.wal')
  const display = createProgressDisplay(output.progress)
  const t0 = performance.now()
  const now = (): number => performance.now() - t0

  const children = new Map<string, Child>()
  const workers: WorkerOutcome[] = []
  const faults: FaultOutcome[] = (init.faults ?? []).map((fault) => ({ fault }))
  const recoveries: RecoveryRecord[] = []
  const heals: LaunchSummary['heals'] = []
  const timers = new Set<NodeJS.Timeout>()
  let committed = 0
  let epoch = 0
  let members = 0
  let loss: number | undefined
  let accuracy: number | undefined
  let coordinatorStatus: JobStatus | undefined
  let done = false
  let error: string | undefined
  let nextWorker = init.workers + 1
  const commitTimes: number[] = []
  let firstCommitAt: number | undefined
  let lastCommitAt: number | undefined
  const awaitingCommit: FaultOutcome[] = []
  let settle: (() => void) | undefined
  const finished = new Promise<void>((resolve) => { settle = resolve })
  const fail = (message: string): void => { if (error === undefined) error = message; settle?.() }

  const jobOptArgs = Object.entries(init.jobOptions ?? {}).flatMap(([k, v]) => ['--job-opt', `${k}=${JSON.stringify(v)}`])
  const nodeArgs = [...(init.nodeArgs ?? [])]

  const redraw = (): void => {
    const horizon = now() - 3000
    while (commitTimes.length > 0 && (commitTimes[0] as number) < horizon) commitTimes.shift()
    const span = Math.min(3000, Math.max(1, now()))
    display.update({
      committed, steps, epoch, members, stepsPerSecond: (commitTimes.length * 1000) / span, globalBatch: config.job.globalBatch, recoveries: recoveries.length,
      ...(loss === undefined ? {} : { loss }), ...(accuracy === undefined ? {} : { accuracy })
    })
  }

  const holderAddress = init.snapshots === true ? `ipc://${join(init.runDir, 'holder.sock')}` : undefined
  let holderProc: ChildProcess | undefined
  const startHolder = (address: string): void => {
    const out = openSync(join(init.runDir, 'holder.out'), 'a')
    try {
      // Its own process group: signals aimed at the trainers never reach the holder.
      holderProc = spawn(process.execPath, [...nodeArgs, init.bin, 'holder', '--job', config.job.id, '--listen', address, '--dir', join(init.runDir, 'holder'), '--log-file', join(init.runDir, 'holder.log')], { stdio: ['ignore', out, out, 'ipc'], detached: true })
    } finally {
      closeSync(out)
    }
    holderProc.on('error', (err) => { fail(`cannot start the snapshot holder: ${err.message}`) })
  }
  const stopHolder = async (): Promise<void> => {
    const p = holderProc
    if (p === undefined || p.exitCode !== null || p.signalCode !== null) return
    const exited = new Promise((resolve) => { p.once('exit', resolve) })
    p.kill('SIGTERM')
    await exited
  }

  const spawnChild = (id: string, args: string[], env?: Record<string, string>): Child => {
    const out = openSync(join(init.runDir, `${id}.out`), 'a')
    let proc: ChildProcess
    try {
      proc = spawn(process.execPath, [...nodeArgs, init.bin, ...args, '--log-file', join(init.runDir, `${id}.log`)], { stdio: ['ignore', out, out, 'ipc'], ...(env === undefined ? {} : { env: { ...process.env, ...env } }) })
    } finally {
      closeSync(out)
    }
    const child: Child = { id, proc, exited: Promise.resolve(), exitCode: null, signal: null, killed: false, stopped: false }
    child.exited = new Promise<void>((resolve) => {
      proc.once('exit', (code, signal) => { child.exitCode = code; child.signal = signal; resolve() })
    })
    proc.on('error', (err) => { fail(`cannot start ${id}: ${err.message}`) })
    proc.on('message', (m: unknown) => { if (isProcessEvent(m)) onEvent(id, m) })
    children.set(id, child)
    return child
  }

  let coordinatorReady: (() => void) | undefined
  const startCoordinator = (lastCallMs: number): Promise<void> => {
    const ready = new Promise<void>((resolve) => { coordinatorReady = resolve })
    const child = spawnChild('coordinator', ['coordinator', '--config', configFile, '--listen', address, '--wal', wal, '--status-port', '0', '--last-call-ms', String(lastCallMs)])
    void child.exited.then(() => {
      if (children.get('coordinator') !== child) return
      if (child.killed) return
      if (!done) fail(`coordinator exited (${child.signal ?? `code ${String(child.exitCode)}`}) before the job was done; see ${join(init.runDir, 'coordinator.out')}`)
      else settle?.()
    })
    return ready
  }

  const startWorker = (id: string): Child => {
    const child = spawnChild(id, ['worker', '--config', configFile, '--coordinator', address, '--id', id, '--job', init.job, ...jobOptArgs, '--out', join(init.runDir, `${id}.result.json`)], holderAddress === undefined ? undefined : { PHALANX_HOLDER: holderAddress })
    const outcome: WorkerOutcome = { id, exitCode: null, signal: null, killed: false }
    workers.push(outcome)
    void child.exited.then(() => {
      outcome.exitCode = child.exitCode
      outcome.signal = child.signal
      outcome.killed = child.killed
      if (!child.killed && child.exitCode !== 0 && !done) display.event(`${id} exited unexpectedly (${child.signal ?? `code ${String(child.exitCode)}`}); see ${join(init.runDir, `${id}.out`)}`)
    })
    return child
  }

  const fire = (f: FaultOutcome): void => {
    f.firedAtMs = now()
    f.firedAtStep = committed
    const fault = f.fault
    if (fault.kind === 'join') {
      let id = fault.id ?? `worker-${nextWorker++}`
      while (fault.id === undefined && children.has(id)) id = `worker-${nextWorker++}`
      f.joined = id
      display.event(`join: starting ${id} at step ${committed}`)
      startWorker(id)
      return
    }
    const child = children.get(fault.target)
    if (child === undefined || child.exitCode !== null || child.signal !== null) {
      display.event(`${describeFault(fault)}: no running process ${fault.target}`)
      return
    }
    if (fault.kind === 'kill') {
      child.killed = true
      child.proc.kill('SIGKILL')
      display.event(`kill -9 ${fault.target} at step ${committed}`)
      awaitingCommit.push(f)
      if (fault.target === 'coordinator') {
        void child.exited.then(async () => {
          display.event('restarting the coordinator from its WAL on the same address')
          await startCoordinator(200)
        })
      }
      return
    }
    child.stopped = true
    child.proc.kill('SIGSTOP')
    display.event(`SIGSTOP ${fault.target} at step ${committed} for ${fault.ms} ms`)
    awaitingCommit.push(f)
    const t = setTimeout(() => {
      timers.delete(t)
      child.stopped = false
      if (child.exitCode === null && child.signal === null) {
        child.proc.kill('SIGCONT')
        display.event(`SIGCONT ${fault.target}`)
      }
    }, fault.ms)
    timers.add(t)
  }

  const onEvent = (from: string, e: ProcessEvent): void => {
    switch (e.type) {
      case 'ready':
        coordinatorReady?.()
        break
      case 'quorum':
        epoch = e.epoch
        members = e.active ? e.members.length : 0
        redraw()
        break
      case 'commit': {
        committed = Math.max(committed, e.step + 1)
        commitTimes.push(now())
        firstCommitAt ??= now()
        lastCommitAt = now()
        for (const f of awaitingCommit.splice(0)) f.nextCommitMs = now() - (f.firedAtMs as number)
        for (const f of faults) if (f.firedAtMs === undefined && committed >= f.fault.step && !done) fire(f)
        redraw()
        break
      }
      case 'suspect':
        // Members leaving after the last commit is the job ending, not a fault.
        if (done || committed >= steps) break
        display.event(`suspected ${e.peers.join(',')} (${e.reason}) in epoch ${e.epoch}`)
        break
      case 'recovery':
        recoveries.push(e.record)
        display.event(recoveryLine(e.record))
        break
      case 'done':
        done = true
        committed = e.committed
        epoch = e.epoch
        coordinatorStatus = e.status
        redraw()
        break
      case 'progress':
        if (e.loss !== undefined) loss = e.loss
        if (e.accuracy !== undefined) accuracy = e.accuracy
        redraw()
        break
      case 'heal':
        heals.push({ id: e.id, step: e.step, bytes: e.bytes, ms: e.ms, sources: e.sources })
        display.event(`${e.id} healed step ${e.step} (${e.bytes} B) from ${e.sources.join(',')} in ${ms(e.ms)} ms`)
        break
      case 'result': {
        const w = workers.find((x) => x.id === from)
        if (w !== undefined) {
          w.steps = e.steps
          w.checksum = e.checksum
          if (e.loss !== undefined) { w.loss = e.loss; loss = e.loss }
          if (e.accuracy !== undefined) { w.accuracy = e.accuracy; accuracy = e.accuracy }
        }
        break
      }
      case 'worker-ready':
        break
    }
  }

  const stopAll = async (): Promise<void> => {
    for (const t of timers) clearTimeout(t)
    timers.clear()
    const alive = [...children.values()].filter((c) => c.exitCode === null && c.signal === null)
    for (const c of alive) {
      if (c.stopped) c.proc.kill('SIGCONT')
      c.proc.kill('SIGTERM')
    }
    const grace = setTimeout(() => { for (const c of alive) c.proc.kill('SIGKILL') }, 3000)
    try {
      await Promise.all(alive.map(async (c) => { await c.exited }))
    } finally {
      clearTimeout(grace)
    }
  }

  const onAbort = (): void => { fail('interrupted') }
  options.signal?.addEventListener('abort', onAbort, { once: true })
  const deadline = setTimeout(() => { fail(`timed out after ${init.timeoutMs ?? 600_000} ms`) }, init.timeoutMs ?? 600_000)
  try {
    display.event(`run directory ${init.runDir}; coordinator at ${address}; ${init.workers} workers; job ${init.job}`)
    if (holderAddress !== undefined) startHolder(holderAddress)
    await Promise.race([startCoordinator(init.lastCallMs ?? 2000), finished])
    if (error === undefined) {
      for (let i = 1; i <= init.workers; i++) startWorker(`worker-${i}`)
      for (const f of faults) if (f.fault.step === 0 && f.firedAtMs === undefined) fire(f)
      await finished
    }
    if (error === undefined) {
      // The job is done: workers finish on their own; stragglers are stopped after a grace period.
      // Members heard `done` and exit at once; a worker still waiting for a seat has nothing left to do.
      const grace = setTimeout(() => {
        for (const c of children.values()) {
          if (c.id === 'coordinator' || c.exitCode !== null || c.signal !== null) continue
          const w = workers.find((x) => x.id === c.id)
          if (w !== undefined) w.idleAtEnd = true
          c.proc.kill('SIGTERM')
        }
      }, 3000)
      try {
        await Promise.all([...children.values()].map(async (c) => { await c.exited }))
      } finally {
        clearTimeout(grace)
      }
    }
  } finally {
    clearTimeout(deadline)
    options.signal?.removeEventListener('abort', onAbort)
    await stopAll()
    await stopHolder()
    display.end()
  }
  const full = workers.filter((w) => w.checksum !== undefined && w.steps === steps)
  const checksums = [...new Set(full.map((w) => w.checksum as number))]
  if (error === undefined && full.length === 0) error = 'no worker finished every step'
  if (error === undefined && checksums.length > 1) error = 'workers finished with different final states'
  const durationMs = now()
  const summary: LaunchSummary = {
    ok: error === undefined,
    job: init.job,
    runDir: init.runDir,
    steps,
    committed,
    epoch,
    durationMs,
    // Training speed, from the first commit to the last (process start-up excluded).
    stepsPerSecond: firstCommitAt === undefined || lastCommitAt === undefined || committed < 2 ? 0 : (1000 * (committed - 1)) / Math.max(1, lastCommitAt - firstCommitAt),
    ...(loss === undefined ? {} : { loss }),
    ...(accuracy === undefined ? {} : { accuracy }),
    checksums,
    workers,
    recoveries,
    faults,
    heals,
    ...(coordinatorStatus === undefined ? {} : { coordinator: coordinatorStatus }),
    ...(error === undefined ? {} : { error })
  }
  writeFileSync(join(init.runDir, 'summary.json'), JSON.stringify(summary, null, 2) + '\n')
  if (init.summaryJson !== undefined) writeFileSync(init.summaryJson, JSON.stringify(summary, null, 2) + '\n')
  output.summary(formatSummary(summary))
  return summary
}
