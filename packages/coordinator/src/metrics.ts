import { timingSafeEqual } from 'node:crypto'
import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import { InvalidParametersError, type AbortOptions } from '@phalanx/core'
import { dashboardAssets, dashboardHtml, type DashboardFeed } from './dashboard.js'

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

/** Extras of {@link startMetricsServer}. */
export interface MetricsServerExtras {
  /** Serves the dashboard (`GET /`, `/dashboard.json`, `/assets/…`) from this feed; closed with the server. */
  dashboard?: DashboardFeed
}

function isLoopback (host: string): boolean {
  return host === '127.0.0.1' || host === 'localhost' || host === '::1' || host.startsWith('127.')
}

/**
 * Serves `GET /metrics` (Prometheus text), `GET /status` (JSON from `status()`) and, with a
 * dashboard feed, the read-only dashboard (`GET /`, `/dashboard.json`, `/assets/uplot.*`) on
 * `host:port`. With `token`, every request must carry `Authorization: Bearer <token>` or
 * `?token=<token>`; a non-loopback `host` without a token is refused.
 */
export async function startMetricsServer (
  init: { host: string, port: number, token?: string },
  registry: Registry,
  status: () => unknown,
  options: AbortOptions = {},
  extras: MetricsServerExtras = {}
): Promise<MetricsServer> {
  if (!isLoopback(init.host) && init.token === undefined) {
    extras.dashboard?.close()
    throw new InvalidParametersError(`The metrics server on ${init.host} is reachable from other hosts: give it a token`)
  }
  const feed = extras.dashboard
  let assets: { js: string, css: string } | undefined
  const authorized = (req: IncomingMessage, url: URL): boolean => {
    if (init.token === undefined) return true
    const given = url.searchParams.get('token') ?? (req.headers.authorization ?? '').replace(/^Bearer /, '')
    const a = Buffer.from(given)
    const b = Buffer.from(init.token)
    return a.length === b.length && timingSafeEqual(a, b)
  }
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost')
    const path = url.pathname
    if (req.method !== 'GET') { res.writeHead(405).end(); return }
    if (!authorized(req, url)) { res.writeHead(401, { 'www-authenticate': 'Bearer' }).end(); return }
    if (path === '/metrics') {
      registry.metrics().then((text) => {
        res.writeHead(200, { 'content-type': registry.contentType }).end(text)
      }, () => { res.writeHead(500).end() })
    } else if (path === '/status') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(status()))
    } else if (feed !== undefined && (path === '/' || path === '/dashboard')) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(dashboardHtml())
    } else if (feed !== undefined && path === '/dashboard.json') {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(feed.data()))
    } else if (feed !== undefined && (path === '/assets/uplot.iife.min.js' || path === '/assets/uplot.min.css')) {
      assets ??= dashboardAssets()
      const js = path.endsWith('.js')
      res.writeHead(200, { 'content-type': js ? 'text/javascript' : 'text/css', 'cache-control': 'max-age=3600' }).end(js ? assets.js : assets.css)
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
      feed?.close()
      await new Promise<void>((resolve) => { server.close(() => { resolve() }); server.closeAllConnections() })
    }
  }
}
