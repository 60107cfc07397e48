/**
 * A {@link JobDriver} for `job.kind: erasure` scenarios: N hosts in this process, one erasure group,
 * each with its own endpoint on the memory transport wrapped by the chaos network decorator. Every
 * step each host updates its state (`stateFloats` floats, a deterministic function of the host, the
 * step and its previous state) and protects it with an erasure-coded in-memory snapshot through the
 * real two-phase exchange (`createErasureMember` of `@phalanx/checkpoint/erasure`). A step is
 * committed once every host's snapshot of it committed; an attempt that a loss interrupted is
 * retried under a new snapshot version (versions are strictly increasing).
 *
 * Faults it supports: `kill` (a host dies: its endpoint closes without a goodbye, its exchange
 * member stops and its state is dropped), `network` and `partition` (rules on the hosts' links).
 * Losses seen within `detectMs` of each other are rebuilt together before the next attempt with the
 * real recovery code (`createErasureL1Source` on a fresh rebuilder endpoint); the replacement then
 * reopens the lost host's endpoint id and rejoins the group from the rebuilt state. With more than m
 * hosts of the group lost the rebuild throws `InsufficientShardsError` ("... restore from L2") and
 * the job fails with it: the L2 fallback is the caller's. `job.recovery: false` never rebuilds: the
 * first loss fails the job.
 *
 * Process ids: `host-<i>` (role `worker`, so `random-worker` and `{ rank }` target them; rank i,
 * group `rack-<i mod racks>`). Recoveries are timed from the first kill to the
 * first step committed after the rebuild. The outcome has one checksum: CRC-32C over every host's
 * final state in host order (lost hosts as rebuilt), so `bitIdentical` compares the whole group
 * with the fault-free baseline.
 *
 * @module
 */
import {
  InvalidParametersError, StepAbortedError, bytesOf, crc32c, createStateDict, raceSignal, systemClock,
  type AbortOptions, type Clock, type Endpoint, type Logger
} from '@phalanx/core'
import {
  chaosTransport, createChaosAgent, createChaosLog, erasureJobConfigSchema, type ChaosLog, type ChaosTransport, type DriverRecovery,
  type ErasureJobConfig, type FaultKind, type InjectionHandle, type InProcessFault, type JobDriver, type JobOutcome, type JobSpec,
  type ProcessInfo, type ProcessSignal
} from '@phalanx/chaos'
import {
  chooseScheme, createErasureL1Source, createErasureMember, decodeSnapshot, encodeSnapshot, type ErasureMember, type ExchangeGroup
} from '@phalanx/checkpoint/erasure'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { createCommitFeed, kindConfig, noise } from './chaos-kind-config.js'

/** `job.config` of an erasure scenario: the chaos scenario schema's type (defaults filled in). */
export type ErasureScenarioConfig = ErasureJobConfig

/** Tunables of {@link createErasureDriver}. */
export interface ErasureDriverInit {
  /** Seed of network fault decisions. @default 1 */
  seed?: number
  /** Shared log. @default a new one */
  log?: ChaosLog
}

/** Collaborators of {@link createErasureDriver}. */
export interface ErasureDriverComponents {
  /** Times detection and recovery, and the detection window. @default systemClock() */
  clock?: Clock
  /** Logger of the exchange and the rebuild (the L1 fallback error is logged here). @default silent */
  logger?: Logger
}

interface Host {
  readonly id: string
  readonly index: number
  endpoint: Endpoint | undefined
  member: ErasureMember | undefined
  /** The host's state after `round` steps; undefined once the host is lost. */
  state: Float32Array | undefined
  round: number
  alive: boolean
}

const SUPPORTED: ReadonlySet<FaultKind> = new Set<FaultKind>(['kill', 'network', 'partition'])
/** Consecutive attempts that may fail to commit before the job gives up. */
const MAX_FAILED_ATTEMPTS = 20

