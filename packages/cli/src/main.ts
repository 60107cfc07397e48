/**
 * The `phalanx` command line: argument parsing, usage, exit codes, and the process-level wiring
 * (signals, the launcher's IPC channel) around the composition roots in this package.
 *
 * Exit codes: 0 success, 1 the job or command failed, 2 bad usage or configuration, 130 interrupted.
 *
 * @module
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { basename, dirname, extname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { InvalidConfigError, InvalidParametersError, type PhalanxConfig } from '@phalanx/core'
import { inspectCheckpoint, listCheckpoints, restoreCheckpoint, verifyCheckpoint } from '@phalanx/checkpoint'
import { chaosCommand } from './chaos-command.js'
import { childChaosFromEnv } from './chaos-child.js'
import { createProcessLogger } from './compose.js'
import { holderCommand } from './holder-process.js'
import { loadConfig, parseOverrides } from './config-file.js'
import { runCoordinatorProcess } from './coordinator-process.js'
import type { ProcessEvent } from './events.js'
import { parseFaults } from './faults.js'
import { launch } from './launch.js'
import { etcdOptions, etcdTargetFrom, runHaCoordinatorCommand, haWorkerWiring, runSlurmLaunch, slurmOptions } from './ops-commands.js'
import { STATUS_URL_FILE, fetchStatus, formatStatus } from './status.js'
import { runSshLaunch, sshOptions } from './ssh.js'
import { runWorkerProcess } from './worker-process.js'

/** Where the CLI writes; `main` uses the process streams. */
export interface CliIO {
  stdout: (text: string) => void
  stderr: (text: string) => void
  /** True when stderr is a terminal (the launcher then redraws one progress line). */
  isTTY: boolean
}

const VERSION = '0.1.0'

const USAGE = `phalanx ${VERSION}: fault-tolerant distributed training

Usage:
  phalanx launch      [config flags] [--job linear] [--workers 4] [--kill <id>@<step>]... [--join [id]@<step>]... [--stop <id>@<step>:<ms>]...
  phalanx coordinator [config flags] [--listen tcp://0.0.0.0:7100] [--wal <file>] [--status-port 9464]
  phalanx worker      [config flags] --coordinator <address> [--id <id>] [--listen tcp://<host>:0] [--job linear] [--out <file>]
  phalanx status      <http://host:port | run-dir> [--json]
  phalanx chaos       run <scenario.yaml> [--seed N] [--report out.json] | replay <report.json>
  phalanx checkpoint  ls|verify|inspect|restore <dir> [id] [--out <file>]
  phalanx keygen      <name> [--dir <dir>]
  phalanx help [command]

Config flags (later ones win): --config <file.yaml|json>, --preset local|lan|wan, --job-id <id>, --steps <n>,
  --seed <n>, --global-batch <n>, --micro-batch <n>, --min-workers <n>, --max-workers <n>, --log-level <level>,
  --set <key.path=value>...
Jobs: --job <linear | mnist | path/to/module.js> with --job-opt <key=value>... (see docs/cli.md).
`

