/**
 * `phalanx launch --hosts h1,h2,…`: the coordinator on the first host and the workers spread over
 * the hosts round-robin, each started with `ssh -o BatchMode=yes <host> node <repo>/packages/cli/bin/phalanx.js …`.
 *
 * There is no IPC channel over ssh, so the launcher learns progress from the coordinator's HTTP
 * `/status` (reached through an `ssh -L` forward of the coordinator's session, so the status server
 * never leaves the remote loopback) and the final results from the processes' own stdout lines.
 * Every remote command first prints its shell's pid; sshd makes that shell a session (and process
 * group) leader and the shell `exec`s node, so `kill -- -<pid>` on the host stops exactly that
 * process group. The pids are kept in `<runDir>/ssh-processes.json`.
 *
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createWriteStream, mkdirSync, writeFileSync, type WriteStream } from 'node:fs'
import { dirname, join, posix, resolve } from 'node:path'
import { InvalidParametersError, type AbortOptions, type PhalanxConfig } from '@phalanx/core'
import type { RecoveryRecord } from '@phalanx/coordinator'
import type { JobStatus } from './coordinator-process.js'
import { formatSummary, freePort, type LaunchOutput, type LaunchSummary, type WorkerOutcome } from './launch.js'
import { createProgressDisplay, recoveryLine } from './progress.js'
import { STATUS_URL_FILE } from './status.js'

/** Tunables of {@link launchSsh}. */
export interface SshLaunchInit {
  /** The resolved configuration (steps, batch and job id for the progress display and the summary). */
  config: PhalanxConfig
  /** Hosts as `[user@]host`; the coordinator runs on the first, worker i on host `(i - 1) mod hosts.length`. */
  hosts: readonly string[]
  /** Workers (`worker-1` … `worker-N`). */
  workers: number
  /** Local run directory: per-host logs, `ssh-processes.json`, `coordinator.status-url`, summary. */
  runDir: string
  /** Local path of the `phalanx` entry script. */
  bin: string
  /** Config flags given to every remote process (`--steps 100 --global-batch 64 …`). */
  configArgs: readonly string[]
  /** Job flags of the workers (`--job linear --job-opt k=v`). */
  jobArgs: readonly string[]
  /**
   * Repository root on the hosts (the remote entry script is `<remoteDir>/packages/cli/bin/phalanx.js`
   * and remote commands run there).
   * @default the local repository root (the same path on every host)
   */
  remoteDir?: string
  /**
   * Where the remote processes keep their files (coordinator WAL under `coordinator/`, worker results).
   * @default `runDir`
   */
  remoteRunDir?: string
  /**
   * Node on the hosts.
   * @default `process.execPath`
   */
  node?: string
  /** `ssh -l`. @default ssh's own default (the local user or ~/.ssh/config) */
  user?: string
  /** `ssh -i`. @default ssh's own default */
  key?: string
  /** `ssh -p`. @default ssh's own default (22) */
  sshPort?: number
  /** Extra `ssh -o` options, e.g. `['StrictHostKeyChecking=accept-new']`. @default [] */
  sshOptions?: readonly string[]
  /**
   * The ssh client.
   * @default 'ssh'
   */
  ssh?: string
  /**
   * Coordinator port on the first host.
   * @default 7100
   */
  port?: number
  /**
   * Port of the coordinator's HTTP status server on the first host (bound to its loopback and
   * forwarded here with `ssh -L`).
   * @default port + 1
   */
  statusPort?: number
  /**
   * How long the first rendezvous waits for more workers once one joined.
   * @default 2000
   */
  lastCallMs?: number
  /**
   * Gives up (and stops everything) after this long.
   * @default 600000
   */
  timeoutMs?: number
  /**
   * Interval of the `/status` polls.
   * @default 250
   */
  pollMs?: number
  /**
   * After `SIGTERM` to a remote process group, how long to wait before `SIGKILL`.
   * @default 3000
   */
  graceMs?: number
  /** Writes the summary as JSON here too. */
  summaryJson?: string
}

/** One remote process, as recorded in `<runDir>/ssh-processes.json`. */
export interface SshProcessRecord {
  id: string
  host: string
  /** Pid of the remote process (also its process group id); undefined until the host reported it. */
  pid?: number
}

/** The file in the run directory listing the remote processes. */
export const SSH_PROCESSES_FILE = 'ssh-processes.json'

const PID_MARKER = 'phalanx-ssh-pid'

