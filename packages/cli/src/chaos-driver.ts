/**
 * A `JobDriver` (`@phalanx/chaos`) over real processes: the same `phalanx coordinator` and
 * `phalanx worker` children that `phalanx launch` starts, over loopback ZeroMQ, with the chaos glue
 * of `chaos-child.ts` switched on in each. Process faults are signals (`SIGKILL`, `SIGSTOP`/`SIGCONT`),
 * in-process faults travel over the Node IPC channel to the child's chaos agent (crash, event-loop
 * stall, network rules and partitions on its chaos transport). Progress comes from the children's
 * IPC events: `commit`, `recovery`, `quorum` and `done` from the coordinator, `result` from workers.
 *
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, mkdirSync, openSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import {
  ClosedError, InvalidConfigError, InvalidParametersError, TimeoutError, componentLogger, fromWire, raceSignal, resolveConfig,
  type AbortOptions, type Logger, type PhalanxConfig
} from '@phalanx/core'
import type {
  DriverJobStatus, DriverRecovery, FaultKind, InjectionHandle, InProcessFault, JobDriver, JobSpec, ProcessInfo, ProcessSignal
} from '@phalanx/chaos'
import { CHAOS_ENV, type ChaosAckEvent, type ChaosControlMessage, type ChildChaosSettings } from './chaos-child.js'
import { isProcessEvent, type ProcessEvent } from './events.js'
import { freePort } from './launch.js'

/** Tunables of {@link createLaunchDriver}. */
export interface LaunchDriverInit {
  /** Path of the `phalanx` entry script the children run (`packages/cli/bin/phalanx.js`). */
  bin: string
  /** Directory of the run's config, WAL and per-process logs (created; one sub-directory per start). */
  runDir: string
  /**
   * Seed of the children's network fault decisions.
   * @default 1
   */
  seed?: number
  /**
   * Built-in job name or job module path; a scenario's `job.config.job` overrides it.
   * @default 'linear'
   */
  job?: string
  /** Job options (`--job-opt`); merged under a scenario's `job.config.jobOptions`. */
  jobOptions?: Readonly<Record<string, unknown>>
  /**
   * Configuration layered under a scenario's `job.config` (timeouts, batch sizes, log level).
   * @default `{ job: { globalBatch: 64, microBatch: 8 }, log: { level: 'info' } }` over the `local` preset
   */
  config?: Readonly<Record<string, unknown>>
  /**
   * How long the first rendezvous waits for more workers once `minWorkers` joined.
   * @default 1500
   */
  lastCallMs?: number
  /**
   * After the job is done, how long workers get to exit on their own before they are sent
   * `SIGCONT` + `SIGTERM`; after as long again, survivors get `SIGKILL`.
   * @default 3000
   */
  exitGraceMs?: number
  /**
   * How long an IPC fault command waits for the child's acknowledgement.
   * @default 5000
   */
  ackTimeoutMs?: number
  /** Extra Node flags for the children. */
  nodeArgs?: readonly string[]
}

/** Collaborators of {@link createLaunchDriver}. */
export interface LaunchDriverComponents {
  /** @default silent */
  logger?: Logger
}

/** The launch driver: a `JobDriver` plus where its current run lives. */
export interface LaunchDriver extends JobDriver {
  /** Directory of the current (or last) run. */
  readonly currentRunDir: string | undefined
}

/**
 * Every fault class reaches a launched child: signals, the agent's IPC faults on its chaos transport,
 * skewed clock and training hooks, and `disk` on workers that write checkpoints (`job.config.checkpoints`;
 * elsewhere the child refuses it and the runner records the fault as not injected).
 */
const SUPPORTED: ReadonlySet<FaultKind> = new Set<FaultKind>([
  'kill', 'hang', 'join', 'crash', 'stall', 'network', 'partition', 'byzantine', 'label-flip', 'disk', 'clock-skew'
])

interface Child {
  id: string
  role: 'coordinator' | 'worker'
  proc: ChildProcess
  exited: Promise<void>
  alive: boolean
  /** SIGSTOPped and not yet continued. */
  stopped: boolean
  /** Killed or crashed on purpose. */
  faulted: boolean
  result?: { steps: number, checksum: number, loss?: number }
}

