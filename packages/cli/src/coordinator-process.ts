/**
 * The `phalanx coordinator` process: configuration → logger → ZeroMQ endpoint (with the epoch
 * fence) → coordinator with its write-ahead log, plus an HTTP server for `GET /status` (JSON) and
 * `GET /metrics` (Prometheus). A restarted process on the same address and WAL resumes the job.
 *
 * @module
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { dirname } from 'node:path'
import { ELASTIC_FENCE_EXEMPT, createEpochFence, type AbortOptions, type EndpointStats, type Logger, type PhalanxConfig } from '@phalanx/core'
import {
  createCoordinator, coordinatorInitFromConfig, createWalStateStore,
  type Coordinator, type CoordinatorStatus, type RecoveryRecord
} from '@phalanx/coordinator'
import { openEndpoint } from './compose.js'
import type { ChildChaos } from './chaos-child.js'
import type { ProcessEvent } from './events.js'

/** Tunables of {@link runCoordinatorProcess}. */
export interface CoordinatorProcessInit {
  config: PhalanxConfig
  /** Address to listen on; a fixed port lets a restarted coordinator be found again. */
  listen: string
  /** Write-ahead log file (created with its directory). */
  wal: string
  /**
   * Port of the `/status` + `/metrics` HTTP server (0 = a free port); absent = no server.
   * @default undefined
   */
  statusPort?: number
  /**
   * Interface of the HTTP server.
   * @default '127.0.0.1'
   */
  statusHost?: string
  /**
   * How long to keep answering after the job is done, so workers waiting for a seat hear it
   * from their heartbeat replies.
   * @default 3 × heartbeatIntervalMs, at least 500 ms
   */
  drainMs?: number
  /** Writes the status URL into this file once the server listens (how `phalanx status <run-dir>` finds it). */
  statusUrlFile?: string
  /**
   * After `minWorkers` have joined, how long the first rendezvous waits for more workers.
   * @default 0
   */
  lastCallMs?: number
}

/** Collaborators of {@link runCoordinatorProcess}. */
export interface CoordinatorProcessComponents {
  logger: Logger
  /** Receives the process events (the launcher forwards them over IPC). */
  onEvent?: (event: ProcessEvent) => void
  /** Chaos glue (`phalanx chaos run`): the endpoint is opened through its chaos transport. */
  chaos?: ChildChaos
}

/** The JSON served at `GET /status`. */
export interface JobStatus extends CoordinatorStatus {
  job: string
  steps: number
  address: string
  recoveries: RecoveryRecord[]
  /** Inbound messages of the coordinator's endpoint, with rejected ones by reason. */
  transport: EndpointStats
  /** Messages fenced off as coming from an older epoch. */
  staleDropped: number
}

function statusOf (config: PhalanxConfig, address: string, coordinator: Coordinator, stats: () => EndpointStats, stale: () => number): JobStatus {
  return { job: config.job.id, steps: config.job.steps, address, ...coordinator.status(), recoveries: coordinator.recoveries(), transport: stats(), staleDropped: stale() }
}

async function listen (server: Server, port: number, host: string): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => { server.off('error', reject); resolve() })
  })
  return `http://${host}:${(server.address() as AddressInfo).port}`
}

/**
 * Runs a coordinator until its job is done (resolves) or fails (rejects with `QuorumLostError`),
 * or until `options.signal` fires (rejects with `ClosedError`). Everything it opened is closed.
 */
export async function runCoordinatorProcess (init: CoordinatorProcessInit, components: CoordinatorProcessComponents, options: AbortOptions = {}): Promise<{ committed: number, epoch: number, status: JobStatus }> {
  const { config } = init
  const { logger } = components
  const emit = components.onEvent ?? (() => {})
  const fence = createEpochFence({ exempt: ELASTIC_FENCE_EXEMPT })
  mkdirSync(dirname(init.wal), { recursive: true })
  const store = createWalStateStore({ path: init.wal }, { logger })
  const endpoint = components.chaos === undefined
    ? await openEndpoint(config, { id: 'coordinator', listen: init.listen, logger, fence })
    : await components.chaos.openEndpoint(config, { id: 'coordinator', listen: init.listen, logger, fence })
  const coordinator = createCoordinator(coordinatorInitFromConfig(config, { lastCallMs: init.lastCallMs ?? 0, ...components.chaos?.coordinatorOverrides }), { endpoint, store, logger, fence, ...(components.chaos === undefined ? {} : { clock: components.chaos.clock }) })
  const status = (): JobStatus => statusOf(config, endpoint.address, coordinator, () => endpoint.stats(), () => fence.dropped)
  let server: Server | undefined
  const offs = [
    coordinator.on('quorum', (e) => { emit({ type: 'quorum', epoch: e.epoch, step: e.step, active: e.active, members: e.members, reason: e.reason }) }),
    // A recomputed step (its state was lost with every holder) was reported when first committed.
    coordinator.on('commit', (e) => { if (e.recomputed !== true) emit({ type: 'commit', step: e.step, epoch: e.epoch }) }),
    coordinator.on('suspect', (e) => { emit({ type: 'suspect', peers: e.peers, reason: e.reason, epoch: e.epoch }) }),
    coordinator.on('recovery', (r) => { emit({ type: 'recovery', record: r }) })
  ]
  try {
    await coordinator.start(options)
    let statusUrl: string | undefined
    if (init.statusPort !== undefined) {
      const s = createServer((req, res) => {
        const path = (req.url ?? '/').split('?')[0]
        if (req.method !== 'GET') { res.writeHead(405).end(); return }
        if (path === '/status') {
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(status()))
        } else if (path === '/metrics') {
          coordinator.metricsText().then((text) => { res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(text) }, () => { res.writeHead(500).end() })
        } else {
          res.writeHead(404).end()
        }
      })
      server = s
      statusUrl = await listen(s, init.statusPort, init.statusHost ?? '127.0.0.1')
      if (init.statusUrlFile !== undefined) writeFileSync(init.statusUrlFile, statusUrl + '\n')
    }
    logger.info({ address: endpoint.address, statusUrl, wal: init.wal }, 'coordinator listening')
    emit({ type: 'ready', address: endpoint.address, ...(statusUrl === undefined ? {} : { statusUrl }) })
    const result = await coordinator.finished(options).catch((err: unknown) => {
      // The launcher learns why, not only that the process exited (its report names the cause).
      if (options.signal?.aborted !== true) emit({ type: 'failed', error: { name: (err as Error).name, message: (err as Error).message } })
      throw err
    })
    const drainMs = init.drainMs ?? Math.max(500, 3 * config.timeouts.heartbeatIntervalMs)
    // Workers waiting for a seat learn that the job is done from their next heartbeat reply.
    let timer: NodeJS.Timeout | undefined
    let onAbort: (() => void) | undefined
    try {
      await new Promise<void>((resolve) => {
        timer = setTimeout(resolve, drainMs)
        onAbort = resolve
        options.signal?.addEventListener('abort', onAbort, { once: true })
      })
    } finally {
      clearTimeout(timer)
      if (onAbort !== undefined) options.signal?.removeEventListener('abort', onAbort)
    }
    const final = status()
    emit({ type: 'done', committed: result.committed, epoch: result.epoch, status: final })
    return { ...result, status: final }
  } finally {
    for (const off of offs) off()
    await coordinator.stop()
    if (server !== undefined) {
      const s = server
      await new Promise<void>((resolve) => { s.close(() => { resolve() }); s.closeAllConnections() })
    }
    await endpoint.close({ lingerMs: config.timeouts.closeLingerMs })
    await store.close()
  }
}
