import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { AbortOptions } from '@phalanx/core'

/** The coordinator's Prometheus instruments, on a registry of its own (never the global default). */
export interface CoordinatorMetrics {
  readonly registry: Registry
  readonly epoch: Gauge
  readonly members: Gauge
  readonly spares: Gauge
  readonly committedStep: Gauge
  readonly stepsCommitted: Counter
  readonly stepsAborted: Counter
  readonly recoveries: Counter
  readonly staleMessages: Gauge
  readonly stepSeconds: Histogram
  readonly recoveryPhaseSeconds: Histogram<'phase'>
}

/** Creates the instruments with the `phalanx_coordinator_` prefix. */
export function createCoordinatorMetrics (): CoordinatorMetrics {
  const registry = new Registry()
  const registers = [registry]
  return {
    registry,
    epoch: new Gauge({ name: 'phalanx_coordinator_epoch', help: 'Current membership epoch', registers }),
    members: new Gauge({ name: 'phalanx_coordinator_members', help: 'Members of the current quorum', registers }),
    spares: new Gauge({ name: 'phalanx_coordinator_waiting', help: 'Workers waiting for a seat (pending and spares)', registers }),
    committedStep: new Gauge({ name: 'phalanx_coordinator_committed_steps', help: 'Committed optimiser steps', registers }),
    stepsCommitted: new Counter({ name: 'phalanx_coordinator_steps_committed_total', help: 'Steps committed by this coordinator instance', registers }),
    stepsAborted: new Counter({ name: 'phalanx_coordinator_steps_aborted_total', help: 'Steps dropped by the two-phase commit (retried in the next epoch)', registers }),
    recoveries: new Counter({ name: 'phalanx_coordinator_recoveries_total', help: 'Recoveries from crashed, hung or departed members', registers }),
    staleMessages: new Gauge({ name: 'phalanx_coordinator_stale_messages', help: 'Messages fenced off as coming from an older epoch', registers }),
    stepSeconds: new Histogram({ name: 'phalanx_coordinator_step_seconds', help: 'Wall time from step start to commit', buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers }),
    recoveryPhaseSeconds: new Histogram({
      name: 'phalanx_coordinator_recovery_phase_seconds',
      help: 'Recovery time by phase: detect, quorum, reconfigure, heal, first_commit, total',
      labelNames: ['phase'],
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60],
      registers
    })
  }
}

/** A started metrics HTTP server. */
export interface MetricsServer {
  /** `http://host:port`. */
  readonly url: string
  close(): Promise<void>
}

/** Serves `GET /metrics` (Prometheus text) and `GET /status` (JSON from `status()`) on `host:port`. */
export async function startMetricsServer (
  init: { host: string, port: number },
  registry: Registry,
  status: () => unknown,
  options: AbortOptions = {}
): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    if (req.method !== 'GET') { res.writeHead(405).end(); return }
    if (path === '/metrics') {
      registry.metrics().then((text) => {
        res.writeHead(200, { 'content-type': registry.contentType }).end(text)
      }, () => { res.writeHead(500).end() })
    } else if (path === '/status') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(status()))
    } else {
      res.writeHead(404).end()
    }
  })
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => { reject(err) }
    server.once('error', onError)
    server.listen(init.port, init.host, () => { server.off('error', onError); resolve() })
    options.signal?.addEventListener('abort', () => { server.close(); reject(options.signal?.reason) }, { once: true })
  })
  const addr = server.address() as AddressInfo
  return {
    url: `http://${init.host}:${addr.port}`,
    async close () {
      await new Promise<void>((resolve) => { server.close(() => { resolve() }); server.closeAllConnections() })
    }
  }
}