const HELP: Record<string, string> = {
  launch: `phalanx launch: a coordinator and N workers on this machine, with scheduled faults and a summary.
  --workers <n>            workers started at once (default 4)
  --job <name|path>        job to train (default linear); --job-opt key=value passes it options
  --kill <id>@<step>       SIGKILL a process once <step> steps are committed ('coordinator' restarts it from its WAL)
  --join [id]@<step>       start a new worker once <step> steps are committed
  --stop <id>@<step>:<ms>  SIGSTOP a worker, SIGCONT it <ms> later
  --run-dir <dir>          logs, WAL, config and results (default runs/<job>-<timestamp>)
  --port <n>               coordinator port on 127.0.0.1 (default: a free port)
  --last-call-ms <ms>      first rendezvous waits this long for more workers (default 2000)
  --summary-json <file>    also write the summary as JSON
  --snapshots              start a snapshot holder; workers snapshot to it at every commit and
                           restore from it when restarted with the same id (instead of healing)
  --timeout-ms <ms>        give up after this long (default 600000)
  --slurm                  submit to Slurm instead (sbatch --wait; coordinator on the first node, one srun step per worker;
                           --run-dir must be on a shared filesystem); --sbatch-arg <arg>... adds #SBATCH lines
  --hosts <h1,h2,...>      run over ssh instead: the coordinator on the first host, workers round-robin over the hosts
                           (ssh -o BatchMode=yes; the repository at the same path on every host, or --remote-dir <dir>);
                           --ssh-user <u> --ssh-key <file> --ssh-port <n> --ssh-opt <Option=value>... --remote-node <path>
                           --status-port <n> (coordinator HTTP on the first host, forwarded by ssh -L; default --port + 1)
`,
  coordinator: `phalanx coordinator: the job's coordinator (membership, failure detection, commits).
  --listen <address>       where workers reach it (default tcp://127.0.0.1:7100)
  --wal <file>             write-ahead log; restart with the same file to resume (default .phalanx/<job-id>/coordinator.wal)
  --status-port <n>        HTTP GET /status and /metrics (default 9464; 0 = a free port)
  --status-host <host>     interface of the HTTP server (default 127.0.0.1)
  --last-call-ms <ms>      first rendezvous waits this long for more workers (default 0)
  --log-file <file>        JSON log file (default stderr)
  --etcd <url,url>         high availability: run as one of several replicas elected through etcd (docs/operations.md)
  --etcd-prefix <key>      etcd key prefix of the job (default /phalanx/<job-id>)
  --lease-ttl <s>          leader lease TTL in seconds (default 2)
  --status-token <token>   bearer token for the HTTP server and dashboard (required off loopback)
`,
  worker: `phalanx worker: one training worker.
  --coordinator <address>  the coordinator's address (required)
  --id <id>                unique worker id (default worker-<pid>)
  --listen <address>       where peers reach this worker (default tcp://127.0.0.1:0)
  --job <name|path>        job to train (default linear); --job-opt key=value passes it options
  --out <file>             write the final state as JSON with its crc32c
  --log-file <file>        JSON log file (default stderr)
  --etcd <url,url>         find (and follow) the leading coordinator replica through etcd instead of --coordinator
  --etcd-prefix <key>      etcd key prefix of the job (default /phalanx/<job-id>)
`,
  status: `phalanx status <http://host:port | run-dir> [--json]: members, epoch, step and recoveries of a running job.
`,
  checkpoint: `phalanx checkpoint ls <dir> | verify <dir> [id] | inspect <dir> [id] | restore <dir> [id] [--out <file>]
`,
  chaos: `phalanx chaos run <scenario.yaml|json> [--seed <n>] [--report <out.json>] [--run-dir <dir>] [--no-baseline]
phalanx chaos replay <report.json> [--report <out.json>] [--run-dir <dir>]
  Runs a fault scenario (packages/chaos/scenarios/) on real processes: fault-free baseline, the job with
  its faults, invariant checks, a JSON report. Exit code 0 when the verdict is pass, 1 when it is fail.
`,
  keygen: `phalanx keygen <name> [--dir <dir>]: writes <name>.key (CURVE key pair, mode 0600) and <name>.pub.
  Every process of a job uses the same key: --set transport.curve.enabled=true --set transport.curve.keyFile=<name>.key
`
}

const CONFIG_OPTIONS = {
  config: { type: 'string' },
  preset: { type: 'string' },
  'job-id': { type: 'string' },
  steps: { type: 'string' },
  seed: { type: 'string' },
  'global-batch': { type: 'string' },
  'micro-batch': { type: 'string' },
  'min-workers': { type: 'string' },
  'max-workers': { type: 'string' },
  'log-level': { type: 'string' },
  set: { type: 'string', multiple: true },
  help: { type: 'boolean', short: 'h' }
} as const satisfies ParseArgsConfig['options']

const JOB_OPTIONS = {
  job: { type: 'string' },
  'job-opt': { type: 'string', multiple: true }
} as const satisfies ParseArgsConfig['options']

type Values = Record<string, string | boolean | string[] | undefined>

function str (values: Values, key: string): string | undefined {
  const v = values[key]
  return typeof v === 'string' ? v : undefined
}

function list (values: Values, key: string): string[] {
  const v = values[key]
  return Array.isArray(v) ? v : []
}

function int (values: Values, key: string, min = 0): number | undefined {
  const v = str(values, key)
  if (v === undefined) return undefined
  const n = Number(v)
  if (!Number.isInteger(n) || n < min) throw new InvalidConfigError(`--${key} expects an integer ≥ ${min}, got "${v}"`)
  return n
}

async function configFrom (values: Values): Promise<PhalanxConfig> {
  const job: Record<string, unknown> = {}
  const put = (key: string, field: string, min: number): void => { const n = int(values, key, min); if (n !== undefined) job[field] = n }
  put('steps', 'steps', 1)
  put('seed', 'seed', 0)
  put('global-batch', 'globalBatch', 1)
  put('micro-batch', 'microBatch', 1)
  put('min-workers', 'minWorkers', 1)
  put('max-workers', 'maxWorkers', 1)
  const jobId = str(values, 'job-id')
  if (jobId !== undefined) job.id = jobId
  const extra: Record<string, unknown> = { job }
  const preset = str(values, 'preset')
  if (preset !== undefined) extra.preset = preset
  const level = str(values, 'log-level')
  if (level !== undefined) extra.log = { level }
  const file = str(values, 'config')
  return await loadConfig({ ...(file === undefined ? {} : { file }), sets: list(values, 'set'), extra })
}

