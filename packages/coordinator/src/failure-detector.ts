import { InvalidParametersError, type Clock } from '@phalanx/core'

/** Tunables of {@link createFailureDetector}. */
export interface FailureDetectorInit {
  /** Silence after which a tracked peer is suspected. */
  suspectAfterMs: number
  /** Upper bound on a step whatever the statistics say; also the deadline before any step was timed. */
  stepTimeoutMs: number
  /**
   * A step is hung when it runs longer than `hangFactor ×` the median of recent step durations.
   * @default 3
   */
  hangFactor?: number
  /**
   * Smallest hang deadline, so that very fast steps do not make jitter look like a hang.
   * @default 2000
   */
  hangFloorMs?: number
  /**
   * Recent step durations kept for the median.
   * @default 16
   */
  window?: number
}

/**
 * Crash and hang detection from the injected clock only.
 *
 * Crash: a peer that has not been heard from for `suspectAfterMs` is suspect (socket disconnects are
 * reported separately and suspect at once). Hang (alive but stuck): a step that runs past
 * `max(hangFloorMs, hangFactor × median(recent step durations))`, capped by `stepTimeoutMs`, is
 * overdue. Deadlines adapt to the job instead of being a fixed guess.
 */
export interface FailureDetector {
  /** Records that `peer` was heard from now (starts tracking it). */
  heard(peer: string): void
  /** Stops tracking `peer`. */
  forget(peer: string): void
  /** When `peer` was last heard from, or undefined when untracked. */
  lastHeard(peer: string): number | undefined
  /** Tracked peers silent for at least `suspectAfterMs`, in id order. */
  silent(): string[]
  /** Records a completed step's duration. */
  recordStep(durationMs: number): void
  /** The current hang deadline of a step, in ms. */
  stepDeadlineMs(): number
  /** Median of the recorded step durations (undefined before the first). */
  medianStepMs(): number | undefined
}

/** Creates a {@link FailureDetector} driven by `clock`. */
export function createFailureDetector (init: FailureDetectorInit, components: { clock: Clock }): FailureDetector {
  const { clock } = components
  const hangFactor = init.hangFactor ?? 3
  const hangFloorMs = init.hangFloorMs ?? 2000
  const window = init.window ?? 16
  if (!(init.suspectAfterMs > 0) || !(init.stepTimeoutMs > 0) || !(hangFactor > 0) || window < 1) {
    throw new InvalidParametersError('Failure detector needs positive suspectAfterMs, stepTimeoutMs, hangFactor and window')
  }
  const last = new Map<string, number>()
  const durations: number[] = []

  const median = (): number | undefined => {
    if (durations.length === 0) return undefined
    const s = [...durations].sort((a, b) => a - b)
    const mid = Math.floor(s.length / 2)
    return s.length % 2 === 1 ? s[mid] as number : ((s[mid - 1] as number) + (s[mid] as number)) / 2
  }

  return {
    heard (peer) { last.set(peer, clock.now()) },
    forget (peer) { last.delete(peer) },
    lastHeard: (peer) => last.get(peer),
    silent () {
      const now = clock.now()
      return [...last].filter(([, t]) => now - t >= init.suspectAfterMs).map(([p]) => p).sort()
    },
    recordStep (durationMs) {
      durations.push(Math.max(0, durationMs))
      if (durations.length > window) durations.shift()
    },
    stepDeadlineMs () {
      const m = median()
      if (m === undefined) return init.stepTimeoutMs
      return Math.min(init.stepTimeoutMs, Math.max(hangFloorMs, hangFactor * m))
    },
    medianStepMs: median
  }
}
