/**
 * Coordinator high availability on etcd, as the CLI composes it.
 *
 * - `phalanx coordinator --etcd <urls>` runs {@link runHaCoordinatorProcess}: every replica opens its
 *   endpoint, then campaigns for `<prefix>/leader` (value: its address). The winner replays the job
 *   from the etcd state store (every write fenced by its leadership's term), calls the last members
 *   back and runs the job; standbys wait on a watch and take over when the leader's lease expires.
 *   A deposed leader stops at once (its writes are already refused) and exits with `FencedError`.
 * - `phalanx worker --etcd <urls>` resolves the leader's address from etcd and follows every new
 *   leader with {@link followCoordinatorLeader}, which re-routes the worker's `coordinator` peer: the
 *   worker notices the old coordinator's loss (disconnect or silence) and joins the new one without
 *   restarting.
 *
 * @module
 */
import { writeFileSync } from 'node:fs'
import {
  ELASTIC_FENCE_EXEMPT, FencedError, createEpochFence, type AbortOptions, type Endpoint, type Logger, type PhalanxConfig
} from '@phalanx/core'
import {
  createCoordinator, coordinatorInitFromConfig, createEtcdElection, createEtcdStateStore, type EtcdElection, type RecoveryRecord
} from '@phalanx/coordinator'
import { openEndpoint } from './compose.js'
import type { ProcessEvent } from './events.js'

/** Where the job's coordination state lives in etcd. */
export interface EtcdTarget {
  /** etcd client URLs. */
  etcd: string[]
  /**
   * Key prefix of the job.
   * @default `/phalanx/<job id>`
   */
  prefix?: string
  /**
   * Leader lease TTL, seconds.
   * @default 2
   */
  ttlSeconds?: number
}

/** Tunables of {@link runHaCoordinatorProcess}. */
export interface HaCoordinatorProcessInit extends EtcdTarget {
  config: PhalanxConfig
  /** Address this replica listens on (and advertises when it leads). */
  listen: string
  /**
   * Port of the HTTP server (`/status`, `/metrics`, dashboard) while leading; 0 = a free port.
   * @default undefined (none)
   */
  statusPort?: number
  /** @default '127.0.0.1' */
  statusHost?: string
  /** Bearer token the HTTP server requires (needed when it is not bound to loopback). */
  statusToken?: string
  /** Writes the status URL here when this replica becomes leader. */
  statusUrlFile?: string
  /** @default 0 */
  lastCallMs?: number
  /**
   * How long the leader keeps answering after the job is done.
   * @default 3 × heartbeatIntervalMs, at least 500 ms
   */
  drainMs?: number
}

/** What a replica did. */
export interface HaCoordinatorResult {
  /** `leader`: this replica finished the job; `standby`: another one did. */
  role: 'leader' | 'standby'
  committed: number
  epoch: number
  /** Term (fencing token) of this replica's leadership, when it led. */
  term?: string
  recoveries: RecoveryRecord[]
}

/** The default key prefix of a job. */
export function etcdPrefixFor (config: PhalanxConfig, prefix?: string): string {
  return prefix ?? `/phalanx/${config.job.id}`
}

function electionFor (target: EtcdTarget, config: PhalanxConfig, logger: Logger): EtcdElection {
  return createEtcdElection({
    hosts: target.etcd, prefix: etcdPrefixFor(config, target.prefix), ...(target.ttlSeconds === undefined ? {} : { ttlSeconds: target.ttlSeconds })
  }, { logger })
}

async function sleep (ms: number, signal: AbortSignal | undefined): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  let onAbort: (() => void) | undefined
  try {
    await new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms)
      onAbort = resolve
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  } finally {
    clearTimeout(timer)
    if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort)
  }
}

/**
 * Runs one coordinator replica until the job is done (by this replica or another), or rejects:
 * `FencedError` when this replica lost its leadership mid-job (restart it: it comes back as a
 * standby), `QuorumLostError`, `ClosedError`/`AbortError` when `options.signal` fired.
 */