function jobOptions (values: Values): Record<string, unknown> {
  const opts = list(values, 'job-opt')
  for (const o of opts) if (!/^[A-Za-z0-9_]+=/.test(o)) throw new InvalidConfigError(`--job-opt expects key=value, got "${o}"`)
  return parseOverrides(opts)
}

/** Process-level wiring: an AbortSignal fired by SIGINT/SIGTERM or by the launcher going away. */
function processSignal (): { signal: AbortSignal, interrupted: () => boolean, dispose: () => void } {
  const ctl = new AbortController()
  let interrupted = false
  const onSignal = (): void => { interrupted = true; ctl.abort(new Error('interrupted')) }
  const onDisconnect = (): void => { ctl.abort(new Error('launcher gone')) }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  process.on('disconnect', onDisconnect)
  return {
    signal: ctl.signal,
    interrupted: () => interrupted,
    dispose: () => {
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
      process.off('disconnect', onDisconnect)
    }
  }
}

/** Sends an event to the launcher when this process has an IPC channel (a lost channel is not an error). */
function ipcSender (): ((event: ProcessEvent) => void) | undefined {
  if (typeof process.send !== 'function') return undefined
  return (event) => {
    if (process.connected) process.send?.(event, undefined, {}, () => {})
  }
}

function binPath (): string {
  return join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'phalanx.js')
}

function timestamp (): string {
  return new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15)
}

async function cmdLaunch (args: string[], io: CliIO): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      ...CONFIG_OPTIONS,
      ...JOB_OPTIONS,
      workers: { type: 'string' },
      kill: { type: 'string', multiple: true },
      join: { type: 'string', multiple: true },
      stop: { type: 'string', multiple: true },
      'run-dir': { type: 'string' },
      port: { type: 'string' },
      'last-call-ms': { type: 'string' },
      'summary-json': { type: 'string' },
      'timeout-ms': { type: 'string' },
      snapshots: { type: 'boolean' },
      ...slurmOptions,
      ...sshOptions
    },
    strict: true
  })
  if (values.help === true) { io.stdout(HELP.launch as string); return 0 }
  const config = await configFrom(values)
  const job = values.job ?? 'linear'
  const jobOpts = jobOptions(values)
  const faults = parseFaults({ kill: list(values, 'kill'), join: list(values, 'join'), stop: list(values, 'stop') })
  const workers = int(values, 'workers', 1) ?? 4
  const jobName = basename(job, extname(job))
  const runDir = resolve(values['run-dir'] ?? join('runs', `${jobName}-${timestamp()}`))
  const port = int(values, 'port', 1)
  const lastCallMs = int(values, 'last-call-ms', 0)
  const timeoutMs = int(values, 'timeout-ms', 1)
  if (values.slurm === true) {
    return await runSlurmLaunch(values, { workers, runDir, bin: binPath(), ...(port === undefined ? {} : { port }), ...(lastCallMs === undefined ? {} : { lastCallMs }) }, io, { processSignal, ipcSender })
  }
  if (values.hosts !== undefined) {
    return await runSshLaunch(values, {
      config, workers, runDir, bin: binPath(),
      ...(port === undefined ? {} : { port }),
      ...(lastCallMs === undefined ? {} : { lastCallMs }),
      ...(timeoutMs === undefined ? {} : { timeoutMs }),
      ...(values['summary-json'] === undefined ? {} : { summaryJson: values['summary-json'] })
    }, io, { processSignal })
  }
  const ps = processSignal()
  try {
    const summary = await launch({
      config, job, jobOptions: jobOpts, workers, faults, runDir, bin: binPath(),
      ...(port === undefined ? {} : { port }),
      ...(lastCallMs === undefined ? {} : { lastCallMs }),
      ...(timeoutMs === undefined ? {} : { timeoutMs }),
      ...(values['summary-json'] === undefined ? {} : { summaryJson: values['summary-json'] }),
      ...(values.snapshots === true ? { snapshots: true } : {})
    }, { progress: { write: io.stderr, isTTY: io.isTTY }, summary: (t) => { io.stdout(t + '\n') } }, { signal: ps.signal })
    if (ps.interrupted()) return 130
    return summary.ok ? 0 : 1
  } finally {
    ps.dispose()
  }
}

