/**
 * Command-line glue of the operations features (HA coordinators on etcd, SLURM, SSH), kept out
 * of main.ts so that file only registers flags and dispatches.
 *
 * @module
 */
import { dirname, join, resolve } from 'node:path'
import { InvalidConfigError, type Endpoint, type Logger, type PhalanxConfig } from '@phalanx/core'
import { createProcessLogger } from './compose.js'
import type { ProcessEvent } from './events.js'
import { followCoordinatorLeader, resolveCoordinatorLeader, runHaCoordinatorProcess, type EtcdTarget } from './ha.js'
import { launchSlurm } from './slurm.js'
import { STATUS_URL_FILE } from './status.js'

/** `parseArgs` options of the etcd (HA) flags. */
export const etcdOptions = {
  etcd: { type: 'string' },
  'etcd-prefix': { type: 'string' },
  'lease-ttl': { type: 'string' },
  'status-token': { type: 'string' }
} as const

type Values = Record<string, string | boolean | string[] | undefined>

const str = (values: Values, key: string): string | undefined => {
  const v = values[key]
  return typeof v === 'string' ? v : undefined
}

/** The etcd target named by `--etcd`, `--etcd-prefix` and `--lease-ttl`, or undefined without `--etcd`. */
export function etcdTargetFrom (values: Values): EtcdTarget | undefined {
  const urls = str(values, 'etcd')
  if (urls === undefined) return undefined
  const etcd = urls.split(',').map((u) => u.trim()).filter((u) => u.length > 0)
  if (etcd.length === 0 || etcd.some((u) => !/^https?:\/\/[^/]+$/.test(u))) throw new InvalidConfigError(`--etcd expects comma-separated http(s)://host:port URLs, got "${urls}"`)
  const prefix = str(values, 'etcd-prefix')
  if (prefix !== undefined && (!prefix.startsWith('/') || prefix.endsWith('/'))) throw new InvalidConfigError(`--etcd-prefix "${prefix}" must start with "/" and not end with one`)
  const ttl = str(values, 'lease-ttl')
  const ttlSeconds = ttl === undefined ? undefined : Number(ttl)
  if (ttlSeconds !== undefined && (!Number.isInteger(ttlSeconds) || ttlSeconds < 1)) throw new InvalidConfigError(`--lease-ttl expects whole seconds ≥ 1, got "${ttl}"`)
  return { etcd, ...(prefix === undefined ? {} : { prefix }), ...(ttlSeconds === undefined ? {} : { ttlSeconds }) }
}

/** Process helpers main.ts lends to the commands here. */
export interface ProcessHelpers {
  processSignal: () => { signal: AbortSignal, interrupted: () => boolean, dispose: () => void }
  ipcSender: () => ((event: ProcessEvent) => void) | undefined
}

/** `phalanx coordinator --etcd …`: one replica of a highly available coordinator. */
export async function runHaCoordinatorCommand (values: Values, config: PhalanxConfig, io: { stdout: (t: string) => void }, helpers: ProcessHelpers): Promise<number> {
  const target = etcdTargetFrom(values) as EtcdTarget
  const logFile = str(values, 'log-file')
  const logger = createProcessLogger({ name: 'coordinator', level: config.log.level, ...(logFile === undefined ? {} : { file: logFile }) })
  const statusPortText = str(values, 'status-port')
  const statusPort = statusPortText === undefined ? 9464 : Number(statusPortText)
  if (!Number.isInteger(statusPort) || statusPort < 0) throw new InvalidConfigError(`--status-port expects a port, got "${statusPortText}"`)
  const statusHost = str(values, 'status-host') ?? '127.0.0.1'
  const statusToken = str(values, 'status-token')
  if (!isLoopback(statusHost) && statusToken === undefined) throw new InvalidConfigError(`--status-host ${statusHost} exposes the dashboard: give --status-token <token>`)
  const lastCall = str(values, 'last-call-ms')
  const runDir = str(values, 'wal') === undefined ? undefined : dirname(resolve(str(values, 'wal') as string))
  const ps = helpers.processSignal()
  const send = helpers.ipcSender()
  try {
    const result = await runHaCoordinatorProcess({
      ...target,
      config,
      listen: str(values, 'listen') ?? 'tcp://127.0.0.1:7100',
      statusPort,
      statusHost,
      ...(statusToken === undefined ? {} : { statusToken }),
      ...(runDir === undefined ? {} : { statusUrlFile: join(runDir, STATUS_URL_FILE) }),
      ...(lastCall === undefined ? {} : { lastCallMs: Number(lastCall) })
    }, { logger, ...(send === undefined ? {} : { onEvent: send }) }, { signal: ps.signal })
    if (send === undefined) io.stdout(`job ${config.job.id} done (${result.role}): ${result.committed} steps committed, epoch ${result.epoch}\n`)
    return 0
  } catch (err) {
    if (ps.interrupted()) return 130
    logger.error({ err }, 'coordinator replica failed')
    throw err
  } finally {
    ps.dispose()
  }
}

