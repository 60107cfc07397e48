/**
 * The child-process half of `phalanx chaos run`: a coordinator or worker process started by the
 * chaos driver (environment variable {@link CHAOS_ENV}) opens its ZeroMQ endpoint through
 * `chaosTransport` and holds a `createChaosAgent` that applies the faults the driver sends over the
 * Node IPC channel:
 *
 * - `{ type: 'chaos', ref, fault }` → `agent.apply(fault)`, answered `{ type: 'chaos-ack', ref, ok }`
 *   (sent before a crash or stall takes effect, so the driver is never left waiting on a dead or
 *   frozen process);
 * - `{ type: 'chaos-revert', ref }` → the handle of `ref` is reverted, answered the same way.
 *
 * The child is also composed with a `skewedClock` (clock skew; the coordinator and worker run on
 * it), its gradients and labels pass through the agent's hooks (`byzantine`, `label-flip`; jobs
 * built on `runStepLoop`), and a worker that writes L2 checkpoints (`PHALANX_CHECKPOINT_DIR`) writes
 * them through `chaosStorage` (`disk`). A fault needing a part the process lacks (a disk fault on
 * a process without checkpoints) is refused by the agent with `InvalidParametersError`.
 *
 * @module
 */
import {
  componentLogger, systemClock,
  type Endpoint, type EndpointEvents, type EndpointInit, type EpochFence, type Logger, type PhalanxConfig, type Transport
} from '@phalanx/core'
import {
  chaosStorage, chaosTransport, createChaosAgent, skewedClock,
  type ChaosAgent, type ChaosStorage, type ChaosStorageTarget, type ChaosTransport, type GradientHook, type InjectionHandle, type InProcessFault, type LabelHook, type SkewedClock
} from '@phalanx/chaos'
import { openEndpoint } from './compose.js'

/** Environment variable that turns the chaos glue on in a child: JSON {@link ChildChaosSettings}. */
export const CHAOS_ENV = 'PHALANX_CHAOS'

/** What the driver tells a child through {@link CHAOS_ENV}. */
export interface ChildChaosSettings {
  /** Seed of the child's network fault decisions. */
  seed: number
  /**
   * False hides peer disconnects from the coordinator (the must-fail control: no failure detection).
   * @default true
   */
  recovery?: boolean
}

/** Control messages the driver sends a child. */
export type ChaosControlMessage =
  | { type: 'chaos', ref: number, fault: InProcessFault }
  | { type: 'chaos-revert', ref: number }

/** A child's answer to a {@link ChaosControlMessage}. */
export interface ChaosAckEvent {
  type: 'chaos-ack'
  ref: number
  ok: boolean
  error?: string
}

/** Tunables of {@link createChildChaos}. */
export interface ChildChaosInit extends ChildChaosSettings {
  /** This process's id (`coordinator`, `worker-2`). */
  id: string
}

/** Collaborators of {@link createChildChaos}. */
export interface ChildChaosComponents {
  /** @default silent */
  logger?: Logger
  /** Sends an answer to the driver. */
  send: (event: ChaosAckEvent) => void
  /** Subscribes to control messages; returns the unsubscribe function. */
  subscribe: (listener: (message: unknown) => void) => () => void
}

/** The chaos glue of one child process. */
export interface ChildChaos {
  readonly agent: ChaosAgent
  /** The chaos transport the endpoint was opened through (once {@link openEndpoint} ran). */
  readonly transport: ChaosTransport | undefined
  /** The process clock: the system clock until a `clock-skew` fault skews it. */
  readonly clock: SkewedClock
  /** Gradient hook of the training loop (identity until a `byzantine` fault). */
  readonly gradientHook: GradientHook
  /** Label hook of the training loop (identity until a `label-flip` fault). */
  readonly labelHook: LabelHook
  /** Wraps the process's checkpoint storage with `chaosStorage`, so `disk` faults reach its writes. */
  wrapStorage<S extends ChaosStorageTarget>(storage: S): ChaosStorage<S>
  /** Opens the process endpoint like `openEndpoint` of `compose.ts`, through `chaosTransport`. */
  openEndpoint(config: PhalanxConfig, init: { id: string, listen: string, logger: Logger, fence?: EpochFence }): Promise<Endpoint>
  /**
   * Coordinator settings the chaos run imposes: with recovery disabled, the hang detector is
   * switched off too (the job must stall on a lost worker, not recover through a hang suspicion).
   */
  readonly coordinatorOverrides: { hangFloorMs?: number }
  /** Stops listening for control messages. Idempotent. */
  dispose(): void
}

function isControl (m: unknown): m is ChaosControlMessage {
  if (typeof m !== 'object' || m === null) return false
  const c = m as { type?: unknown, ref?: unknown, fault?: unknown }
  if (!Number.isInteger(c.ref)) return false
  if (c.type === 'chaos-revert') return true
  return c.type === 'chaos' && typeof c.fault === 'object' && c.fault !== null && typeof (c.fault as { kind?: unknown }).kind === 'string'
}

