/**
 * Network faults as a {@link Transport} decorator: every endpoint opened through
 * {@link chaosTransport} passes its outbound messages (and the replies to its requests) through the
 * active rules: delay and jitter, drop, duplicate, reorder, partition, bandwidth cap, bit flips in
 * tensor frames, and freeze (traffic held until released, the network picture of SIGSTOP).
 *
 * Each decision is drawn from a stream keyed by `(seed, 'from->to', n)` where `n` counts the
 * messages of that link, so the same traffic meets the same faults in every run with the same seed.
 * Every injected fault is appended to the {@link ChaosLog}.
 *
 * Where faults are caught: size and framing are checked by the receiving endpoint (`checkFrames`),
 * but the wire format has no payload checksum, so a flipped bit inside a tensor frame reaches the
 * handler. The elastic core catches it where it matters: heal chunks carry CRC-32C (re-fetched from
 * another peer), and the two-phase commit votes on the CRC-32C of the aggregate, so a corrupted
 * all-gather slice (`agg`) makes the votes differ and the step is retried. A corrupted `grad` slice
 * is aggregated by its shard owner and sent identically to everyone: only a robust aggregator limits it.
 *
 * @module
 */
import {
  ClosedError, InvalidParametersError, TimeoutError, bytesOf, componentLogger, raceSignal, systemClock,
  type AbortOptions, type Clock, type Endpoint, type EndpointInit, type Envelope, type Logger, type NamedTensor,
  type OutboundMessage, type RequestOptions, type TimerHandle, type Transport
} from '@phalanx/core'
import { createChaosLog, type ChaosLog } from './event-log.js'
import { createChaosRng, type ChaosRng } from './rng.js'

/** Peer ids to match: an id, a glob with `*` (`worker-*`), or a list of them. */
export type PeerMatch = string | readonly string[]

/** What a rule does to the messages it matches. Probabilities are per message, in [0, 1]. */
export interface LinkFaults {
  /** Added latency, ms. @default 0 */
  delayMs?: number
  /** Extra uniform latency in [0, jitterMs), ms (per-link order is kept). @default 0 */
  jitterMs?: number
  /** Probability a message is lost. @default 0 */
  drop?: number
  /** Probability a message is delivered twice. @default 0 */
  duplicate?: number
  /** Probability a message is held back by {@link reorderMs}, letting later ones overtake it. @default 0 */
  reorder?: number
  /** How long a reordered message is held, ms. @default 20 */
  reorderMs?: number
  /** Probability a message carrying tensors has bits flipped in a copy of one tensor. @default 0 */
  corrupt?: number
  /** Bits flipped in a corrupted message. @default 1 */
  corruptBits?: number
  /** Token-bucket cap on tensor bytes per second of the link; absent = unlimited. */
  bandwidthBytesPerSec?: number
  /** Bucket size of the cap, bytes. @default 65536 */
  burstBytes?: number
}

/** A fault rule over the links it matches. */
export interface NetworkRule extends LinkFaults {
  /** Name in the event log. @default `rule-<n>` */
  id?: string
  /** Senders. @default every peer */
  from?: PeerMatch
  /** Receivers. @default every peer */
  to?: PeerMatch
  /** Message types (`grad`, `heartbeat`, ...). @default every type */
  types?: readonly string[]
  /** Active from this many ms after the transport was created. @default 0 */
  startMs?: number
  /** Inactive from this many ms after the transport was created. @default never */
  endMs?: number
}

/** Initial faults of a {@link chaosTransport}. */
export interface ChaosNetworkPlan {
  /** Seed of every decision. */
  seed: number
  /** Rules active from the start (more can be added with {@link ChaosTransport.addRule}). */
  rules?: readonly NetworkRule[]
  /** Partitions active from the start: peers of different groups cannot talk. */
  partitions?: ReadonlyArray<readonly PeerMatch[]>
  /**
   * Reply deadline used for a dropped request when the endpoint and the call set none.
   * @default 5000
   */
  requestTimeoutMs?: number
}

/** Collaborators of {@link chaosTransport}. */
export interface ChaosComponents {
  /** Where injected faults are appended. @default a new log */
  log?: ChaosLog
  /** Drives delays and the deadlines of dropped requests. @default systemClock() */
  clock?: Clock
  /** @default silent */
  logger?: Logger
}

