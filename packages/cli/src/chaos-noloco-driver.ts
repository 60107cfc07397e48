/**
 * A {@link JobDriver} for `job.kind: noloco` scenarios: N replicas in this process over the memory
 * transport wrapped by the chaos network decorator, each training a linear regression on its own
 * (non-IID) data with plain SGD, and every `interval` inner steps an outer round of the real
 * `@phalanx/optim` outer optimiser (NoLoCo pair exchange by default). Membership is the
 * coordinator's: `createReplicaMembership` of `@phalanx/coordinator` on a `coordinator` endpoint,
 * and one `createMembershipClient` per replica that installs its views.
 *
 * Faults it supports: `kill` (a replica stops abruptly: its endpoint closes with no goodbye and its
 * loop ends; the membership service sees the disconnect and publishes a view without it),
 * `network` (link rules on a replica's traffic, or the whole job's) and `partition`.
 *
 * Process ids: `replica-<r>` (role `worker`, rank r, group `replicas`) and `coordinator` (the
 * membership service; it cannot be killed). A committed step is an outer round that every replica
 * alive at the time finished. Recoveries are the views published after a loss, timed from the kill
 * (detection) to the next round every survivor finished. The final loss is the mean, over the
 * survivors, of the mean squared error on a fixed evaluation set; checksums are CRC-32C of each
 * survivor's weights (they differ between replicas: NoLoCo never averages all of them).
 *
 * `job.recovery: false` turns the failure detector off (no disconnects, no silence timeout): a lost
 * replica stays in the view and its partners fall back to local steps.
 *
 * @module
 */
import {
  InvalidParametersError, StepAbortedError, bytesOf, crc32c, raceSignal, systemClock,
  type AbortOptions, type Clock, type Endpoint, type EndpointEvents
} from '@phalanx/core'
import {
  chaosTransport, createChaosAgent, createChaosLog, type ChaosLog, type ChaosTransport, type DriverRecovery, type FaultKind,
  type InjectionHandle, type InProcessFault, type JobDriver, type JobOutcome, type JobSpec, type ProcessInfo, type ProcessSignal,
  nolocoJobConfigSchema, type NolocoJobConfig
} from '@phalanx/chaos'
import { createReplicaMembership, type ReplicaMembership } from '@phalanx/coordinator'
import { createMembershipClient, createOuterOptimizer, type MembershipClient, type OuterOptimizer } from '@phalanx/optim'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { createCommitFeed, kindConfig, noise } from './chaos-kind-config.js'

/** `job.config` of a NoLoCo scenario: the chaos scenario schema's type (defaults filled in). */
export type NolocoScenarioConfig = NolocoJobConfig

/** Tunables of {@link createNolocoDriver}. */
export interface NolocoDriverInit {
  /** Seed of network fault decisions. @default 1 */
  seed?: number
  /** Shared log. @default a new one */
  log?: ChaosLog
}

/** Collaborators of {@link createNolocoDriver}. */
export interface NolocoDriverComponents {
  /** Times detection and recovery. @default systemClock() */
  clock?: Clock
}

interface Replica {
  id: string
  rank: number
  endpoint: Endpoint
  outer: OuterOptimizer
  client: MembershipClient
  weights: Float32Array
  alive: boolean
  /** Outer rounds finished. */
  rounds: number
  loop: Promise<void>
  settled: boolean
}

const SUPPORTED: ReadonlySet<FaultKind> = new Set<FaultKind>(['kill', 'network', 'partition'])
const BATCH = 8
const EVAL = 64

