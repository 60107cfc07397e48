/**
 * The in-process half of fault injection: a {@link ChaosAgent} lives in each process of a job and
 * applies the {@link InProcessFault}s a driver sends it (over a control message in a launched
 * process, a direct call in a test). It owns the hooks the process was composed with: its chaos
 * transport, skewed clock and chaos storage, and the gradient and label hooks of its training loop.
 *
 * @module
 */
import { InvalidParametersError, componentLogger, type Logger } from '@phalanx/core'
import { createByzantineHook, createLabelFlipHook, type GradientHook, type LabelHook } from './byzantine.js'
import type { SkewedClock } from './clock.js'
import type { InjectionHandle, InProcessFault } from './driver.js'
import { createChaosLog, type ChaosLog } from './event-log.js'
import type { ChaosStorage, ChaosStorageTarget } from './storage.js'
import type { ChaosTransport } from './transport.js'

/** Identity of the process an agent lives in. */
export interface ChaosAgentInit {
  /** Process id (the log's target). */
  id: string
  /**
   * Longest event-loop stall accepted, ms.
   * @default 60000
   */
  maxStallMs?: number
}

/** What the process was composed with; a fault needing a missing part is refused with `InvalidParametersError`. */
export interface ChaosAgentComponents {
  log?: ChaosLog
  transport?: ChaosTransport
  clock?: SkewedClock
  storage?: ChaosStorage<ChaosStorageTarget>
  /**
   * Dies from inside. @default throws `message` from a `setImmediate` callback (an uncaught error)
   */
  crash?: (message: string) => void
  /** Blocks the event loop for `ms`. @default a busy loop on `performance.now()` */
  stall?: (ms: number) => void
  /** @default silent */
  logger?: Logger
}

/**
 * Applies faults inside one process. Whoever decides to apply a fault (the scenario runner) logs
 * the decision; the agent's decorators log the effects (each dropped message, each attacked step).
 */
export interface ChaosAgent {
  /** Applies a fault; the handle undoes it where that makes sense (crash and stall cannot be undone). */
  apply(fault: InProcessFault): InjectionHandle
  /** The training loop's gradient hook: identity until a `byzantine` fault is applied. */
  readonly gradientHook: GradientHook
  /** The training loop's label hook: identity until a `label-flip` fault is applied. */
  readonly labelHook: LabelHook
  readonly log: ChaosLog
}

const NOOP: InjectionHandle = { revert: async () => {} }

function once (undo: () => void): InjectionHandle {
  let done = false
  return { revert: async () => { if (!done) { done = true; undo() } } }
}

/** Creates a {@link ChaosAgent}. */
export function createChaosAgent (init: ChaosAgentInit, components: ChaosAgentComponents = {}): ChaosAgent {
  const log = components.log ?? components.transport?.log ?? createChaosLog()
  const logger = componentLogger(components.logger, 'chaos-agent')
  const maxStall = init.maxStallMs ?? 60_000
  let gradient: GradientHook | undefined
  let labels: LabelHook | undefined

  const need = <T>(part: T | undefined, name: string, kind: string): T => {
    if (part === undefined) throw new InvalidParametersError(`Fault "${kind}" needs the process to be composed with a chaos ${name}`)
    return part
  }

  const agent: ChaosAgent = {
    log,
    gradientHook: (g, context) => gradient === undefined ? g.map((x) => x) : gradient(g, context),
    labelHook: (l, context) => labels === undefined ? Int32Array.from(l) : labels(l, context),
    apply (fault) {
      switch (fault.kind) {
        case 'crash': {
          const message = fault.message ?? `chaos: crash injected into ${init.id}`
          logger.warn({ id: init.id }, 'crashing on purpose')
          const crash = components.crash ?? ((m: string) => { setImmediate(() => { throw new Error(m) }) })
          crash(message)
          return NOOP
        }
        case 'stall': {
          if (!(fault.ms >= 0 && fault.ms <= maxStall)) throw new InvalidParametersError(`stall of ${fault.ms} ms is outside [0, ${maxStall}]`)
          const stall = components.stall ?? ((ms: number) => {
            const end = performance.now() + ms
            // Deliberately blocking: this is the fault (a long GC pause, a synchronous hot loop).
            while (performance.now() < end) { /* spin */ }
          })
          stall(fault.ms)
          return NOOP
        }
        case 'network': {
          const remove = need(components.transport, 'transport', fault.kind).addRule({ ...fault.rule, from: fault.rule.from ?? init.id })
          return once(remove)
        }
        case 'partition': {
          return once(need(components.transport, 'transport', fault.kind).partition(fault.groups))
        }
        case 'byzantine': {
          gradient = createByzantineHook({ attack: fault.attack, seed: fault.seed }, { log })
          return once(() => { gradient = undefined })
        }
        case 'label-flip': {
          labels = createLabelFlipHook({ classes: fault.classes }, { log })
          return once(() => { labels = undefined })
        }
        case 'disk': {
          return once(need(components.storage, 'storage', fault.kind).addRule(fault.rule))
        }
        case 'clock-skew': {
          const clock = need(components.clock, 'clock', fault.kind)
          const before = clock.skew()
          clock.setSkew(fault.skew)
          return once(() => { clock.setSkew(before) })
        }
      }
    }
  }
  return agent
}