/** A {@link Transport} with network faults that can be changed while it runs. */
export interface ChaosTransport extends Transport {
  /** The event log faults are appended to. */
  readonly log: ChaosLog
  /** Activates a rule; returns the function that removes it. */
  addRule(rule: NetworkRule): () => void
  /** Splits the network: peers matching different groups cannot talk. Returns the function that heals it. */
  partition(groups: readonly PeerMatch[], options?: { id?: string }): () => void
  /**
   * Holds every message from and to the matching endpoints (no loss, no delivery) until the
   * returned function is called, as a stopped process would. Inbound handlers wait as well.
   */
  freeze(peers: PeerMatch): () => void
  /** Removes every rule, partition and freeze (held traffic is released). */
  clear(): void
}

function matcher (m: PeerMatch | undefined): (id: string) => boolean {
  if (m === undefined) return () => true
  const patterns = (typeof m === 'string' ? [m] : m).map((p) => {
    if (!p.includes('*')) return (id: string) => id === p
    const re = new RegExp(`^${p.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`)
    return (id: string) => re.test(id)
  })
  return (id) => patterns.some((p) => p(id))
}

interface CompiledRule {
  id: string
  rule: NetworkRule
  from: (id: string) => boolean
  to: (id: string) => boolean
  types: Set<string> | undefined
}

interface CompiledPartition {
  id: string
  groups: Array<(id: string) => boolean>
}

interface Freeze {
  match: (id: string) => boolean
  released: Promise<void>
  release: () => void
}

function checkProbability (name: string, p: number | undefined): void {
  if (p !== undefined && !(p >= 0 && p <= 1)) throw new InvalidParametersError(`${name} must be a probability in [0, 1], got ${p}`)
}

function checkRule (rule: NetworkRule): void {
  for (const k of ['drop', 'duplicate', 'reorder', 'corrupt'] as const) checkProbability(k, rule[k])
  for (const k of ['delayMs', 'jitterMs', 'reorderMs', 'startMs', 'endMs'] as const) {
    const v = rule[k]
    if (v !== undefined && !(Number.isFinite(v) && v >= 0)) throw new InvalidParametersError(`${k} must be a non-negative number, got ${v}`)
  }
  if (rule.bandwidthBytesPerSec !== undefined && !(rule.bandwidthBytesPerSec > 0)) throw new InvalidParametersError('bandwidthBytesPerSec must be positive')
  if (rule.corruptBits !== undefined && !(Number.isInteger(rule.corruptBits) && rule.corruptBits >= 1)) throw new InvalidParametersError('corruptBits must be a positive integer')
}

/** Faults of all rules matching one message, combined: delays add, probabilities combine as independent events, caps take the lowest. */
interface Combined {
  rules: string[]
  delayMs: number
  jitterMs: number
  drop: number
  duplicate: number
  reorder: number
  reorderMs: number
  corrupt: number
  corruptBits: number
  bandwidth: number | undefined
  burst: number
}

function combine (rules: readonly CompiledRule[]): Combined {
  const c: Combined = { rules: [], delayMs: 0, jitterMs: 0, drop: 0, duplicate: 0, reorder: 0, reorderMs: 0, corrupt: 0, corruptBits: 1, bandwidth: undefined, burst: Infinity }
  const or = (a: number, b: number | undefined): number => 1 - (1 - a) * (1 - (b ?? 0))
  for (const { id, rule: r } of rules) {
    c.rules.push(id)
    c.delayMs += r.delayMs ?? 0
    c.jitterMs += r.jitterMs ?? 0
    c.drop = or(c.drop, r.drop)
    c.duplicate = or(c.duplicate, r.duplicate)
    c.reorder = or(c.reorder, r.reorder)
    c.reorderMs = Math.max(c.reorderMs, r.reorderMs ?? 20)
    c.corrupt = or(c.corrupt, r.corrupt)
    c.corruptBits = Math.max(c.corruptBits, r.corruptBits ?? 1)
    if (r.bandwidthBytesPerSec !== undefined) {
      c.bandwidth = Math.min(c.bandwidth ?? Infinity, r.bandwidthBytesPerSec)
      c.burst = Math.min(c.burst, r.burstBytes ?? 65536)
    }
  }
  return c
}

