import { AbortError } from './errors.js'

/** Every async public method of Phalanx accepts these options. */
export interface AbortOptions {
  /** Cancels the operation; it then rejects with an {@link AbortError}. */
  signal?: AbortSignal
}

/**
 * A component with an idempotent lifecycle. `stop()` aborts everything in flight,
 * removes every listener and timer, and may be called any number of times.
 */
export interface Startable {
  start(options?: AbortOptions): Promise<void> | void
  stop(options?: AbortOptions): Promise<void> | void
}

/** Throws an {@link AbortError} (keeping the signal's reason as `cause`) when `signal` is aborted. */
export function throwIfAborted (signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw new AbortError(undefined, { cause: signal.reason })
}

/**
 * Races `promise` against `signal`: rejects with an {@link AbortError} as soon as the signal fires.
 * The listener is removed when either settles, so long-lived signals do not leak listeners.
 */
export async function raceSignal<T> (promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return await promise
  throwIfAborted(signal)
  let onAbort: (() => void) | undefined
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_resolve, reject) => {
        onAbort = () => { reject(new AbortError(undefined, { cause: signal.reason })) }
        signal.addEventListener('abort', onAbort, { once: true })
      })
    ])
  } finally {
    if (onAbort !== undefined) signal.removeEventListener('abort', onAbort)
  }
}