export async function runHaCoordinatorProcess (
  init: HaCoordinatorProcessInit,
  components: { logger: Logger, onEvent?: (event: ProcessEvent) => void },
  options: AbortOptions = {}
): Promise<HaCoordinatorResult> {
  const { config } = init
  const { logger } = components
  const emit = components.onEvent ?? (() => {})
  const election = electionFor(init, config, logger)
  const fence = createEpochFence({ exempt: ELASTIC_FENCE_EXEMPT })
  let endpoint: Endpoint | undefined
  try {
    const finishedBefore = await election.done(options)
    if (finishedBefore !== undefined) return { role: 'standby', ...finishedBefore, recoveries: [] }
    endpoint = await openEndpoint(config, { id: 'coordinator', listen: init.listen, logger, fence })
    logger.info({ address: endpoint.address, prefix: election.prefix }, 'coordinator replica standing by')
    const leadership = await election.campaign(endpoint.address, options)
    const finishedMeanwhile = await election.done(options)
    if (finishedMeanwhile !== undefined) {
      await leadership.resign()
      return { role: 'standby', ...finishedMeanwhile, recoveries: [] }
    }
    const store = createEtcdStateStore({ election, leadership }, { logger })
    const coordinator = createCoordinator(coordinatorInitFromConfig(config, {
      lastCallMs: init.lastCallMs ?? 0,
      ...(init.statusPort === undefined ? {} : { metricsPort: init.statusPort, metricsHost: init.statusHost ?? '127.0.0.1' }),
      ...(init.statusToken === undefined ? {} : { metricsToken: init.statusToken })
    }), { endpoint, store, logger, fence })
    const offs = [
      coordinator.on('quorum', (e) => { emit({ type: 'quorum', epoch: e.epoch, step: e.step, active: e.active, members: e.members, reason: e.reason }) }),
      coordinator.on('commit', (e) => { if (e.recomputed !== true) emit({ type: 'commit', step: e.step, epoch: e.epoch }) }),
      coordinator.on('suspect', (e) => { emit({ type: 'suspect', peers: e.peers, reason: e.reason, epoch: e.epoch }) }),
      coordinator.on('recovery', (r) => { emit({ type: 'recovery', record: r }) })
    ]
    // Leadership lost: stop deciding at once (the store already refuses our writes).
    const lost = new Promise<never>((_resolve, reject) => {
      const onLost = (): void => { reject(leadership.signal.reason as Error) }
      if (leadership.signal.aborted) onLost()
      else leadership.signal.addEventListener('abort', onLost, { once: true })
    })
    lost.catch(() => undefined)
    try {
      await coordinator.start(options)
      if (init.statusUrlFile !== undefined && coordinator.metricsUrl !== undefined) writeFileSync(init.statusUrlFile, coordinator.metricsUrl + '\n')
      logger.info({ term: leadership.term, address: endpoint.address, statusUrl: coordinator.metricsUrl }, 'leading the job')
      emit({ type: 'ready', address: endpoint.address, ...(coordinator.metricsUrl === undefined ? {} : { statusUrl: coordinator.metricsUrl }) })
      const result = await Promise.race([coordinator.finished(options), lost])
      await election.markDone(leadership, result, options)
      // Workers waiting for a seat learn that the job is done from their next heartbeat reply.
      await sleep(init.drainMs ?? Math.max(500, 3 * config.timeouts.heartbeatIntervalMs), options.signal)
      await leadership.resign()
      return { role: 'leader', ...result, term: leadership.term, recoveries: coordinator.recoveries() }
    } catch (err) {
      if (leadership.signal.aborted) {
        logger.error({ term: leadership.term }, 'deposed: another replica leads now; stopping')
        throw new FencedError(`Coordinator replica lost leadership of term ${leadership.term}`, { cause: err })
      }
      await leadership.resign()
      throw err
    } finally {
      for (const off of offs) off()
      await coordinator.stop()
      await store.close()
    }
  } finally {
    await endpoint?.close({ lingerMs: config.timeouts.closeLingerMs })
    await election.close()
  }
}

/** Waits until a leader is elected and returns its address. */
export async function resolveCoordinatorLeader (target: EtcdTarget, config: PhalanxConfig, components: { logger: Logger }, options: AbortOptions = {}): Promise<string> {
  const election = electionFor(target, config, components.logger)
  try {
    return (await election.waitForLeader(options)).address
  } finally {
    await election.close()
  }
}

/**
 * Keeps `endpoint`'s route to the `coordinator` peer pointed at the current leader. On a new
 * leader the old route is dropped (pending requests to it fail at once, so the worker's join loop
 * retries right away) and the new address is dialled. Resolves with the function that stops it.
 */
export async function followCoordinatorLeader (
  target: EtcdTarget & { initialAddress?: string, coordinatorId?: string },
  config: PhalanxConfig,
  endpoint: Endpoint,
  components: { logger: Logger }
): Promise<() => Promise<void>> {
  const election = electionFor(target, config, components.logger)
  const peer = target.coordinatorId ?? 'coordinator'
  let current = target.initialAddress
  try {
    const stop = await election.follow((leader) => {
      if (leader === undefined || leader.address === current) return
      components.logger.info({ from: current, to: leader.address, term: leader.term }, 'coordinator leader changed; re-routing')
      current = leader.address
      endpoint.disconnect(peer)
      endpoint.connect(peer, leader.address)
    })
    return async () => {
      await stop()
      await election.close()
    }
  } catch (err) {
    await election.close()
    throw err
  }
}