/** Flips `bits` random bits of one random tensor, in a copy; returns the new tensors and what was flipped. */
function corruptTensors (tensors: readonly NamedTensor[], bits: number, rng: ChaosRng): { tensors: NamedTensor[], tensor: string, positions: number[] } | undefined {
  const candidates = tensors.map((t, i) => ({ t, i })).filter(({ t }) => t.data.length > 0)
  if (candidates.length === 0) return undefined
  const pick = candidates[rng.int(candidates.length)] as { t: NamedTensor, i: number }
  const copy = pick.t.data.slice()
  const bytes = bytesOf(copy)
  const positions: number[] = []
  for (let k = 0; k < bits; k++) {
    const bit = rng.int(bytes.byteLength * 8)
    bytes[bit >>> 3] = (bytes[bit >>> 3] as number) ^ (1 << (bit & 7))
    positions.push(bit)
  }
  const out = tensors.slice()
  out[pick.i] = { name: pick.t.name, shape: pick.t.shape, dtype: pick.t.dtype, data: copy }
  return { tensors: out, tensor: pick.t.name, positions }
}

function tensorBytes (tensors: readonly NamedTensor[] | undefined): number {
  let n = 0
  for (const t of tensors ?? []) n += t.data.byteLength
  return n
}

interface QueueItem {
  at: number
  run: () => void
}

interface Link {
  to: string
  seq: number
  queue: QueueItem[]
  timer: TimerHandle | undefined
  tokens: number
  refilledAt: number
}

/**
 * Wraps a transport with network faults.
 *
 * @example
 * ```ts
 * const net = chaosTransport(memoryTransport({ network }), { seed: 7, rules: [{ from: 'worker-*', delayMs: 5, jitterMs: 5, drop: 0.01 }] })
 * const heal = net.partition([['coordinator', 'worker-1'], ['worker-2']])
 * // ... later
 * heal()
 * logger.info(net.log.counts(), 'network faults') // { 'network:delay': 812, 'network:drop': 9, 'network:partition': 31 }
 * ```
 */