async function cmdCoordinator (args: string[], io: CliIO): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      ...CONFIG_OPTIONS,
      listen: { type: 'string' },
      wal: { type: 'string' },
      'status-port': { type: 'string' },
      'status-host': { type: 'string' },
      'last-call-ms': { type: 'string' },
      'log-file': { type: 'string' },
      ...etcdOptions
    },
    strict: true
  })
  if (values.help === true) { io.stdout(HELP.coordinator as string); return 0 }
  const config = await configFrom(values)
  if (values.etcd !== undefined) return await runHaCoordinatorCommand(values, config, io, { processSignal, ipcSender })
  const wal = resolve(values.wal ?? join('.phalanx', config.job.id, 'coordinator.wal'))
  const logFile = values['log-file']
  const logger = createProcessLogger({ name: 'coordinator', level: config.log.level, ...(logFile === undefined ? {} : { file: logFile }) })
  const statusPort = int(values, 'status-port', 0) ?? 9464
  const lastCallMs = int(values, 'last-call-ms', 0)
  const ps = processSignal()
  const send = ipcSender()
  const chaos = childChaosFromEnv('coordinator', logger)
  try {
    const result = await runCoordinatorProcess({
      config,
      listen: values.listen ?? 'tcp://127.0.0.1:7100',
      wal,
      statusPort,
      statusUrlFile: join(dirname(wal), STATUS_URL_FILE),
      ...(values['status-host'] === undefined ? {} : { statusHost: values['status-host'] }),
      ...(lastCallMs === undefined ? {} : { lastCallMs })
    }, { logger, ...(send === undefined ? {} : { onEvent: send }), ...(chaos === undefined ? {} : { chaos }) }, { signal: ps.signal })
    if (send === undefined) io.stdout(`job ${config.job.id} done: ${result.committed} steps committed, epoch ${result.epoch}\n`)
    return 0
  } catch (err) {
    if (ps.interrupted()) return 130
    logger.error({ err }, 'coordinator failed')
    throw err
  } finally {
    chaos?.dispose()
    ps.dispose()
  }
}

async function cmdWorker (args: string[], io: CliIO): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      ...CONFIG_OPTIONS,
      ...JOB_OPTIONS,
      coordinator: { type: 'string' },
      id: { type: 'string' },
      listen: { type: 'string' },
      out: { type: 'string' },
      'log-file': { type: 'string' },
      ...etcdOptions
    },
    strict: true
  })
  if (values.help === true) { io.stdout(HELP.worker as string); return 0 }
  if (values.coordinator === undefined && values.etcd === undefined) throw new InvalidConfigError('phalanx worker needs --coordinator <address> (e.g. tcp://10.0.0.1:7100) or --etcd <urls>')
  const config = await configFrom(values)
  const id = values.id ?? `worker-${process.pid}`
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(id) || id === 'coordinator') throw new InvalidConfigError(`--id "${id}": use letters, digits, dot, dash, underscore (and not "coordinator")`)
  const logFile = values['log-file']
  const logger = createProcessLogger({ name: id, level: config.log.level, ...(logFile === undefined ? {} : { file: logFile }) })
  const ps = processSignal()
  const send = ipcSender()
  const chaos = childChaosFromEnv(id, logger)
  try {
    const ha = await haWorkerWiring(etcdTargetFrom(values), config, values.coordinator, logger, ps.signal)
    const result = await runWorkerProcess({
      config, id, coordinatorAddress: ha.coordinatorAddress, job: values.job ?? 'linear', jobOptions: jobOptions(values),
      ...(values.listen === undefined ? {} : { listen: values.listen }),
      ...(values.out === undefined ? {} : { out: values.out })
    }, { logger, ...(send === undefined ? {} : { onEvent: send }), ...ha.components, ...(chaos === undefined ? {} : { chaos }) }, { signal: ps.signal })
    if (send === undefined) {
      const metrics = [result.loss === undefined ? '' : `, loss ${result.loss.toPrecision(5)}`, result.accuracy === undefined ? '' : `, accuracy ${(100 * result.accuracy).toFixed(2)}%`].join('')
      io.stdout(`${id}: ${result.steps} steps${metrics}, final state crc32c ${result.checksum.toString(16).padStart(8, '0')}\n`)
    }
    return 0
  } catch (err) {
    if (ps.interrupted()) return 130
    logger.error({ err }, 'worker failed')
    throw err
  } finally {
    chaos?.dispose()
    ps.dispose()
  }
}