/** Quotes one word for a POSIX shell. */
export function shellQuote (s: string): string {
  return /^[A-Za-z0-9_./:=@%+,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`
}

/** True for names that only reach this machine. */
export function isLoopbackHost (host: string): boolean {
  const h = hostName(host)
  return h === 'localhost' || h === '::1' || /^127\./.test(h)
}

function hostName (host: string): string {
  const at = host.lastIndexOf('@')
  return at < 0 ? host : host.slice(at + 1)
}

/** The ssh argv (without the remote command) that reaches `host`. */
export function sshArgs (init: Pick<SshLaunchInit, 'user' | 'key' | 'sshPort' | 'sshOptions'>, host: string, extra: readonly string[] = []): string[] {
  const args = ['-o', 'BatchMode=yes', '-o', 'ConnectTimeout=10', '-o', 'ServerAliveInterval=5', '-o', 'ServerAliveCountMax=3']
  for (const o of init.sshOptions ?? []) args.push('-o', o)
  if (init.user !== undefined) args.push('-l', init.user)
  if (init.key !== undefined) args.push('-i', init.key)
  if (init.sshPort !== undefined) args.push('-p', String(init.sshPort))
  args.push(...extra, '-T', '--', host)
  return args
}

/**
 * The shell command a host runs for one process: report the pid, then `exec` node so the pid (a
 * session and process-group leader, made so by sshd) is node's own. `listenIp: 'host'` makes a
 * worker listen on the host's first address (`hostname -I`).
 */
export function remoteCommand (init: { remoteDir: string, remoteRunDir: string, node: string, bin: string }, args: readonly string[], listen?: 'loopback' | 'host'): string {
  const words = args.map(shellQuote).join(' ')
  const listenArg = listen === undefined
    ? ''
    : listen === 'loopback' ? ' --listen tcp://127.0.0.1:0' : ' --listen "tcp://${IP:-127.0.0.1}:0"'
  const ip = listen === 'host' ? `IP="$(hostname -I 2>/dev/null | awk '{print $1}')"; ` : ''
  return `echo ${PID_MARKER} $$; ${ip}mkdir -p ${shellQuote(init.remoteRunDir)} && cd ${shellQuote(init.remoteDir)} && exec ${shellQuote(init.node)} ${shellQuote(init.bin)} ${words}${listenArg}`
}

interface Remote {
  id: string
  host: string
  proc: ChildProcess
  pid: number | undefined
  pidKnown: Promise<void>
  exited: Promise<void>
  exitCode: number | null
  signal: string | null
  /** The last output lines of both streams (for error messages). */
  tail: string[]
}

const RESULT_LINE = /^(\S+): (\d+) steps(?:, loss (\S+?))?(?:, accuracy ([\d.]+)%)?, final state crc32c ([0-9a-f]{8})$/
const DONE_LINE = /^job \S+ done: (\d+) steps committed, epoch (\d+)$/

function fileSafe (host: string): string {
  return host.replace(/[^A-Za-z0-9._-]/g, '_')
}

/**
 * Runs a job over ssh and resolves with the same summary as {@link launch}. Every remote process
 * group it started has been signalled (TERM, then KILL after `graceMs`) when it resolves;
 * `options.signal` interrupts the run (the summary then has `ok: false`).
 */
export async function launchSsh (init: SshLaunchInit, output: LaunchOutput, options: AbortOptions = {}): Promise<LaunchSummary> {
  const { config } = init
  const steps = config.job.steps
  const hosts = [...init.hosts]
  if (hosts.length === 0 || hosts.some((h) => !/^([A-Za-z0-9._-]+@)?[A-Za-z0-9._:-]+$/.test(h))) throw new InvalidParametersError(`--hosts expects comma-separated [user@]host names, got "${hosts.join(',')}"`)
  if (!Number.isInteger(init.workers) || init.workers < 1) throw new InvalidParametersError(`--workers must be a positive integer, got ${init.workers}`)
  const allLoopback = hosts.every(isLoopbackHost)
  const first = hosts[0] as string
  if (!allLoopback && isLoopbackHost(first)) throw new InvalidParametersError(`the first host runs the coordinator; "${first}" cannot be reached from the other hosts`)
  const port = init.port ?? 7100
  const statusPort = init.statusPort ?? port + 1
  const graceMs = init.graceMs ?? 3000
  const pollMs = init.pollMs ?? 250
  const ssh = init.ssh ?? 'ssh'
  const repoRoot = resolve(dirname(init.bin), '..', '..', '..')
  const remoteDir = init.remoteDir ?? repoRoot
  const remote = {
    remoteDir,
    remoteRunDir: init.remoteRunDir ?? init.runDir,
    node: init.node ?? process.execPath,
    bin: init.remoteDir === undefined ? init.bin : posix.join(init.remoteDir, 'packages', 'cli', 'bin', 'phalanx.js')
  }
  const coordinatorAddress = `tcp://${hostName(first)}:${port}`
  mkdirSync(init.runDir, { recursive: true })
  const display = createProgressDisplay(output.progress)
  const t0 = performance.now()
  const now = (): number => performance.now() - t0

  const remotes = new Map<string, Remote>()
  const logs = new Map<string, WriteStream>()
  const workers: WorkerOutcome[] = []
  const recoveries: RecoveryRecord[] = []
  // Pending sleeps: cleanup fires them all at once, so nothing awaits a timer that was cleared.
  const sleeps = new Set<() => void>()
  const sleep = async (ms: number): Promise<void> => {
    await new Promise<void>((resolve) => {
      const wake = (): void => { clearTimeout(t); sleeps.delete(wake); resolve() }
      const t = setTimeout(wake, ms)
      sleeps.add(wake)
    })
  }
  let committed = 0
  let epoch = 0
  let members = 0
  let loss: number | undefined
  let accuracy: number | undefined
  let coordinatorStatus: JobStatus | undefined
  let done = false
  let error: string | undefined
  let firstCommitAt: number | undefined
  let lastCommitAt: number | undefined
  const commitTimes: number[] = []
  let settle: (() => void) | undefined
  const finished = new Promise<void>((resolve) => { settle = resolve })
  const fail = (message: string): void => { if (error === undefined) error = message; settle?.() }

  const record = (): void => {
    const list: SshProcessRecord[] = [...remotes.values()].map((r) => ({ id: r.id, host: r.host, ...(r.pid === undefined ? {} : { pid: r.pid }) }))
    writeFileSync(join(init.runDir, SSH_PROCESSES_FILE), JSON.stringify(list, null, 2) + '\n')
  }
  const logOf = (host: string): WriteStream => {
    let log = logs.get(host)
    if (log === undefined) {
      log = createWriteStream(join(init.runDir, `host-${fileSafe(host)}.log`), { flags: 'a' })
      logs.set(host, log)
    }
    return log
  }

  const onLine = (r: Remote, line: string, fromStdout: boolean): void => {
    if (fromStdout && r.pid === undefined && line.startsWith(PID_MARKER + ' ')) {
      const pid = Number(line.slice(PID_MARKER.length + 1))
      if (Number.isInteger(pid) && pid > 1) { r.pid = pid; record() }
      return
    }
    logOf(r.host).write(`[${r.id}] ${line}\n`)
    r.tail.push(line)
    if (r.tail.length > 5) r.tail.shift()
    if (!fromStdout) return
    const m = RESULT_LINE.exec(line)
    const w = workers.find((x) => x.id === r.id)
    if (m !== null && w !== undefined && m[1] === r.id) {
      w.steps = Number(m[2])
      w.checksum = parseInt(m[5] as string, 16)
      if (m[3] !== undefined) { w.loss = Number(m[3]); loss = w.loss }
      if (m[4] !== undefined) { w.accuracy = Number(m[4]) / 100; accuracy = w.accuracy }
    }
    const d = DONE_LINE.exec(line)
    if (d !== null && r.id === 'coordinator') { done = true; committed = Number(d[1]); epoch = Number(d[2]) }
  }

  const lineReader = (r: Remote, fromStdout: boolean): ((chunk: Buffer) => void) => {
    let rest = ''
    return (chunk) => {
      const parts = (rest + chunk.toString()).split('\n')
      rest = parts.pop() ?? ''
      // A line without an end that grows past 64 KiB is logged as it is (bounded memory).
      if (rest.length > 65_536) { parts.push(rest); rest = '' }
      for (const p of parts) onLine(r, p, fromStdout)
    }
  }

  const start = (id: string, host: string, args: string[], listen?: 'loopback' | 'host', forward: string[] = []): Remote => {
    const proc = spawn(ssh, [...sshArgs(init, host, forward), remoteCommand(remote, args, listen)], { stdio: ['ignore', 'pipe', 'pipe'] })
    let onPid: (() => void) | undefined
    const r: Remote = { id, host, proc, pid: undefined, pidKnown: new Promise<void>((resolve) => { onPid = resolve }), exited: Promise.resolve(), exitCode: null, signal: null, tail: [] }
    const out = lineReader(r, true)
    proc.stdout?.on('data', (d: Buffer) => { out(d); if (r.pid !== undefined) onPid?.() })
    proc.stderr?.on('data', lineReader(r, false))
    r.exited = new Promise<void>((resolve) => {
      proc.once('close', (code, signal) => { r.exitCode = code; r.signal = signal; onPid?.(); resolve() })
    })
    proc.on('error', (err) => { fail(`cannot run ${ssh} for ${id} on ${host}: ${err.message}`) })
    remotes.set(id, r)
    record()
    return r
  }

  const remoteKill = async (r: Remote, sig: 'TERM' | 'KILL'): Promise<void> => {
    if (r.pid === undefined) return
    const k = spawn(ssh, [...sshArgs(init, r.host), `kill -${sig} -- -${r.pid} 2>/dev/null || true`], { stdio: 'ignore' })
    await new Promise<void>((resolve) => { k.once('close', () => { resolve() }); k.once('error', () => { resolve() }) })
  }

  const alive = (r: Remote): boolean => r.exitCode === null && r.signal === null

  /** TERM to the remote process groups, KILL after the grace period; then the local ssh clients. */
  const stopRemotes = async (list: Remote[]): Promise<void> => {
    const running = list.filter(alive)
    if (running.length === 0) return
    let grace: NodeJS.Timeout | undefined
    const graceOver = new Promise<void>((resolve) => { grace = setTimeout(resolve, graceMs) })
    try {
      // A session still connecting has not reported its pid yet: wait for it (bounded) so no remote process is left behind.
      await Promise.all(running.map(async (r) => { await Promise.race([r.pidKnown, graceOver]) }))
      await Promise.all(running.map(async (r) => { await remoteKill(r, 'TERM') }))
      await Promise.race([Promise.all(running.map(async (r) => { await r.exited })), graceOver])
      const stuck = running.filter(alive)
      await Promise.all(stuck.map(async (r) => { await remoteKill(r, 'KILL') }))
      for (const r of stuck) if (alive(r)) r.proc.kill('SIGKILL')
      await Promise.all(running.map(async (r) => { await r.exited }))
    } finally {
      clearTimeout(grace)
    }
  }

  const statusUrl = `http://127.0.0.1:${await freePort()}`
  let statusWritten = false
  const seen = new Set<string>()
  const poll = async (): Promise<boolean> => {
    let s: JobStatus
    try {
      const res = await fetch(statusUrl + '/status', { signal: AbortSignal.timeout(Math.max(1000, 4 * pollMs)) })
      if (!res.ok) return false
      s = await res.json() as JobStatus
    } catch {
      return false
    }
    if (!statusWritten) { writeFileSync(join(init.runDir, STATUS_URL_FILE), statusUrl + '\n'); statusWritten = true }
    coordinatorStatus = s
    if (s.committed > committed) {
      firstCommitAt ??= now()
      lastCommitAt = now()
      for (let i = committed; i < s.committed; i++) commitTimes.push(now())
      committed = s.committed
    }
    epoch = Math.max(epoch, s.epoch)
    members = s.phase === 'running' ? s.members.length : 0
    for (const rec of s.recoveries) {
      const key = `${rec.epoch}:${rec.step}:${rec.peers.join(',')}:${rec.reason}`
      if (seen.has(key)) continue
      seen.add(key)
      recoveries.push(rec)
      display.event(recoveryLine(rec))
    }
    const horizon = now() - 3000
    while (commitTimes.length > 0 && (commitTimes[0] as number) < horizon) commitTimes.shift()
    display.update({ committed, steps, epoch, members, stepsPerSecond: (commitTimes.length * 1000) / Math.min(3000, Math.max(1, now())), globalBatch: config.job.globalBatch, recoveries: recoveries.length, ...(loss === undefined ? {} : { loss }) })
    return true
  }
  let polling = true
  const pollLoop = async (): Promise<void> => {
    while (polling) {
      await poll()
      if (!polling) break
      await sleep(pollMs)
    }
  }

  const onAbort = (): void => { fail('interrupted') }
  options.signal?.addEventListener('abort', onAbort, { once: true })
  const deadline = setTimeout(() => { fail(`timed out after ${init.timeoutMs ?? 600_000} ms`) }, init.timeoutMs ?? 600_000)
  let pollDone: Promise<void> = Promise.resolve()
  try {
    display.event(`run directory ${init.runDir}; coordinator on ${first} at ${coordinatorAddress}; ${init.workers} workers over ${hosts.length} host(s) by ssh; job ${init.jobArgs[1] ?? 'linear'}`)
    const listen = allLoopback ? `tcp://127.0.0.1:${port}` : `tcp://0.0.0.0:${port}`
    const coordinator = start('coordinator', first, [
      'coordinator', ...init.configArgs, '--listen', listen, '--wal', posix.join(remote.remoteRunDir, 'coordinator', 'coordinator.wal'),
      '--status-port', String(statusPort), '--last-call-ms', String(init.lastCallMs ?? 2000)
    ], undefined, ['-o', 'ExitOnForwardFailure=yes', '-L', `127.0.0.1:${new URL(statusUrl).port}:127.0.0.1:${statusPort}`])
    void coordinator.exited.then(() => {
      if (coordinator.exitCode === 0 && done) { settle?.(); return }
      const tail = coordinator.tail.slice(-3).join(' | ')
      fail(`coordinator on ${first} exited (${coordinator.signal ?? `code ${String(coordinator.exitCode)}`}) before the job was done${tail === '' ? '' : `: ${tail}`}; see ${join(init.runDir, `host-${fileSafe(first)}.log`)}`)
    })
    // Workers start once the coordinator answers on /status (its endpoint is listening by then).
    for (let i = 0; i < 100_000 && error === undefined; i++) {
      if (await poll()) break
      await Promise.race([finished, sleep(Math.min(pollMs, 100))])
    }
    if (error === undefined) {
      pollDone = pollLoop()
      for (let i = 1; i <= init.workers; i++) {
        const id = `worker-${i}`
        const host = hosts[(i - 1) % hosts.length] as string
        const w = start(id, host, ['worker', ...init.configArgs, ...init.jobArgs, '--coordinator', coordinatorAddress, '--id', id,
          '--out', posix.join(remote.remoteRunDir, `${id}.result.json`)], isLoopbackHost(host) ? 'loopback' : 'host')
        const outcome: WorkerOutcome = { id, exitCode: null, signal: null, killed: false }
        workers.push(outcome)
        void w.exited.then(() => {
          outcome.exitCode = w.exitCode
          outcome.signal = w.signal
          if (w.exitCode !== 0 && !done && error === undefined) display.event(`${id} on ${host} exited (${w.signal ?? `code ${String(w.exitCode)}`}); see ${join(init.runDir, `host-${fileSafe(host)}.log`)}`)
        })
      }
      await finished
    }
    if (error === undefined) {
      // Members heard `done` and exit by themselves; whoever is still there after the grace period is stopped.
      const grace = setTimeout(() => {
        for (const w of workers) if (alive(remotes.get(w.id) as Remote)) w.idleAtEnd = true
        void stopRemotes([...remotes.values()])
      }, graceMs)
      try {
        await Promise.all([...remotes.values()].map(async (r) => { await r.exited }))
      } finally {
        clearTimeout(grace)
      }
    }
  } finally {
    clearTimeout(deadline)
    options.signal?.removeEventListener('abort', onAbort)
    polling = false
    for (const wake of [...sleeps]) wake()
    await stopRemotes([...remotes.values()])
    await pollDone
    display.end()
    await Promise.all([...logs.values()].map(async (l) => { await new Promise<void>((resolve) => { l.end(() => { resolve() }) }) }))
  }
  const full = workers.filter((w) => w.checksum !== undefined && w.steps === steps)
  const checksums = [...new Set(full.map((w) => w.checksum as number))]
  if (error === undefined && full.length === 0) error = 'no worker finished every step'
  if (error === undefined && checksums.length > 1) error = 'workers finished with different final states'
  const summary: LaunchSummary = {
    ok: error === undefined,
    job: init.jobArgs[1] ?? 'linear',
    runDir: init.runDir,
    steps,
    committed,
    epoch,
    durationMs: now(),
    // From the polls: commits are seen at `pollMs` resolution.
    stepsPerSecond: firstCommitAt === undefined || lastCommitAt === undefined || lastCommitAt - firstCommitAt < pollMs ? 0 : (1000 * (committed - 1)) / (lastCommitAt - firstCommitAt),
    ...(loss === undefined ? {} : { loss }),
    ...(accuracy === undefined ? {} : { accuracy }),
    checksums,
    workers,
    recoveries,
    faults: [],
    heals: [],
    ...(coordinatorStatus === undefined ? {} : { coordinator: coordinatorStatus }),
    ...(error === undefined ? {} : { error })
  }
  writeFileSync(join(init.runDir, 'summary.json'), JSON.stringify(summary, null, 2) + '\n')
  if (init.summaryJson !== undefined) writeFileSync(init.summaryJson, JSON.stringify(summary, null, 2) + '\n')
  output.summary(formatSummary(summary))
  return summary
}

/** `parseArgs` options of `phalanx launch --hosts`. */
export const sshOptions = {
  hosts: { type: 'string' },
  'ssh-user': { type: 'string' },
  'ssh-key': { type: 'string' },
  'ssh-port': { type: 'string' },
  'ssh-opt': { type: 'string', multiple: true },
  'remote-dir': { type: 'string' },
  'remote-node': { type: 'string' },
  'status-port': { type: 'string' }
} as const

type Values = Record<string, string | boolean | string[] | undefined>

const PASSED_CONFIG = ['config', 'preset', 'job-id', 'steps', 'seed', 'global-batch', 'micro-batch', 'min-workers', 'max-workers', 'log-level']

function str (values: Values, key: string): string | undefined {
  const v = values[key]
  return typeof v === 'string' ? v : undefined
}

function portOf (values: Values, key: string): number | undefined {
  const v = str(values, key)
  if (v === undefined) return undefined
  const n = Number(v)
  if (!Number.isInteger(n) || n < 1 || n > 65_535) throw new InvalidParametersError(`--${key} expects a port, got "${v}"`)
  return n
}

/** `phalanx launch --hosts …`: runs the job over ssh and resolves with the exit code (0, 1, or 130 when interrupted). */
export async function runSshLaunch (
  values: Values,
  init: { config: PhalanxConfig, workers: number, runDir: string, bin: string, port?: number, lastCallMs?: number, timeoutMs?: number, summaryJson?: string },
  io: { stdout: (t: string) => void, stderr: (t: string) => void, isTTY: boolean },
  helpers: { processSignal: () => { signal: AbortSignal, interrupted: () => boolean, dispose: () => void } }
): Promise<number> {
  for (const flag of ['kill', 'join', 'stop']) {
    if (((values[flag] as string[] | undefined) ?? []).length > 0) throw new InvalidParametersError(`--${flag} is not supported with --hosts (no control channel over ssh); use phalanx chaos or kill the remote process yourself`)
  }
  if (values.snapshots === true) throw new InvalidParametersError('--snapshots is not supported with --hosts')
  const hosts = (str(values, 'hosts') ?? '').split(',').map((h) => h.trim()).filter((h) => h !== '')
  const configArgs: string[] = []
  for (const key of PASSED_CONFIG) {
    const v = str(values, key)
    if (v !== undefined) configArgs.push(`--${key}`, key === 'config' ? resolve(v) : v)
  }
  for (const s of (values.set as string[] | undefined) ?? []) configArgs.push('--set', s)
  const jobArgs = ['--job', str(values, 'job') ?? 'linear']
  for (const o of (values['job-opt'] as string[] | undefined) ?? []) jobArgs.push('--job-opt', o)
  const sshPort = portOf(values, 'ssh-port')
  const statusPort = portOf(values, 'status-port')
  const user = str(values, 'ssh-user')
  const key = str(values, 'ssh-key')
  const remoteDir = str(values, 'remote-dir')
  const node = str(values, 'remote-node')
  const ps = helpers.processSignal()
  try {
    const summary = await launchSsh({
      config: init.config, hosts, workers: init.workers, runDir: init.runDir, bin: init.bin, configArgs, jobArgs,
      sshOptions: (values['ssh-opt'] as string[] | undefined) ?? [],
      ...(sshPort === undefined ? {} : { sshPort }),
      ...(statusPort === undefined ? {} : { statusPort }),
      ...(user === undefined ? {} : { user }),
      ...(key === undefined ? {} : { key: resolve(key) }),
      ...(remoteDir === undefined ? {} : { remoteDir }),
      ...(node === undefined ? {} : { node }),
      ...(init.port === undefined ? {} : { port: init.port }),
      ...(init.lastCallMs === undefined ? {} : { lastCallMs: init.lastCallMs }),
      ...(init.timeoutMs === undefined ? {} : { timeoutMs: init.timeoutMs }),
      ...(init.summaryJson === undefined ? {} : { summaryJson: init.summaryJson })
    }, { progress: { write: io.stderr, isTTY: io.isTTY }, summary: (t) => { io.stdout(t + '\n') } }, { signal: ps.signal })
    if (ps.interrupted()) return 130
    return summary.ok ? 0 : 1
  } finally {
    ps.dispose()
  }
}