function toRecovery (r: { reason: string, peers: string[], step: number, detectMs: number, quorumMs: number, firstCommitMs: number, totalMs: number, healMs?: number | undefined }): DriverRecovery {
  return {
    reason: r.reason, peers: r.peers, step: r.step, detectMs: r.detectMs, quorumMs: r.quorumMs, firstCommitMs: r.firstCommitMs, totalMs: r.totalMs,
    ...(r.healMs === undefined ? {} : { healMs: r.healMs })
  }
}

/**
 * Splits a scenario's `job.config` into the job to run, its options, and configuration overrides.
 * @throws `InvalidConfigError` for a job name or options of the wrong type
 */
export function splitJobConfig (config: Readonly<Record<string, unknown>>): { job?: string, jobOptions?: Record<string, unknown>, snapshots?: boolean, checkpointEvery?: number, overrides: Record<string, unknown> } {
  const { job, jobOptions, snapshots, checkpoints, ...overrides } = config
  if (snapshots !== undefined && typeof snapshots !== 'boolean') throw new InvalidConfigError(`job.config.snapshots must be true or false, got ${JSON.stringify(snapshots)}`)
  let checkpointEvery: number | undefined
  if (checkpoints !== undefined && checkpoints !== false) {
    const every = checkpoints === true ? 5 : typeof checkpoints === 'object' && checkpoints !== null ? (checkpoints as { every?: unknown }).every : undefined
    if (typeof every !== 'number' || !Number.isInteger(every) || every < 1) throw new InvalidConfigError(`job.config.checkpoints must be true, false or { every: <positive integer> }, got ${JSON.stringify(checkpoints)}`)
    checkpointEvery = every
  }
  if (job !== undefined && typeof job !== 'string') throw new InvalidConfigError(`job.config.job must be a job name or module path, got ${JSON.stringify(job)}`)
  if (jobOptions !== undefined && (typeof jobOptions !== 'object' || jobOptions === null || Array.isArray(jobOptions))) throw new InvalidConfigError('job.config.jobOptions must be an object')
  return {
    ...(job === undefined ? {} : { job }),
    ...(jobOptions === undefined ? {} : { jobOptions: jobOptions as Record<string, unknown> }),
    ...(snapshots === undefined ? {} : { snapshots }),
    ...(checkpointEvery === undefined ? {} : { checkpointEvery }),
    overrides
  }
}

