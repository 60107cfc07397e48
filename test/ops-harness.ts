/**
 * Helpers of the operations end-to-end tests and the failover benchmark: a highly available job
 * made of real processes — coordinator replicas elected through etcd (`phalanx coordinator --etcd`)
 * and workers that follow the leader (`phalanx worker --etcd`) — each in its own process.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { BIN, ROOT } from './cli-harness.js'

/** One child process of the job. */
export interface Child {
  name: string
  proc: ChildProcess
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  output: () => string
}

function start (name: string, args: string[], dir: string): Child {
  const proc = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  const keep = (d: Buffer): void => { out = (out + d.toString()).slice(-20_000) }
  proc.stdout?.on('data', keep)
  proc.stderr?.on('data', keep)
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => {
    proc.once('exit', (code, signal) => { resolve({ code, signal }) })
  })
  void dir
  return { name, proc, exited, output: () => out }
}

/** Tunables of {@link startHaJob}. */
export interface HaJobInit {
  etcdUrl: string
  dir: string
  replicas: number
  workers: number
  /** Coordinator ports, one per replica. */
  ports: number[]
  steps: number
  /** Extra config flags for every process. */
  config?: string[]
  /** Job flags of the workers. */
  job?: string[]
  leaseTtl?: number
}

/** A running HA job. */
export interface HaJob {
  replicas: Child[]
  workers: Child[]
  /** Index of the replica that currently leads, from its status-url file (or from etcd through the caller). */
  statusUrl: (replica: number) => string | undefined
  startReplica: (i: number) => Child
  killAll: () => void
}

/** Starts `replicas` coordinator replicas and `workers` workers of the linear job. */
export function startHaJob (init: HaJobInit): HaJob {
  const common = ['--job-id', 'ha', '--steps', String(init.steps), ...(init.config ?? [])]
  const replicaDir = (i: number): string => join(init.dir, `coordinator-${i}`)
  const replicas: Child[] = []
  const startReplica = (i: number): Child => {
    mkdirSync(replicaDir(i), { recursive: true })
    const c = start(`coordinator-${i}`, [
      'coordinator', ...common, '--etcd', init.etcdUrl, '--lease-ttl', String(init.leaseTtl ?? 1),
      '--listen', `tcp://127.0.0.1:${init.ports[i] as number}`, '--status-port', '0', '--last-call-ms', '1500',
      '--wal', join(replicaDir(i), 'unused.wal'), '--log-file', join(replicaDir(i), 'log.jsonl')
    ], init.dir)
    replicas[i] = c
    return c
  }
  for (let i = 0; i < init.replicas; i++) startReplica(i)
  const workers: Child[] = []
  for (let i = 1; i <= init.workers; i++) {
    workers.push(start(`worker-${i}`, [
      'worker', ...common, '--etcd', init.etcdUrl, '--id', `worker-${i}`, ...(init.job ?? ['--job', 'linear']),
      '--out', join(init.dir, `worker-${i}.json`), '--log-file', join(init.dir, `worker-${i}.log.jsonl`)
    ], init.dir))
  }
  return {
    replicas,
    workers,
    startReplica,
    statusUrl (i) {
      const file = join(replicaDir(i), 'coordinator.status-url')
      return existsSync(file) ? readFileSync(file, 'utf8').trim() : undefined
    },
    killAll () {
      for (const c of [...replicas, ...workers]) if (c !== undefined && c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL')
    }
  }
}

/** Fetches `GET /status` of a URL (undefined when it does not answer). */
export async function fetchStatus (url: string): Promise<{ committed: number, epoch: number, phase: string } | undefined> {
  try {
    const res = await fetch(url + '/status', { signal: AbortSignal.timeout(1000) })
    return res.ok ? await res.json() as { committed: number, epoch: number, phase: string } : undefined
  } catch {
    return undefined
  }
}

/**
 * Polls every replica's status until one (the leader) satisfies `check`; resolves with its index
 * and status. Bounded by `timeoutMs`.
 */
export async function waitForLeaderStatus (job: HaJob, check: (s: { committed: number, epoch: number, phase: string }) => boolean, timeoutMs = 30_000, exclude: number[] = []): Promise<{ index: number, status: { committed: number, epoch: number, phase: string } }> {
  const deadline = Date.now() + timeoutMs
  for (let round = 0; Date.now() < deadline && round < 100_000; round++) {
    for (let i = 0; i < job.replicas.length; i++) {
      if (exclude.includes(i)) continue
      const url = job.statusUrl(i)
      if (url === undefined) continue
      const s = await fetchStatus(url)
      if (s !== undefined && check(s)) return { index: i, status: s }
    }
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error(`no leader reached the expected status within ${timeoutMs} ms`)
}

/** Reads a worker's `--out` file (steps and checksum). */
export function workerResult (dir: string, id: string): { steps: number, checksum: number } | undefined {
  const file = join(dir, `${id}.json`)
  if (!existsSync(file)) return undefined
  const r = JSON.parse(readFileSync(file, 'utf8')) as { steps: number, checksum: number }
  return { steps: r.steps, checksum: r.checksum }
}