export function chaosTransport (inner: Transport, plan: ChaosNetworkPlan, components: ChaosComponents = {}): ChaosTransport {
  if (!Number.isInteger(plan.seed)) throw new InvalidParametersError(`seed must be an integer, got ${plan.seed}`)
  const clock = components.clock ?? systemClock()
  const log = components.log ?? createChaosLog({ now: () => clock.now() })
  const logger = componentLogger(components.logger, 'chaos-transport')
  const createdAt = clock.now()
  const rules = new Map<number, CompiledRule>()
  const partitions = new Map<number, CompiledPartition>()
  const freezes = new Set<Freeze>()
  let nextId = 0

  const addRule = (rule: NetworkRule): (() => void) => {
    checkRule(rule)
    const key = nextId++
    rules.set(key, {
      id: rule.id ?? `rule-${key}`,
      rule,
      from: matcher(rule.from),
      to: matcher(rule.to),
      types: rule.types === undefined ? undefined : new Set(rule.types)
    })
    return () => { rules.delete(key) }
  }

  const addPartition = (groups: readonly PeerMatch[], id?: string): (() => void) => {
    if (groups.length < 2) throw new InvalidParametersError('A partition needs at least two groups')
    const key = nextId++
    partitions.set(key, { id: id ?? `partition-${key}`, groups: groups.map(matcher) })
    return () => { partitions.delete(key) }
  }

  for (const r of plan.rules ?? []) addRule(r)
  for (const g of plan.partitions ?? []) addPartition(g)

  const activeRules = (from: string, to: string, type: string): CompiledRule[] => {
    const t = clock.now() - createdAt
    const out: CompiledRule[] = []
    for (const r of rules.values()) {
      if (r.rule.startMs !== undefined && t < r.rule.startMs) continue
      if (r.rule.endMs !== undefined && t >= r.rule.endMs) continue
      if (r.types !== undefined && !r.types.has(type)) continue
      if (r.from(from) && r.to(to)) out.push(r)
    }
    return out
  }

  const partitionOf = (a: string, b: string): string | undefined => {
    for (const p of partitions.values()) {
      const ga = p.groups.findIndex((g) => g(a))
      const gb = p.groups.findIndex((g) => g(b))
      if (ga >= 0 && gb >= 0 && ga !== gb) return p.id
    }
    return undefined
  }

  const frozen = (id: string): Freeze | undefined => {
    for (const f of freezes) if (f.match(id)) return f
    return undefined
  }

  /** Resolves once neither endpoint is frozen (a freeze added meanwhile is waited for too). */
  const thawed = async (a: string, b: string): Promise<void> => {
    for (let f = frozen(a) ?? frozen(b); f !== undefined; f = frozen(a) ?? frozen(b)) await f.released
  }

  const wrap = (ep: Endpoint, defaultTimeoutMs: number): Endpoint => {
    const links = new Map<string, Link>()
    const timers = new Set<TimerHandle>()
    const closers = new Set<(err: Error) => void>()
    let closed = false

    const linkTo = (to: string): Link => {
      let l = links.get(to)
      if (l === undefined) {
        l = { to, seq: 0, queue: [], timer: undefined, tokens: 0, refilledAt: clock.now() }
        links.set(to, l)
      }
      return l
    }

    const pump = (l: Link): void => {
      l.timer?.cancel()
      l.timer = undefined
      const now = clock.now()
      while (l.queue.length > 0 && (l.queue[0] as QueueItem).at <= now) (l.queue.shift() as QueueItem).run()
      const head = l.queue[0]
      if (head !== undefined) l.timer = clock.setTimeout(() => { pump(l) }, head.at - now)
    }

    const after = (ms: number, run: () => void): void => {
      const t = clock.setTimeout(() => { timers.delete(t); if (!closed) run() }, ms)
      timers.add(t)
    }

    /** Schedules `run` on the link: in order after the link's queue, or `holdMs` later out of order. */
    const schedule = (l: Link, delayMs: number, holdMs: number | undefined, run: () => void): void => {
      const now = clock.now()
      if (holdMs !== undefined) { after(delayMs + holdMs, run); return }
      const tail = l.queue.length > 0 ? (l.queue[l.queue.length - 1] as QueueItem).at : now
      const at = Math.max(now + delayMs, tail)
      if (at <= now && l.queue.length === 0) { run(); return }
      l.queue.push({ at, run })
      if (l.queue.length === 1) pump(l)
    }

    /** Bandwidth: returns the extra wait for `bytes` on the link under cap `rate` (token bucket). */
    const throttle = (l: Link, bytes: number, rate: number, burst: number): number => {
      const now = clock.now()
      l.tokens = Math.min(burst, l.tokens + (now - l.refilledAt) * rate / 1000)
      l.refilledAt = now
      l.tokens -= bytes
      return l.tokens >= 0 ? 0 : (-l.tokens / rate) * 1000
    }

    interface Decision {
      drop: string | undefined
      delayMs: number
      holdMs: number | undefined
      duplicate: boolean
      message: OutboundMessage
    }

    /** Draws the fate of one message of link `from -> to` and logs every fault. */
    const decide = (from: string, to: string, message: OutboundMessage, direction: 'send' | 'request' | 'reply'): Decision => {
      const l = linkTo(to)
      const seq = l.seq++
      const link = `${from}->${to}`
      const base = { type: message.type, seq, direction }
      const step = message.step
      const event = (kind: string, details: Record<string, string | number | boolean | string[] | number[]> = {}): void => {
        log.append({ class: 'network', kind, target: link, ...(step === undefined ? {} : { step }), details: { ...base, ...details } })
      }
      const partition = partitionOf(from, to)
      if (partition !== undefined) {
        event('partition', { partition })
        return { drop: 'partition', delayMs: 0, holdMs: undefined, duplicate: false, message }
      }
      const matched = activeRules(from, to, message.type)
      if (matched.length === 0) return { drop: undefined, delayMs: 0, holdMs: undefined, duplicate: false, message }
      const c = combine(matched)
      const rng = createChaosRng(plan.seed, link, seq)
      // Fixed draw order: a decision never depends on which other faults are configured.
      const uDrop = rng.next(); const uDup = rng.next(); const uReorder = rng.next(); const uCorrupt = rng.next(); const uJitter = rng.next()
      if (uDrop < c.drop) {
        event('drop', { rules: c.rules })
        return { drop: 'drop', delayMs: 0, holdMs: undefined, duplicate: false, message }
      }
      let out = message
      if (uCorrupt < c.corrupt && message.tensors !== undefined) {
        const corrupted = corruptTensors(message.tensors, c.corruptBits, rng)
        if (corrupted !== undefined) {
          out = { ...message, tensors: corrupted.tensors }
          event('corrupt', { tensor: corrupted.tensor, bits: corrupted.positions })
        }
      }
      let delayMs = c.delayMs + uJitter * c.jitterMs
      if (c.bandwidth !== undefined) {
        const wait = throttle(l, tensorBytes(message.tensors) + 64, c.bandwidth, c.burst)
        if (wait > 0) event('throttle', { waitMs: Math.round(wait * 1000) / 1000 })
        delayMs += wait
      }
      if (delayMs > 0) event('delay', { ms: Math.round(delayMs * 1000) / 1000 })
      const reorder = uReorder < c.reorder
      if (reorder) event('reorder', { holdMs: c.reorderMs })
      const duplicate = uDup < c.duplicate
      if (duplicate) event('duplicate')
      return { drop: undefined, delayMs, holdMs: reorder ? c.reorderMs : undefined, duplicate, message: out }
    }

    /** Waits until `deadline` (a lost message or reply), then rejects with `TimeoutError`. */
    const lost = async (to: string, type: string, deadline: number, timeoutMs: number, signal: AbortSignal | undefined): Promise<never> => {
      let t: TimerHandle | undefined
      let closer: ((err: Error) => void) | undefined
      try {
        await raceSignal(new Promise<void>((resolve, reject) => {
          t = clock.setTimeout(resolve, Math.max(0, deadline - clock.now()))
          closer = reject
          closers.add(reject)
        }), signal)
      } finally {
        t?.cancel()
        if (closer !== undefined) closers.delete(closer)
      }
      throw new TimeoutError(`No reply from "${to}" to "${type}" within ${timeoutMs} ms`, { details: { peer: to, type, timeoutMs } })
    }

    const handlers = new Map<string, () => void>()

    const chaos: Endpoint = {
      id: ep.id,
      get address () { return ep.address },
      get epoch () { return ep.epoch },
      set epoch (v: number) { ep.epoch = v },
      connect: (peer, address) => { ep.connect(peer, address) },
      disconnect: (peer) => { ep.disconnect(peer) },
      on: (event, listener) => ep.on(event, listener),
      stats: () => ep.stats(),

      async send (to, message, options: AbortOptions = {}) {
        if (closed) throw new ClosedError(`Endpoint ${ep.id} is closed`)
        if (frozen(ep.id) !== undefined || frozen(to) !== undefined) {
          log.append({ class: 'network', kind: 'hold', target: `${ep.id}->${to}`, ...(message.step === undefined ? {} : { step: message.step }), details: { type: message.type } })
          await raceSignal(thawed(ep.id, to), options.signal)
          if (closed) throw new ClosedError(`Endpoint ${ep.id} is closed`)
        }
        const d = decide(ep.id, to, message, 'send')
        if (d.drop !== undefined) return
        const l = linkTo(to)
        const deliver = (): void => {
          ep.send(to, d.message).catch((err: unknown) => { logger.debug({ err, to, type: message.type }, 'delayed send failed') })
        }
        if (d.delayMs === 0 && d.holdMs === undefined && l.queue.length === 0) {
          // Undelayed: the caller sees the real outcome (UnknownPeerError, QueueFullError, ...).
          await ep.send(to, d.message, options)
          if (d.duplicate) deliver()
          return
        }
        schedule(l, d.delayMs, d.holdMs, () => { deliver(); if (d.duplicate) deliver() })
      },

      async request (to, message, options: RequestOptions = {}) {
        if (closed) throw new ClosedError(`Endpoint ${ep.id} is closed`)
        const timeoutMs = options.timeoutMs ?? defaultTimeoutMs
        const deadline = clock.now() + timeoutMs
        if (frozen(ep.id) !== undefined || frozen(to) !== undefined) {
          log.append({ class: 'network', kind: 'hold', target: `${ep.id}->${to}`, ...(message.step === undefined ? {} : { step: message.step }), details: { type: message.type } })
          const stop = new AbortController()
          const expired = lost(to, message.type, deadline, timeoutMs, stop.signal)
          expired.catch(() => {})
          try {
            await raceSignal(Promise.race([thawed(ep.id, to), expired]), options.signal)
          } finally {
            stop.abort()
          }
        }
        const d = decide(ep.id, to, message, 'request')
        if (d.drop !== undefined) return await lost(to, message.type, deadline, timeoutMs, options.signal)
        const l = linkTo(to)
        let rejectDispatched: ((err: Error) => void) | undefined
        const dispatched = new Promise<Envelope>((resolve, reject) => {
          rejectDispatched = reject
          const run = (): void => {
            const remaining = Math.max(1, deadline - clock.now())
            ep.request(to, d.message, { ...options, timeoutMs: remaining }).then(resolve, reject)
            if (d.duplicate) ep.request(to, d.message, { timeoutMs: remaining }).catch(() => {})
          }
          if (d.delayMs === 0 && d.holdMs === undefined && l.queue.length === 0) run()
          else schedule(l, d.delayMs, d.holdMs, run)
          closers.add(reject)
        })
        dispatched.catch(() => {})
        let reply: Envelope
        try {
          reply = await raceSignal(dispatched, options.signal)
        } finally {
          if (rejectDispatched !== undefined) closers.delete(rejectDispatched)
        }
        // The reply travels the reverse link: it meets that link's faults.
        const back = decide(to, ep.id, { type: reply.header.type, step: reply.header.step, epoch: reply.header.epoch, tensors: [] }, 'reply')
        if (back.drop !== undefined) return await lost(to, message.type, deadline, timeoutMs, options.signal)
        if (back.delayMs > 0 || back.holdMs !== undefined) {
          await raceSignal(clock.sleep(back.delayMs + (back.holdMs ?? 0)), options.signal)
        }
        const rules = activeRules(to, ep.id, reply.header.type)
        if (rules.length > 0 && reply.frames.length > 0) {
          const c = combine(rules)
          const rng = createChaosRng(plan.seed, `${to}->${ep.id}`, 'reply', reply.header.seq)
          if (rng.next() < c.corrupt) {
            const frames = reply.frames.map((f) => f.slice())
            const candidates = frames.filter((f) => f.byteLength > 0)
            const positions: number[] = []
            if (candidates.length > 0) {
              const f = candidates[rng.int(candidates.length)] as Uint8Array
              for (let k = 0; k < c.corruptBits; k++) {
                const bit = rng.int(f.byteLength * 8)
                f[bit >>> 3] = (f[bit >>> 3] as number) ^ (1 << (bit & 7))
                positions.push(bit)
              }
              log.append({ class: 'network', kind: 'corrupt', target: `${to}->${ep.id}`, step: reply.header.step, details: { type: reply.header.type, seq: reply.header.seq, direction: 'reply', bits: positions } })
              return { header: reply.header, frames, peer: reply.peer }
            }
          }
        }
        return reply
      },

      handle (type, handler) {
        const off = ep.handle(type, async (envelope, opts) => {
          // A frozen endpoint neither sends nor runs handlers; the message waits like in a socket buffer.
          if (frozen(ep.id) !== undefined) await thawed(ep.id, ep.id)
          return await handler(envelope, opts)
        })
        handlers.set(type, off)
        return () => { handlers.delete(type); off() }
      },

      async close (options) {
        if (!closed) {
          closed = true
          for (const l of links.values()) { l.timer?.cancel(); l.queue.length = 0 }
          for (const t of timers) t.cancel()
          timers.clear()
          const err = new ClosedError(`Endpoint ${ep.id} is closed`)
          for (const c of closers) c(err)
          closers.clear()
        }
        await ep.close(options)
      },

      async [Symbol.asyncDispose] () { await chaos.close() }
    }
    return chaos
  }

  const transport: ChaosTransport = {
    name: `chaos(${inner.name})`,
    log,
    async open (init: EndpointInit, options?: AbortOptions) {
      const ep = await inner.open(init, options)
      return wrap(ep, init.requestTimeoutMs ?? plan.requestTimeoutMs ?? 5000)
    },
    addRule,
    partition: (groups, options = {}) => addPartition(groups, options.id),
    freeze (peers) {
      let release!: () => void
      const released = new Promise<void>((resolve) => { release = resolve })
      const f: Freeze = { match: matcher(peers), released, release: () => { freezes.delete(f); release() } }
      freezes.add(f)
      log.append({ class: 'network', kind: 'freeze', target: typeof peers === 'string' ? peers : peers.join(',') })
      return f.release
    },
    clear () {
      rules.clear()
      partitions.clear()
      for (const f of [...freezes]) f.release()
    }
  }
  return transport
}