/** The state of host `host` after step `round` (1-based) from its state before it: a decaying walk. */
function advanceState (prev: Float32Array, host: number, round: number, seed: number): Float32Array {
  const next = new Float32Array(prev.length)
  const salt = (seed * 1_000_003 + round * 64 + host) | 0
  for (let i = 0; i < prev.length; i++) next[i] = (prev[i] as number) * 0.999 + noise(i, salt) * 0.01
  return next
}

function encodeHost (state: Float32Array, round: number, host: number): Uint8Array {
  return encodeSnapshot(createStateDict([{ name: 'w', shape: [state.length], dtype: 'float32', data: state }], { step: round, epoch: 0, host }))
}

/** Creates the driver (one job per driver). */
export function createErasureDriver (init: ErasureDriverInit = {}, components: ErasureDriverComponents = {}): JobDriver {
  const clock = components.clock ?? systemClock()
  const log = init.log ?? createChaosLog()
  let spec: JobSpec | undefined
  let cfg: ErasureScenarioConfig | undefined
  let group: ExchangeGroup | undefined
  let transport: ChaosTransport | undefined
  const hosts: Host[] = []
  let phase: 'starting' | 'running' | 'done' | 'failed' | 'stopped' = 'starting'
  let committed = 0
  let attempt = 0
  let rebuilds = 0
  const commits = createCommitFeed()
  const recoveries: DriverRecovery[] = []
  /** Kill time of each host lost and not yet rebuilt. */
  const lost = new Map<string, number>()
  /** Rebuilds whose first commit after them is still to come. */
  const pending: Array<{ peers: string[], killedAt: number, detectedAt: number, rebuiltAt: number, step: number }> = []
  let loop: Promise<void> | undefined
  let loopSettled = true
  const stopping = new AbortController()
  let settle: { resolve: () => void, reject: (err: Error) => void } | undefined
  const done = new Promise<void>((resolve, reject) => { settle = { resolve, reject } })
  done.catch(() => {})

  const fail = (err: Error): void => {
    if (phase !== 'running') return
    phase = 'failed'
    settle?.reject(err)
  }

  const joinHost = async (h: Host, options: AbortOptions): Promise<void> => {
    const c = cfg as ErasureScenarioConfig
    const ep = await (transport as ChaosTransport).open({ id: h.id, job: 'erasure', requestTimeoutMs: c.prepareTimeoutMs }, options)
    h.endpoint = ep
    for (const o of hosts) {
      if (o === h) continue
      ep.connect(o.id, o.id)
      // A replacement listens at the lost host's address; the survivors' routes are refreshed.
      o.endpoint?.connect(h.id, ep.address)
    }
    const member = createErasureMember({ group: group as ExchangeGroup, self: h.id, prepareTimeoutMs: c.prepareTimeoutMs, chunkBytes: c.chunkBytes }, { endpoint: ep, clock, ...(components.logger === undefined ? {} : { logger: components.logger }) })
    h.member = member
    await member.start(options)
    h.alive = true
  }

  const kill = async (h: Host): Promise<void> => {
    if (!h.alive) return
    h.alive = false
    h.state = undefined
    lost.set(h.id, clock.now())
    // Abrupt: the endpoint closes first, so peers see the host vanish mid-exchange.
    await h.endpoint?.close({ lingerMs: 0 })
    await h.member?.stop()
    h.endpoint = undefined
    h.member = undefined
  }

  /** Rebuilds every lost host from the survivors' pieces and lets its replacement rejoin. */
  const rebuild = async (signal: AbortSignal): Promise<void> => {
    const c = cfg as ErasureScenarioConfig
    const detectedAt = clock.now()
    const lostIds = [...lost.keys()].sort((a, b) => Number(a.slice(5)) - Number(b.slice(5)))
    const killedAt = Math.min(...lostIds.map((id) => lost.get(id) as number))
    const rebuilder = await (transport as ChaosTransport).open({ id: `rebuilder-${rebuilds++}`, job: 'erasure', requestTimeoutMs: c.prepareTimeoutMs }, { signal })
    const images = new Map<string, { state: Float32Array, round: number }>()
    try {
      for (const h of hosts) rebuilder.connect(h.id, h.id)
      for (const id of lostIds) {
        const l1 = createErasureL1Source({ group: group as ExchangeGroup, owner: id, lost: lostIds, probeTimeoutMs: c.probeTimeoutMs }, { endpoint: rebuilder, clock, ...(components.logger === undefined ? {} : { logger: components.logger }) })
        const report = await l1.recover({ signal })
        const state = decodeSnapshot(report.bytes)
        const w = state.tensors[0]
        if (w === undefined || w.data.length !== c.stateFloats) throw new StepAbortedError(`Rebuilt snapshot of ${id} has the wrong shape`)
        images.set(id, { state: Float32Array.from(w.data), round: state.meta.step })
      }
    } finally {
      await rebuilder.close({ lingerMs: 0 })
    }
    for (const id of lostIds) {
      const h = hosts.find((x) => x.id === id) as Host
      const image = images.get(id) as { state: Float32Array, round: number }
      // The newest committed version is the last committed step, or the next one when its commit
      // reached some members before the loss; anything older would mean committed state was lost.
      if (image.round < committed || image.round > committed + 1) throw new StepAbortedError(`Rebuilt snapshot of ${id} is of step ${image.round}, the job committed ${committed}`)
      await joinHost(h, { signal })
      h.state = image.state
      h.round = image.round
      lost.delete(id)
    }
    pending.push({ peers: lostIds, killedAt, detectedAt, rebuiltAt: clock.now(), step: committed })
  }

  const runLoop = async (job: JobSpec, signal: AbortSignal): Promise<void> => {
    let failed = 0
    while (committed < job.steps && phase === 'running') {
      // One macrotask: the scenario runner delivers the kills due at the step just committed.
      await new Promise<void>((resolve) => { setImmediate(resolve) })
      if (phase !== 'running') return
      if (lost.size > 0) {
        if (!job.recovery) throw new StepAbortedError(`Hosts lost (${[...lost.keys()].join(', ')}) and recovery is disabled: their state is gone`)
        // The failure detector's window: losses close together are rebuilt together.
        await clock.sleep((cfg as ErasureScenarioConfig).detectMs, { signal })
        await rebuild(signal)
      }
      const target = committed + 1
      const version = ++attempt
      const alive = hosts.filter((h) => h.alive)
      const candidates = alive.map((h) => h.round === target ? h.state as Float32Array : advanceState(h.state as Float32Array, h.index, target, job.seed))
      const outcomes = await Promise.allSettled(alive.map(async (h, i) => await (h.member as ErasureMember).snapshot(version, encodeHost(candidates[i] as Float32Array, target, h.index), { signal })))
      if (phase !== 'running') return
      const ok = lost.size === 0 && alive.every((h) => h.alive) && outcomes.every((o) => o.status === 'fulfilled' && o.value.committed)
      if (!ok) {
        if (++failed > MAX_FAILED_ATTEMPTS) throw new StepAbortedError(`Step ${target}: ${failed} snapshot attempts failed to commit`)
        continue
      }
      failed = 0
      alive.forEach((h, i) => { h.state = candidates[i]; h.round = target })
      const step = committed++
      const now = clock.now()
      for (const p of pending.splice(0)) {
        recoveries.push({ reason: 'hosts lost: rebuilt from erasure-coded in-memory snapshots', peers: p.peers, step: p.step, detectMs: p.detectedAt - p.killedAt, quorumMs: p.rebuiltAt - p.detectedAt, firstCommitMs: now - p.rebuiltAt, totalMs: now - p.killedAt })
      }
      commits.emit({ step, epoch: rebuilds })
    }
    if (committed >= job.steps && phase === 'running') {
      phase = 'done'
      settle?.resolve()
    }
  }

  const driver: JobDriver = {
    name: 'erasure',
    log,
    supports: (kind) => SUPPORTED.has(kind),

    async start (job, options: AbortOptions = {}) {
      if (spec !== undefined) throw new InvalidParametersError('This driver runs one job; create another for the next')
      spec = job
      const c = kindConfig(erasureJobConfigSchema, 'erasure', job)
      cfg = c
      const scheme = c.scheme ?? chooseScheme(c.hosts)
      if (scheme.k + scheme.m !== c.hosts || scheme.kind === 'none') throw new InvalidParametersError(`Scheme ${scheme.kind}(${scheme.k},${scheme.m}) does not fit ${c.hosts} hosts`)
      group = { members: Array.from({ length: c.hosts }, (_, i) => `host-${i}`), scheme }
      transport = chaosTransport(memoryTransport({ network: createMemoryNetwork() }), { seed: init.seed ?? 1 }, { log, clock })
      for (let i = 0; i < c.hosts; i++) {
        hosts.push({ id: `host-${i}`, index: i, endpoint: undefined, member: undefined, state: new Float32Array(c.stateFloats).map((_, k) => noise(k, job.seed * 31 + i)), round: 0, alive: false })
      }
      for (const h of hosts) await joinHost(h, options)
      phase = 'running'
      loopSettled = false
      loop = runLoop(job, stopping.signal).catch((err: unknown) => {
        if (phase === 'stopped') return
        fail(err as Error)
      }).finally(() => { loopSettled = true })
    },

    processes (): ProcessInfo[] {
      const racks = cfg?.racks ?? 1
      return hosts.map((h) => ({ id: h.id, role: 'worker' as const, group: `rack-${h.index % racks}`, alive: h.alive, ...(h.alive ? { rank: h.index } : {}) }))
    },

    async signal (id: string, signal: ProcessSignal) {
      if (signal !== 'SIGKILL' && signal !== 'SIGTERM') throw new InvalidParametersError(`The erasure driver delivers SIGKILL and SIGTERM only, not ${signal}`)
      const h = hosts.find((x) => x.id === id)
      if (h === undefined) throw new InvalidParametersError(`No host ${id}`)
      await kill(h)
    },

    async inject (id: string, fault: InProcessFault): Promise<InjectionHandle> {
      if (fault.kind !== 'network' && fault.kind !== 'partition') throw new InvalidParametersError(`The erasure driver cannot inject ${fault.kind}`)
      const net = transport as ChaosTransport
      if (id === '*' || fault.kind === 'partition') return createChaosAgent({ id: 'job' }, { log, transport: net }).apply(fault)
      if (!hosts.some((h) => h.id === id)) throw new InvalidParametersError(`No host ${id}`)
      return createChaosAgent({ id }, { log, transport: net }).apply(fault)
    },

    async spawn () {
      throw new InvalidParametersError('The erasure driver replaces lost hosts itself; it does not start hosts on request')
    },

    status () {
      return { phase, committed, epoch: rebuilds, members: hosts.filter((h) => h.alive).map((h) => h.id) }
    },

    onCommit: commits.on,

    recoveries: () => [...recoveries],

    async finished (options: AbortOptions = {}): Promise<JobOutcome> {
      if (spec === undefined) throw new StepAbortedError('Job not started')
      await raceSignal(done, options.signal)
      await loop
      const parts = hosts.map((h) => bytesOf(h.state as Float32Array))
      const all = new Uint8Array(parts.reduce((a, p) => a + p.byteLength, 0))
      let off = 0
      for (const p of parts) { all.set(p, off); off += p.byteLength }
      return { committed, epoch: rebuilds, checksums: [crc32c(all)] }
    },

    async stop () {
      if (phase === 'stopped') return
      phase = 'stopped'
      settle?.reject(new StepAbortedError('Driver stopped'))
      stopping.abort(new StepAbortedError('Driver stopped'))
      transport?.clear()
      for (const h of hosts) {
        h.alive = false
        await h.endpoint?.close({ lingerMs: 0 })
        await h.member?.stop()
      }
      await loop
    },

    async leaks () {
      return loopSettled ? [] : ['erasure-loop']
    }
  }
  return driver
}