/** Creates a {@link LaunchDriver}. Each `start` uses a fresh sub-directory of `runDir`. */
export function createLaunchDriver (init: LaunchDriverInit, components: LaunchDriverComponents = {}): LaunchDriver {
  const logger = componentLogger(components.logger, 'chaos-driver')
  const ackTimeoutMs = init.ackTimeoutMs ?? 5000
  const children = new Map<string, Child>()
  const commitListeners = new Set<(e: { step: number, epoch: number, loss?: number }) => void>()
  const recoveries: DriverRecovery[] = []
  const acks = new Map<number, (e: ChaosAckEvent) => void>()
  let spec: JobSpec | undefined
  let config: PhalanxConfig | undefined
  let runDir: string | undefined
  let configFile = ''
  let address = ''
  let wal = ''
  let jobName = init.job ?? 'linear'
  let jobOptArgs: string[] = []
  let starts = 0
  let nextRef = 1
  let nextWorker = 1
  let phase: DriverJobStatus['phase'] = 'stopped'
  let committed = 0
  let epoch = 0
  let members: string[] = []
  let loss: number | undefined
  let doneEvent: { committed: number, epoch: number } | undefined
  let failure: Error | undefined
  let coordinatorReady: (() => void) | undefined
  /** The per-host snapshot holder (`job.config.snapshots`): its own process group, never a fault target. */
  let holder: { proc: ChildProcess, exited: Promise<void>, address: string } | undefined
  /** Workers write L2 checkpoints every this many snapshots (`job.config.checkpoints`), through chaosStorage. */
  let checkpointEvery: number | undefined
  // Wakes `finished()` when something it waits on changed (done, a child exited, a failure).
  const wakers = new Set<() => void>()
  const wake = (): void => { for (const w of [...wakers]) w() }

  const onEvent = (from: string, e: ProcessEvent | ChaosAckEvent): void => {
    switch (e.type) {
      case 'chaos-ack': acks.get(e.ref)?.(e); break
      case 'ready': coordinatorReady?.(); break
      case 'quorum':
        epoch = e.epoch
        members = e.active ? [...e.members] : []
        break
      case 'commit': {
        if (phase === 'starting') phase = 'running'
        committed = Math.max(committed, e.step + 1)
        epoch = Math.max(epoch, e.epoch)
        const ev = { step: e.step, epoch: e.epoch, ...(loss === undefined ? {} : { loss }) }
        for (const l of [...commitListeners]) l(ev)
        break
      }
      case 'recovery': recoveries.push(toRecovery(e.record)); break
      case 'failed':
        // The coordinator's own words (e.g. which committed step was lost), not just its exit code.
        failure ??= fromWire({ ...e.error, retryable: false })
        wake()
        break
      case 'done':
        doneEvent = { committed: e.committed, epoch: e.epoch }
        committed = e.committed
        epoch = e.epoch
        wake()
        break
      case 'progress': if (e.loss !== undefined) loss = e.loss; break
      case 'result': {
        const c = children.get(from)
        if (c !== undefined) c.result = { steps: e.steps, checksum: e.checksum, ...(e.loss === undefined ? {} : { loss: e.loss }) }
        break
      }
      default: break
    }
  }

  const spawnChild = (id: string, role: Child['role'], args: string[]): Child => {
    const dir = runDir as string
    const out = openSync(join(dir, `${id}.out`), 'a')
    const settings: ChildChaosSettings = { seed: init.seed ?? 1, recovery: spec?.recovery !== false }
    const env: NodeJS.ProcessEnv = { ...process.env, [CHAOS_ENV]: JSON.stringify(settings) }
    if (role === 'worker' && holder !== undefined) env.PHALANX_HOLDER = holder.address
    if (role === 'worker' && checkpointEvery !== undefined) {
      env.PHALANX_CHECKPOINT_DIR = join(dir, 'checkpoints')
      env.PHALANX_CHECKPOINT_EVERY = String(checkpointEvery)
    }
    let proc: ChildProcess
    try {
      proc = spawn(process.execPath, [...(init.nodeArgs ?? []), init.bin, ...args, '--log-file', join(dir, `${id}.log`)], {
        stdio: ['ignore', out, out, 'ipc'],
        env
      })
    } finally {
      closeSync(out)
    }
    const child: Child = { id, role, proc, exited: Promise.resolve(), alive: true, stopped: false, faulted: false }
    child.exited = new Promise<void>((resolve) => {
      proc.once('exit', (code, signal) => {
        child.alive = false
        logger.info({ id, code, signal }, 'child exited')
        if (role === 'coordinator' && children.get(id) === child && !child.faulted && doneEvent === undefined && phase !== 'stopped') {
          failure ??= new ClosedError(`coordinator exited (${signal ?? `code ${String(code)}`}) before the job was done; see ${join(dir, 'coordinator.out')}`)
        }
        wake()
        resolve()
      })
    })
    proc.on('error', (err) => { failure ??= err; wake() })
    proc.on('message', (m: unknown) => { if (isProcessEvent(m)) onEvent(id, m as ProcessEvent | ChaosAckEvent) })
    children.set(id, child)
    return child
  }

  const startCoordinator = async (lastCallMs: number, options: AbortOptions): Promise<Child> => {
    const ready = new Promise<void>((resolve) => { coordinatorReady = resolve })
    const child = spawnChild('coordinator', 'coordinator', ['coordinator', '--config', configFile, '--listen', address, '--wal', wal, '--status-port', '0', '--last-call-ms', String(lastCallMs)])
    const signal = options.signal ?? new AbortController().signal
    await raceSignal(Promise.race([ready, child.exited.then(() => { throw new ClosedError('coordinator exited before it was ready') })]), signal)
    return child
  }

  const startHolder = async (options: AbortOptions): Promise<void> => {
    const dir = runDir as string
    const address = `ipc://${join(dir, 'holder.sock')}`
    const out = openSync(join(dir, 'holder.out'), 'a')
    let proc: ChildProcess
    try {
      // Its own process group, as `phalanx launch --snapshots` does: signals aimed at trainers never reach it.
      proc = spawn(process.execPath, [...(init.nodeArgs ?? []), init.bin, 'holder', '--job', 'chaos', '--listen', address, '--dir', join(dir, 'holder'), '--log-file', join(dir, 'holder.log')], {
        stdio: ['ignore', out, out, 'ipc'], detached: true
      })
    } finally {
      closeSync(out)
    }
    const exited = new Promise<void>((resolve) => { proc.once('exit', () => { resolve() }) })
    holder = { proc, exited, address }
    const ready = new Promise<void>((resolve) => {
      proc.on('message', (m: unknown) => { if (isProcessEvent(m) && (m as { type: string }).type === 'holder-ready') resolve() })
    })
    const signal = options.signal ?? new AbortController().signal
    await raceSignal(Promise.race([ready, exited.then(() => { throw new ClosedError(`the snapshot holder exited before it was ready; see ${join(dir, 'holder.out')}`) })]), signal)
  }

  const stopHolder = async (): Promise<void> => {
    const h = holder
    holder = undefined
    if (h === undefined || h.proc.exitCode !== null || h.proc.signalCode !== null) return
    h.proc.kill('SIGTERM')
    const kill = setTimeout(() => { h.proc.kill('SIGKILL') }, 3000)
    try { await h.exited } finally { clearTimeout(kill) }
  }

  const startWorker = (id: string): Child =>
    spawnChild(id, 'worker', ['worker', '--config', configFile, '--coordinator', address, '--id', id, '--job', jobName, ...jobOptArgs, '--out', join(runDir as string, `${id}.result.json`)])

  const alive = (id: string): Child => {
    const c = children.get(id)
    if (c === undefined || !c.alive) throw new InvalidParametersError(`No running process ${id}`)
    return c
  }

  const command = async (c: Child, message: ChaosControlMessage): Promise<void> => {
    if (c.stopped) {
      // A SIGSTOPped child cannot answer: the message waits in its IPC pipe and takes effect when it
      // is continued. Waiting for the acknowledgement would hold every later fault (and the SIGCONT
      // itself) for ackTimeoutMs.
      await new Promise<void>((resolve, reject) => { c.proc.send(message, (err) => { if (err !== null) reject(err); else resolve() }) })
      return
    }
    let timer: NodeJS.Timeout | undefined
    try {
      const ack = await new Promise<ChaosAckEvent>((resolve, reject) => {
        acks.set(message.ref, resolve)
        timer = setTimeout(() => { reject(new TimeoutError(`${c.id} did not acknowledge ${message.type} within ${ackTimeoutMs} ms`)) }, ackTimeoutMs)
        void c.exited.then(() => { reject(new ClosedError(`${c.id} exited before acknowledging ${message.type}`)) })
        c.proc.send(message, (err) => { if (err !== null) reject(err) })
      })
      if (!ack.ok) throw new InvalidParametersError(`${c.id} refused ${message.type}: ${ack.error ?? 'unknown error'}`)
    } finally {
      clearTimeout(timer)
      acks.delete(message.ref)
    }
  }

  const stopAll = async (): Promise<void> => {
    const running = [...children.values()].filter((c) => c.alive)
    for (const c of running) {
      if (c.stopped) c.proc.kill('SIGCONT')
      c.proc.kill('SIGTERM')
    }
    const grace = setTimeout(() => { for (const c of running) if (c.alive) c.proc.kill('SIGKILL') }, 3000)
    try {
      await Promise.all(running.map(async (c) => { await c.exited }))
    } finally {
      clearTimeout(grace)
    }
  }

  const driver: LaunchDriver = {
    name: 'launch',
    get currentRunDir () { return runDir },
    supports: (kind) => SUPPORTED.has(kind),

    async start (job, options = {}) {
      if (phase !== 'stopped') throw new InvalidParametersError('The launch driver is already running a job; stop it first')
      const split = splitJobConfig(job.config)
      const snapshots = split.snapshots === true
      checkpointEvery = split.checkpointEvery
      const base = { preset: 'local', job: { globalBatch: 64, microBatch: 8 }, log: { level: 'info' } }
      const jobLayer = { job: { id: 'chaos', steps: job.steps, minWorkers: job.minWorkers, seed: job.seed, deterministic: job.deterministic } }
      // Recovery disabled: nothing is ever suspected (the control that must fail).
      const noRecovery = job.recovery ? {} : { timeouts: { suspectAfterMs: 3_600_000, stepTimeoutMs: 7_200_000, rendezvousTimeoutMs: 3_600_000 } }
      const draft = resolveConfig(base, init.config ?? {}, split.overrides, jobLayer, noRecovery)
      // More workers than micro-batches per step could not all get work: the rest wait as spares.
      const maxWorkers = Math.max(job.minWorkers, Math.min(job.maxWorkers, Math.floor(draft.job.globalBatch / draft.job.microBatch)))
      config = resolveConfig(draft, { job: { maxWorkers } })
      spec = job
      jobName = split.job ?? init.job ?? 'linear'
      const opts = { ...(init.jobOptions ?? {}), ...(split.jobOptions ?? {}) }
      jobOptArgs = Object.entries(opts).flatMap(([k, v]) => ['--job-opt', `${k}=${JSON.stringify(v)}`])
      starts++
      runDir = join(init.runDir, `run-${starts}`)
      // A WAL, holder slots or checkpoints left by an earlier run in the same directory would be
      // resumed as if they were this job's: every start begins empty.
      rmSync(runDir, { recursive: true, force: true })
      mkdirSync(runDir, { recursive: true })
      configFile = join(runDir, 'config.json')
      writeFileSync(configFile, JSON.stringify(config, null, 2) + '\n')
      wal = join(runDir, 'coordinator.wal')
      address = `tcp://127.0.0.1:${await freePort()}`
      children.clear()
      recoveries.length = 0
      committed = 0
      epoch = 0
      members = []
      loss = undefined
      doneEvent = undefined
      failure = undefined
      nextWorker = job.workers + 1
      phase = 'starting'
      logger.info({ runDir, workers: job.workers, steps: job.steps, job: jobName }, 'starting job')
      try {
        if (snapshots) await startHolder(options)
        await startCoordinator(init.lastCallMs ?? 1500, options)
        for (let i = 1; i <= job.workers; i++) startWorker(`worker-${i}`)
      } catch (err) {
        phase = 'failed'
        throw err
      }
    },

    processes () {
      return [...children.values()].map((c) => {
        const rank = members.indexOf(c.id)
        return { id: c.id, role: c.role, alive: c.alive && !c.faulted, ...(c.proc.pid === undefined ? {} : { pid: c.proc.pid }), ...(rank >= 0 && c.role === 'worker' ? { rank } : {}) } satisfies ProcessInfo
      })
    },

    async signal (id: string, sig: ProcessSignal) {
      const c = alive(id)
      // After the end nothing may be frozen: it could never hear that the job is done.
      if (sig === 'SIGSTOP' && doneEvent !== undefined) throw new InvalidParametersError(`The job is done: ${id} is not stopped`)
      if (sig === 'SIGKILL') c.faulted = true
      if (sig === 'SIGSTOP') c.stopped = true
      if (sig === 'SIGCONT') c.stopped = false
      c.proc.kill(sig)
    },

    async inject (id: string, fault: InProcessFault) {
      if (!SUPPORTED.has(fault.kind)) throw new InvalidParametersError(`The launch driver cannot inject "${fault.kind}" into a process`)
      const targets = id === '*' ? [...children.values()].filter((c) => c.alive && !c.faulted) : [alive(id)]
      const applied: Array<{ child: Child, ref: number }> = []
      for (const child of targets) {
        const ref = nextRef++
        // A crash takes the process out of the target pool at once, as a kill does.
        if (fault.kind === 'crash') child.faulted = true
        await command(child, { type: 'chaos', ref, fault })
        applied.push({ child, ref })
      }
      let reverted = false
      const handle: InjectionHandle = {
        revert: async () => {
          if (reverted) return
          reverted = true
          for (const a of applied) {
            if (!a.child.alive) continue
            await command(a.child, { type: 'chaos-revert', ref: a.ref }).catch((err: unknown) => { logger.warn({ err, id: a.child.id }, 'revert failed') })
          }
        }
      }
      return handle
    },

    async spawn (options = {}) {
      if (phase === 'stopped' || spec === undefined) throw new InvalidParametersError('The launch driver runs no job')
      // A process started after the end would only wait for a seat that never comes.
      if (doneEvent !== undefined) throw new InvalidParametersError('The job is done: nothing is spawned after it')
      if (options.id === 'coordinator') {
        const old = children.get('coordinator')
        if (old?.alive === true) throw new InvalidParametersError('The coordinator is running')
        // A restarted coordinator resumes from its WAL on the same address.
        const c = await startCoordinator(200, options)
        return { id: c.id, role: 'coordinator', alive: true, ...(c.proc.pid === undefined ? {} : { pid: c.proc.pid }) }
      }
      let id = options.id
      if (id === undefined) {
        do id = `worker-${nextWorker++}`; while (children.has(id))
      } else if (children.get(id)?.alive === true) {
        throw new InvalidParametersError(`Process ${id} is running`)
      }
      const c = startWorker(id)
      return { id, role: 'worker', alive: true, ...(c.proc.pid === undefined ? {} : { pid: c.proc.pid }) }
    },

    status () {
      return { phase: doneEvent !== undefined && phase === 'running' ? 'done' : phase, committed, epoch, members: [...members], ...(loss === undefined ? {} : { loss }) }
    },

    onCommit (listener) {
      commitListeners.add(listener)
      return () => { commitListeners.delete(listener) }
    },

    recoveries: () => [...recoveries],

    async finished (options = {}) {
      const signal = options.signal ?? new AbortController().signal
      let wakeUp: (() => void) | undefined
      let grace: NodeJS.Timeout | undefined
      const onAbort = (): void => { wakeUp?.() }
      signal.addEventListener('abort', onAbort, { once: true })
      try {
        for (;;) {
          signal.throwIfAborted()
          if (failure !== undefined) { phase = 'failed'; throw failure }
          const workers = [...children.values()].filter((c) => c.role === 'worker')
          if (doneEvent !== undefined && workers.every((c) => !c.alive)) break
          if (doneEvent !== undefined && grace === undefined) {
            // Members heard `done` and exit at once, spares on their next heartbeat. Whoever is left
            // after the grace (a process still frozen, one that never reached the coordinator) is
            // continued and asked to stop, then killed after a second grace; `leaks()` reports any
            // that outlive even that.
            const graceMs = init.exitGraceMs ?? 3000
            let round = 0
            const sweep = (): void => {
              round++
              for (const c of children.values()) {
                if (c.role !== 'worker' || !c.alive) continue
                logger.warn({ id: c.id, round }, round === 1 ? 'worker still running after the job is done; stopping it' : 'worker ignored SIGTERM; killing it')
                if (c.stopped) { c.proc.kill('SIGCONT'); c.stopped = false }
                c.proc.kill(round === 1 ? 'SIGTERM' : 'SIGKILL')
              }
              if (round < 2) grace = setTimeout(sweep, graceMs)
            }
            grace = setTimeout(sweep, graceMs)
          }
          await new Promise<void>((resolve) => { wakeUp = resolve; wakers.add(resolve) })
          if (wakeUp !== undefined) wakers.delete(wakeUp)
        }
      } finally {
        clearTimeout(grace)
        signal.removeEventListener('abort', onAbort)
        if (wakeUp !== undefined) wakers.delete(wakeUp)
      }
      phase = 'done'
      const done = doneEvent as { committed: number, epoch: number }
      const full = [...children.values()].filter((c) => c.result !== undefined && c.result.steps === (spec as JobSpec).steps)
      const losses = full.map((c) => c.result?.loss).filter((x): x is number => x !== undefined)
      const finalLoss = losses[0] ?? loss
      return {
        committed: done.committed,
        epoch: done.epoch,
        ...(finalLoss === undefined ? {} : { loss: finalLoss }),
        checksums: full.map((c) => (c.result as { checksum: number }).checksum)
      }
    },

    async stop () {
      if (phase === 'stopped' && [...children.values()].every((c) => !c.alive) && holder === undefined) return
      await stopAll()
      await stopHolder()
      for (const resolve of acks.values()) resolve({ type: 'chaos-ack', ref: -1, ok: false, error: 'driver stopped' })
      acks.clear()
      phase = 'stopped'
      wake()
    },

    async leaks () {
      const out: string[] = []
      for (const c of children.values()) {
        if (c.proc.pid === undefined || c.proc.exitCode !== null || c.proc.signalCode !== null) continue
        try {
          process.kill(c.proc.pid, 0)
          out.push(c.id)
        } catch { /* gone */ }
      }
      return out
    },

    async [Symbol.asyncDispose] () { await driver.stop() }
  } as LaunchDriver & { [Symbol.asyncDispose]: () => Promise<void> }
  return driver
}