async function cmdStatus (args: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true })
  if (values.help === true) { io.stdout(HELP.status as string); return 0 }
  const target = positionals[0]
  if (target === undefined || positionals.length > 1) throw new InvalidParametersError('phalanx status needs one <http://host:port | run-dir>')
  const status = await fetchStatus(target)
  io.stdout((values.json === true ? JSON.stringify(status, null, 2) : formatStatus(status)) + '\n')
  return 0
}

async function cmdCheckpoint (args: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: { out: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true })
  const [sub, dir, id] = positionals
  if (values.help === true) { io.stdout(HELP.checkpoint as string); return 0 }
  if (sub === undefined || dir === undefined || positionals.length > 3) throw new InvalidParametersError(`phalanx checkpoint needs a subcommand and a directory\n${HELP.checkpoint as string}`)
  switch (sub) {
    case 'ls': { const r = await listCheckpoints(dir); io.stdout(r.text + '\n'); return 0 }
    case 'verify': { const r = await verifyCheckpoint(dir, id); io.stdout(r.text + '\n'); return r.ok ? 0 : 1 }
    case 'inspect': { const r = await inspectCheckpoint(dir, id); io.stdout(r.text + '\n'); return 0 }
    case 'restore': { const r = await restoreCheckpoint(dir, id, values.out); io.stdout(r.text + '\n'); return 0 }
    default: throw new InvalidParametersError(`Unknown checkpoint subcommand "${sub}"; expected ls, verify, inspect or restore`)
  }
}

async function cmdKeygen (args: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: { dir: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true })
  if (values.help === true) { io.stdout(HELP.keygen as string); return 0 }
  const name = positionals[0]
  if (name === undefined || positionals.length > 1 || !/^[A-Za-z0-9._-]+$/.test(name)) throw new InvalidParametersError('phalanx keygen needs one <name> (letters, digits, dot, dash, underscore)')
  // Loaded here: the ZeroMQ native module is not needed by the other offline commands.
  const { generateKeyPair, writeKeyFile } = await import('@phalanx/transport/zmq')
  const dir = values.dir ?? '.'
  await mkdir(dir, { recursive: true })
  const keys = generateKeyPair()
  const keyFile = join(dir, `${name}.key`)
  const pubFile = join(dir, `${name}.pub`)
  await writeKeyFile(keyFile, keys)
  await writeFile(pubFile, JSON.stringify({ publicKey: keys.publicKey }, null, 2) + '\n')
  io.stdout(`wrote ${keyFile} (secret, mode 0600) and ${pubFile}\npublic key: ${keys.publicKey}\n`)
  return 0
}

const COMMANDS: Record<string, (args: string[], io: CliIO) => Promise<number>> = {
  launch: cmdLaunch,
  coordinator: cmdCoordinator,
  worker: cmdWorker,
  holder: holderCommand,
  status: cmdStatus,
  checkpoint: cmdCheckpoint,
  keygen: cmdKeygen,
  chaos: async (args, io) => {
    const ps = processSignal()
    try {
      const code = await chaosCommand(args, io, { signal: ps.signal })
      return ps.interrupted() ? 130 : code
    } finally {
      ps.dispose()
    }
  }
}

/** The error names that mean "you asked for something that cannot work" (exit code 2). */
const USAGE_ERRORS = new Set([InvalidConfigError.name, InvalidParametersError.name])

/**
 * Runs the `phalanx` command with `argv` (without `node` and the script) and resolves with the
 * exit code. Errors are printed, never thrown.
 */
export async function main (argv: readonly string[], io: CliIO = { stdout: (t) => { process.stdout.write(t) }, stderr: (t) => { process.stderr.write(t) }, isTTY: process.stderr.isTTY }): Promise<number> {
  const [command, ...rest] = argv
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    const topic = rest[0]
    io.stdout(topic !== undefined && HELP[topic] !== undefined ? HELP[topic] : USAGE)
    return command === undefined ? 2 : 0
  }
  if (command === '--version' || command === '-v') { io.stdout(`${VERSION}\n`); return 0 }
  const run = COMMANDS[command]
  if (run === undefined) {
    io.stderr(`phalanx: unknown command "${command}"\n\n${USAGE}`)
    return 2
  }
  try {
    return await run([...rest], io)
  } catch (err) {
    const e = err as Error & { code?: string }
    if (typeof e.code === 'string' && e.code.startsWith('ERR_PARSE_ARGS')) {
      io.stderr(`phalanx ${command}: ${e.message}\nRun "phalanx help ${command}" for its options.\n`)
      return 2
    }
    if (USAGE_ERRORS.has(e.name)) {
      io.stderr(`phalanx ${command}: ${e.message}\n`)
      return 2
    }
    io.stderr(`phalanx ${command}: ${e.name}: ${e.message}\n`)
    return 1
  }
}

