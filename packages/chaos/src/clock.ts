/**
 * Clock skew as a {@link Clock} decorator: a constant offset plus a drift rate, changeable while it
 * runs. A process given a skewed clock sees `now()` run fast or slow, and its timers fire at the
 * skewed pace (a clock drifting +10% fires a 100 ms timer after about 91 real ms).
 *
 * @module
 */
import { InvalidParametersError, sleepOn, type Clock } from '@phalanx/core'
import type { ChaosLog } from './event-log.js'

/** Skew parameters. */
export interface ClockSkew {
  /** Added to `now()`, ms (may be negative). @default 0 */
  offsetMs?: number
  /** Rate error in parts per million: +1e5 runs 10% fast. Must be above -1e6. @default 0 */
  driftPpm?: number
}

/** A {@link Clock} whose skew can be changed at run time. */
export interface SkewedClock extends Clock {
  /** Applies a new skew from now on (the clock stays continuous and monotonic). */
  setSkew(skew: ClockSkew): void
  /** The current skew. */
  skew(): Required<ClockSkew>
}

/** Collaborators of {@link skewedClock}. */
export interface SkewedClockComponents {
  /** Where skew changes are appended. */
  log?: ChaosLog
  /** Process id the log names as the target. @default 'clock' */
  target?: string
}

function check (skew: ClockSkew): Required<ClockSkew> {
  const offsetMs = skew.offsetMs ?? 0
  const driftPpm = skew.driftPpm ?? 0
  if (!Number.isFinite(offsetMs)) throw new InvalidParametersError('offsetMs must be finite')
  if (!Number.isFinite(driftPpm) || driftPpm <= -1e6) throw new InvalidParametersError('driftPpm must be finite and above -1e6')
  return { offsetMs, driftPpm }
}

/** Wraps `inner` with an offset and a drift. */
export function skewedClock (inner: Clock, skew: ClockSkew = {}, components: SkewedClockComponents = {}): SkewedClock {
  let current = check(skew)
  // now() = base + (inner.now() - anchor) * rate, re-anchored at every change so it stays continuous.
  let anchor = inner.now()
  let base = anchor + current.offsetMs
  let last = -Infinity
  const rate = (): number => 1 + current.driftPpm / 1e6
  const now = (): number => {
    const t = base + (inner.now() - anchor) * rate()
    // Monotonic even when a new negative offset is applied: time never goes back.
    last = Math.max(last, t)
    return last
  }
  const real = (ms: number): number => Math.max(0, ms / rate())
  const log = (): void => {
    components.log?.append({ class: 'clock', kind: 'skew', target: components.target ?? 'clock', details: { ...current } })
  }
  const clock: SkewedClock = {
    now,
    setTimeout: (callback, ms) => inner.setTimeout(callback, real(ms)),
    setInterval: (callback, ms) => inner.setInterval(callback, real(ms)),
    sleep: async (ms, options) => { await sleepOn(clock, ms, options) },
    setSkew (next) {
      const value = check(next)
      const t = now()
      anchor = inner.now()
      // A new offset jumps by the difference of offsets (forward at once; backward is absorbed by monotonicity).
      base = t + (value.offsetMs - current.offsetMs)
      current = value
      log()
    },
    skew: () => ({ ...current })
  }
  if (current.offsetMs !== 0 || current.driftPpm !== 0) log()
  return clock
}
