import { raceSignal, throwIfAborted, type AbortOptions } from './abort.js'

/** A scheduled callback; `cancel()` is idempotent. */
export interface TimerHandle {
  cancel(): void
}

/**
 * The only source of time in Phalanx. Failure detectors, timeouts and schedules take a `Clock`
 * so tests drive them with {@link createFakeClock} instead of sleeping.
 */
export interface Clock {
  /** Milliseconds, monotonic within a process (never goes back), roughly the Unix epoch. */
  now(): number
  /** Runs `callback` once after `ms` milliseconds. */
  setTimeout(callback: () => void, ms: number): TimerHandle
  /** Runs `callback` every `ms` milliseconds until cancelled. */
  setInterval(callback: () => void, ms: number): TimerHandle
  /** Resolves after `ms` milliseconds; rejects with `AbortError` when the signal fires first. */
  sleep(ms: number, options?: AbortOptions): Promise<void>
}

/** The real clock: `performance.now()` anchored at `performance.timeOrigin`, Node timers unref'd. */
export function systemClock (): Clock {
  const clock: Clock = {
    now: () => performance.timeOrigin + performance.now(),
    setTimeout (callback, ms) {
      const t = setTimeout(callback, ms)
      return { cancel: () => { clearTimeout(t) } }
    },
    setInterval (callback, ms) {
      const t = setInterval(callback, ms)
      return { cancel: () => { clearInterval(t) } }
    },
    sleep: async (ms, options) => { await sleepOn(clock, ms, options) }
  }
  return clock
}

/**
 * Sleeps `ms` on `clock`'s timers, rejecting with `AbortError` as soon as the signal fires; the
 * timer is cancelled either way. The `sleep` of every {@link Clock} implementation is this.
 */
export async function sleepOn (clock: Pick<Clock, 'setTimeout'>, ms: number, options: AbortOptions = {}): Promise<void> {
  throwIfAborted(options.signal)
  let handle: TimerHandle | undefined
  try {
    await raceSignal(new Promise<void>((resolve) => { handle = clock.setTimeout(resolve, ms) }), options.signal)
  } finally {
    handle?.cancel()
  }
}

/** A {@link Clock} whose time moves only when a test says so. */
export interface FakeClock extends Clock {
  /** Moves time forward by `ms`, firing due timers in time order (timers they schedule fire too, if due). */
  advance(ms: number): void
  /** Moves time to the next pending timer and fires it; returns false when nothing is pending. */
  next(): boolean
  /** Number of timers waiting to fire. */
  pending(): number
}

interface FakeTimer {
  id: number
  at: number
  interval: number | undefined
  callback: () => void
}

/** Creates a {@link FakeClock} starting at `start` milliseconds. */
export function createFakeClock (start = 0): FakeClock {
  let now = start
  let nextId = 0
  const timers = new Map<number, FakeTimer>()

  const schedule = (callback: () => void, ms: number, interval: number | undefined): TimerHandle => {
    const timer: FakeTimer = { id: nextId++, at: now + Math.max(0, ms), interval, callback }
    timers.set(timer.id, timer)
    return { cancel: () => { timers.delete(timer.id) } }
  }

  const due = (until: number): FakeTimer | undefined => {
    let first: FakeTimer | undefined
    for (const t of timers.values()) {
      if (t.at <= until && (first === undefined || t.at < first.at || (t.at === first.at && t.id < first.id))) first = t
    }
    return first
  }

  const fire = (t: FakeTimer): void => {
    now = Math.max(now, t.at)
    if (t.interval === undefined) timers.delete(t.id)
    else t.at += Math.max(1, t.interval)
    t.callback()
  }

  const clock: FakeClock = {
    now: () => now,
    setTimeout: (callback, ms) => schedule(callback, ms, undefined),
    setInterval: (callback, ms) => schedule(callback, ms, ms),
    sleep: async (ms, options) => { await sleepOn(clock, ms, options) },
    advance (ms) {
      const until = now + ms
      for (let t = due(until); t !== undefined; t = due(until)) fire(t)
      now = until
    },
    next () {
      const t = due(Number.POSITIVE_INFINITY)
      if (t === undefined) return false
      fire(t)
      return true
    },
    pending: () => timers.size
  }
  return clock
}