function isLoopback (host: string): boolean {
  return host === '127.0.0.1' || host === 'localhost' || host === '::1' || host.startsWith('127.')
}

/**
 * Worker wiring for `--etcd`: resolves the leader's address (when `--coordinator` is absent) and
 * follows later leaders. Without a target it passes `--coordinator` through.
 */
export async function haWorkerWiring (
  target: EtcdTarget | undefined,
  config: PhalanxConfig,
  coordinator: string | undefined,
  logger: Logger,
  signal: AbortSignal
): Promise<{ coordinatorAddress: string, components: { onEndpoint?: (endpoint: Endpoint) => Promise<() => Promise<void>> } }> {
  if (target === undefined) {
    if (coordinator === undefined) throw new InvalidConfigError('--coordinator or --etcd is required')
    return { coordinatorAddress: coordinator, components: {} }
  }
  const address = coordinator ?? await resolveCoordinatorLeader(target, config, { logger }, { signal })
  return {
    coordinatorAddress: address,
    components: { onEndpoint: async (endpoint) => await followCoordinatorLeader({ ...target, initialAddress: address }, config, endpoint, { logger }) }
  }
}

/** `parseArgs` options of `phalanx launch --slurm`. */
export const slurmOptions = {
  slurm: { type: 'boolean' },
  'sbatch-arg': { type: 'string', multiple: true }
} as const

const PASSED_CONFIG = ['config', 'preset', 'job-id', 'steps', 'seed', 'global-batch', 'micro-batch', 'min-workers', 'max-workers', 'log-level']

/** `phalanx launch --slurm`: submits the job to Slurm and waits for it. */
export async function runSlurmLaunch (
  values: Values,
  init: { workers: number, runDir: string, bin: string, port?: number, lastCallMs?: number },
  io: { stdout: (t: string) => void, stderr: (t: string) => void },
  helpers: ProcessHelpers
): Promise<number> {
  const configArgs: string[] = []
  for (const key of PASSED_CONFIG) {
    const v = str(values, key)
    if (v !== undefined) configArgs.push(`--${key}`, key === 'config' ? resolve(v) : v)
  }
  for (const s of (values.set as string[] | undefined) ?? []) configArgs.push('--set', s)
  const jobArgs = ['--job', str(values, 'job') ?? 'linear']
  for (const o of (values['job-opt'] as string[] | undefined) ?? []) jobArgs.push('--job-opt', o)
  const ps = helpers.processSignal()
  try {
    const { code } = await launchSlurm({
      workers: init.workers, runDir: init.runDir, bin: init.bin, configArgs, jobArgs,
      ...(init.port === undefined ? {} : { port: init.port }),
      ...(init.lastCallMs === undefined ? {} : { lastCallMs: init.lastCallMs }),
      sbatchArgs: (values['sbatch-arg'] as string[] | undefined) ?? []
    }, io, { signal: ps.signal })
    if (ps.interrupted()) return 130
    return code === 0 ? 0 : 1
  } finally {
    ps.dispose()
  }
}