/** Creates the chaos glue of a child process. */
export function createChildChaos (init: ChildChaosInit, components: ChildChaosComponents): ChildChaos {
  const logger = componentLogger(components.logger, 'chaos-child')
  let transport: ChaosTransport | undefined
  let storage: ChaosStorage<ChaosStorageTarget> | undefined
  const clock = skewedClock(systemClock(), {}, { target: init.id })
  const handles = new Map<number, InjectionHandle>()
  // Re-created whenever a part is attached (before the job starts, so no applied fault is lost).
  const agentOf = (): ChaosAgent => createChaosAgent({ id: init.id }, {
    ...(transport === undefined ? {} : { transport, log: transport.log }),
    ...(storage === undefined ? {} : { storage }),
    clock,
    logger: components.logger,
    // Deferred so the acknowledgement leaves before the event loop stops.
    stall: (ms) => {
      setTimeout(() => {
        const end = performance.now() + ms
        // Deliberately blocking: this is the fault (a long GC pause, a synchronous hot loop).
        while (performance.now() < end) { /* spin */ }
      }, 5)
    },
    crash: (message) => { setTimeout(() => { throw new Error(message) }, 5) }
  })
  let agent = agentOf()

  const answer = (ref: number, err?: unknown): void => {
    components.send({ type: 'chaos-ack', ref, ok: err === undefined, ...(err === undefined ? {} : { error: `${(err as Error).name}: ${(err as Error).message}` }) })
  }

  const off = components.subscribe((m) => {
    if (!isControl(m)) return
    if (m.type === 'chaos') {
      try {
        logger.warn({ ref: m.ref, kind: m.fault.kind }, 'applying chaos fault')
        handles.set(m.ref, agent.apply(m.fault))
        answer(m.ref)
      } catch (err) {
        answer(m.ref, err)
      }
      return
    }
    const h = handles.get(m.ref)
    handles.delete(m.ref)
    if (h === undefined) { answer(m.ref); return }
    h.revert().then(() => { answer(m.ref) }, (err: unknown) => { answer(m.ref, err) })
  })
  let disposed = false

  return {
    get agent () { return agent },
    get transport () { return transport },
    clock,
    gradientHook: (g, context) => agent.gradientHook(g, context),
    labelHook: (l, context) => agent.labelHook(l, context),
    wrapStorage<S extends ChaosStorageTarget> (inner: S): ChaosStorage<S> {
      const wrapped = chaosStorage(inner, { seed: init.seed }, { clock, ...(transport === undefined ? {} : { log: transport.log }) })
      storage = wrapped
      agent = agentOf()
      return wrapped
    },
    coordinatorOverrides: init.recovery === false ? { hangFloorMs: 7_200_000 } : {},
    async openEndpoint (config, o) {
      const zmq: Transport = {
        name: 'zmq',
        open: async (ei: EndpointInit) => await openEndpoint(config, { id: ei.id, listen: o.listen, logger: o.logger, ...(o.fence === undefined ? {} : { fence: o.fence }) })
      }
      const net = chaosTransport(zmq, { seed: init.seed, requestTimeoutMs: config.timeouts.requestTimeoutMs }, { logger: components.logger })
      transport = net
      agent = agentOf()
      const raw = await net.open({ id: o.id, job: config.job.id, listen: o.listen, ...(o.fence === undefined ? {} : { fence: o.fence }) })
      if (init.recovery !== false) return raw
      // Recovery disabled: the coordinator must not learn of disconnects either.
      return Object.assign(Object.create(raw) as Endpoint, {
        on: <E extends keyof EndpointEvents>(event: E, listener: EndpointEvents[E]) => event === 'peer:disconnect' ? () => {} : raw.on(event, listener)
      })
    },
    dispose () {
      if (disposed) return
      disposed = true
      off()
      handles.clear()
    }
  }
}

/**
 * The chaos glue of this process when the driver asked for it ({@link CHAOS_ENV} set and an IPC
 * channel open); undefined otherwise, so ordinary launches are untouched.
 */
export function childChaosFromEnv (id: string, logger?: Logger, env: NodeJS.ProcessEnv = process.env): ChildChaos | undefined {
  const raw = env[CHAOS_ENV]
  if (raw === undefined || raw === '' || typeof process.send !== 'function') return undefined
  const parsed = JSON.parse(raw) as Partial<ChildChaosSettings>
  const seed = Number.isInteger(parsed.seed) ? parsed.seed as number : 0
  return createChildChaos({ id, seed, recovery: parsed.recovery !== false }, {
    ...(logger === undefined ? {} : { logger }),
    send: (event) => { if (process.connected) process.send?.(event, undefined, {}, () => {}) },
    subscribe: (listener) => {
      process.on('message', listener)
      return () => { process.off('message', listener) }
    }
  })
}