/** Creates the driver (one job per driver). */
export function createNolocoDriver (init: NolocoDriverInit = {}, components: NolocoDriverComponents = {}): JobDriver {
  const clock = components.clock ?? systemClock()
  const log = init.log ?? createChaosLog()
  let spec: JobSpec | undefined
  let cfg: NolocoScenarioConfig | undefined
  let transport: ChaosTransport | undefined
  let coordinator: Endpoint | undefined
  let membership: ReplicaMembership | undefined
  const replicas = new Map<string, Replica>()
  let phase: 'starting' | 'running' | 'done' | 'failed' | 'stopped' = 'starting'
  let committed = 0
  let lastLoss: number | undefined
  let failure: Error | undefined
  const commits = createCommitFeed()
  const recoveries: DriverRecovery[] = []
  /** Losses seen by the membership service whose first full round after is not yet committed. */
  const pending: Array<{ peers: string[], killedAt: number, detectedAt: number, step: number }> = []
  const killedAt = new Map<string, number>()
  const unsubscribes: Array<() => void> = []
  let settle: { resolve: () => void, reject: (err: Error) => void } | undefined
  const done = new Promise<void>((resolve, reject) => { settle = { resolve, reject } })
  done.catch(() => {})
  let trueW = new Float32Array(0)

  /** Sample i of replica r: inputs biased towards the replica's own coordinates (non-IID). */
  const sample = (i: number, r: number, x: Float32Array): number => {
    let y = 0
    for (let k = 0; k < x.length; k++) {
      x[k] = noise(i * x.length + k, r) + (k % (cfg as NolocoScenarioConfig).replicas === r ? 2 : 0)
      y += (trueW[k] as number) * (x[k] as number)
    }
    return y
  }

  const evalLoss = (w: Float32Array): number => {
    const x = new Float32Array(w.length)
    let sum = 0
    for (let i = 0; i < EVAL; i++) {
      let y = 0
      let p = 0
      for (let k = 0; k < x.length; k++) {
        x[k] = noise(i * x.length + k, 1_000_003)
        y += (trueW[k] as number) * (x[k] as number)
        p += (w[k] as number) * (x[k] as number)
      }
      sum += (p - y) ** 2
    }
    return sum / EVAL
  }

  const survivors = (): Replica[] => [...replicas.values()].filter((r) => r.alive)

  /** Commits every round that all alive replicas finished. */
  const advance = (): void => {
    const alive = survivors()
    if (alive.length === 0 || spec === undefined) return
    const upTo = Math.min(...alive.map((r) => r.rounds))
    while (committed < upTo) {
      const step = committed++
      lastLoss = alive.reduce((a, r) => a + evalLoss(r.weights), 0) / alive.length
      for (const p of pending.splice(0)) {
        const now = clock.now()
        const detectMs = Math.max(0, p.detectedAt - p.killedAt)
        recoveries.push({ reason: 'replica lost: membership view without it', peers: p.peers, step: p.step, detectMs, quorumMs: 0, firstCommitMs: now - p.detectedAt, totalMs: now - p.killedAt })
      }
      commits.emit({ step, epoch: membership?.version ?? 0, loss: lastLoss })
    }
    if (committed >= spec.steps && phase === 'running') {
      phase = 'done'
      settle?.resolve()
    }
  }

  const runLoop = async (r: Replica, c: NolocoScenarioConfig, steps: number): Promise<void> => {
    await r.client.ready()
    const grad = new Float32Array(c.dim)
    const x = new Float32Array(c.dim)
    let inner = 0
    while (r.alive && r.rounds < steps) {
      grad.fill(0)
      for (let b = 0; b < BATCH; b++) {
        const y = sample(inner * BATCH + b, r.rank, x)
        let err = -y
        for (let k = 0; k < c.dim; k++) err += (r.weights[k] as number) * (x[k] as number)
        for (let k = 0; k < c.dim; k++) grad[k] = (grad[k] as number) + err * (x[k] as number) / BATCH
      }
      for (let k = 0; k < c.dim; k++) r.weights[k] = (r.weights[k] as number) - c.lr * (grad[k] as number)
      inner++
      const report = await r.outer.step(r.weights)
      if (!r.alive) return
      if (report !== undefined) {
        r.rounds = (report.resyncedTo ?? report.round + 1)
        void r.client.heartbeat().catch(() => {})
        advance()
      }
    }
  }

  const kill = async (r: Replica): Promise<void> => {
    if (!r.alive) return
    r.alive = false
    killedAt.set(r.id, clock.now())
    // Abrupt: the endpoint closes first, so no leave message reaches the coordinator.
    await r.endpoint.close({ lingerMs: 0 })
    await r.client.stop()
    await r.outer.stop()
    await r.loop
    advance()
  }

  const driver: JobDriver = {
    name: 'noloco',
    log,
    supports: (kind) => SUPPORTED.has(kind),

    async start (job, options: AbortOptions = {}) {
      if (spec !== undefined) throw new InvalidParametersError('This driver runs one job; create another for the next')
      spec = job
      const c = kindConfig(nolocoJobConfigSchema, 'noloco', job)
      cfg = c
      trueW = Float32Array.from({ length: c.dim }, (_, i) => Math.sin(i + 1 + job.seed))
      transport = chaosTransport(memoryTransport({ network: createMemoryNetwork() }), { seed: init.seed ?? 1 }, { log })
      const raw = await transport.open({ id: 'coordinator', job: 'noloco' }, options)
      coordinator = raw
      // Without recovery the service must not learn of disconnects either.
      const endpoint: Endpoint = job.recovery
        ? raw
        : Object.assign(Object.create(raw) as Endpoint, {
          on: <E extends keyof EndpointEvents>(event: E, listener: EndpointEvents[E]) => event === 'peer:disconnect' ? () => {} : raw.on(event, listener)
        })
      const m = createReplicaMembership({ minReplicas: c.replicas, maxReplicas: c.replicas, suspectAfterMs: job.recovery ? c.suspectAfterMs : 3_600_000, checkIntervalMs: Math.max(10, Math.floor(c.suspectAfterMs / 4)) }, { endpoint, clock })
      membership = m
      unsubscribes.push(m.on('view', (change) => {
        const lost = change.kinds.filter((k) => k.kind === 'lost').map((k) => k.id)
        if (lost.length === 0) return
        const now = clock.now()
        pending.push({ peers: lost, killedAt: Math.min(...lost.map((id) => killedAt.get(id) ?? now)), detectedAt: now, step: committed })
      }))
      await m.start(options)
      const initial = new Float32Array(c.dim)
      for (let rank = 0; rank < c.replicas; rank++) {
        const id = `replica-${rank}`
        const ep = await transport.open({ id, job: 'noloco' }, options)
        const outer = createOuterOptimizer({ spec: { preset: c.preset, interval: c.interval }, initial, seed: job.seed, exchangeTimeoutMs: c.exchangeTimeoutMs }, { endpoint: ep })
        const client = createMembershipClient({ coordinator: 'coordinator', coordinatorAddress: raw.address, heartbeatIntervalMs: c.heartbeatIntervalMs }, { endpoint: ep, outer, clock })
        replicas.set(id, { id, rank, endpoint: ep, outer, client, weights: initial.slice(), alive: true, rounds: 0, loop: Promise.resolve(), settled: false })
      }
      const all = [...replicas.values()]
      for (const a of all) for (const b of all) if (a !== b) a.endpoint.connect(b.id, b.endpoint.address)
      phase = 'running'
      for (const r of all) {
        r.outer.start()
        await r.client.start(options)
        r.loop = runLoop(r, c, job.steps).catch((err: unknown) => {
          // A killed replica's pending sync rejects as it closes; anything else fails the job.
          if (!r.alive || phase === 'stopped') return
          failure = err as Error
          phase = 'failed'
          settle?.reject(failure)
        }).finally(() => { r.settled = true })
      }
    },

    processes (): ProcessInfo[] {
      const out: ProcessInfo[] = [{ id: 'coordinator', role: 'coordinator', alive: membership !== undefined && phase !== 'stopped' }]
      for (const r of replicas.values()) out.push({ id: r.id, role: 'worker', group: 'replicas', alive: r.alive, ...(r.alive ? { rank: r.rank } : {}) })
      return out
    },

    async signal (id: string, signal: ProcessSignal) {
      if (signal !== 'SIGKILL' && signal !== 'SIGTERM') throw new InvalidParametersError(`The noloco driver delivers SIGKILL and SIGTERM only, not ${signal}`)
      const r = replicas.get(id)
      if (r === undefined) throw new InvalidParametersError(`No replica ${id} (the membership service cannot be killed)`)
      await kill(r)
    },

    async inject (id: string, fault: InProcessFault): Promise<InjectionHandle> {
      if (fault.kind !== 'network' && fault.kind !== 'partition') throw new InvalidParametersError(`The noloco driver cannot inject ${fault.kind}`)
      const net = transport as ChaosTransport
      if (id === '*' || fault.kind === 'partition') return createChaosAgent({ id: 'job' }, { log, transport: net }).apply(fault)
      if (!replicas.has(id)) throw new InvalidParametersError(`No replica ${id}`)
      return createChaosAgent({ id }, { log, transport: net }).apply(fault)
    },

    async spawn () {
      throw new InvalidParametersError('The noloco driver does not start replicas on request')
    },

    status () {
      return {
        phase,
        committed,
        epoch: membership?.version ?? 0,
        members: survivors().map((r) => r.id),
        ...(lastLoss === undefined ? {} : { loss: lastLoss })
      }
    },

    onCommit: commits.on,

    recoveries: () => [...recoveries],

    async finished (options: AbortOptions = {}): Promise<JobOutcome> {
      if (spec === undefined) throw new StepAbortedError('Job not started')
      await raceSignal(done, options.signal)
      const alive = survivors()
      await Promise.all(alive.map(async (r) => await r.loop))
      return {
        committed,
        epoch: membership?.version ?? 0,
        checksums: alive.map((r) => crc32c(bytesOf(r.weights))),
        ...(lastLoss === undefined ? {} : { loss: lastLoss })
      }
    },

    async stop () {
      if (phase === 'stopped') return
      phase = 'stopped'
      settle?.reject(new StepAbortedError('Driver stopped'))
      transport?.clear()
      for (const r of replicas.values()) {
        r.alive = false
        await r.endpoint.close({ lingerMs: 0 })
        await r.client.stop()
        await r.outer.stop()
        await r.loop
      }
      for (const off of unsubscribes) off()
      unsubscribes.length = 0
      await membership?.stop()
      await coordinator?.close({ lingerMs: 0 })
    },

    async leaks () {
      return [...replicas.values()].filter((r) => !r.settled).map((r) => r.id)
    }
  }
  return driver
}
