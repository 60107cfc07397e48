/**
 * Disk faults for checkpoints as a storage decorator. {@link chaosStorage} wraps anything shaped
 * like `@phalanx/checkpoint`'s `CheckpointStorage` (the interface is structural, so this package
 * does not import the checkpoint package) and, for the writes its rules match:
 * - `enospc`: the write fails with a Node system error `ENOSPC` (nothing written), as on a full disk;
 * - `slow-fsync`: the write is acknowledged `delayMs` later, as with a slow or contended fsync;
 * - `truncate`: only the first `keepFraction` of the bytes are written, and the write reports success
 *   (a torn write that a lying disk or a crash between write and fsync leaves behind);
 * - `corrupt`: `bits` random bits are flipped in the written bytes (the caller's buffers are not touched).
 *
 * Readers are expected to catch truncation and corruption: checkpoint chunks carry CRC-32C and the
 * manifest is written last, so a restore reports `ChecksumMismatchError` / `CorruptCheckpointError`
 * and falls back to an older checkpoint.
 *
 * @module
 */
import { InvalidParametersError, raceSignal, systemClock, type AbortOptions, type Clock } from '@phalanx/core'
import { createChaosLog, type ChaosLog } from './event-log.js'
import { createChaosRng } from './rng.js'

/** The write side of a checkpoint storage (structurally `CheckpointStorage` of `@phalanx/checkpoint`). */
export interface ChaosStorageTarget {
  writeFile(path: string, parts: readonly Uint8Array[], options?: AbortOptions): Promise<void>
  writeAtomic(path: string, data: Uint8Array, options?: AbortOptions): Promise<void>
  rename(from: string, to: string): Promise<void>
}

/** One disk fault rule. */
export interface DiskRule {
  /** Name in the event log. @default `disk-<n>` */
  id?: string
  kind: 'enospc' | 'slow-fsync' | 'truncate' | 'corrupt'
  /** Glob (`*` = any characters) over the written path. @default every path */
  path?: string
  /** Probability per matching write. @default 1 */
  probability?: number
  /** Faults injected at most this many times. @default unlimited */
  count?: number
  /** Skip the first `after` matching writes. @default 0 */
  after?: number
  /** `slow-fsync`: extra latency, ms. @default 100 */
  delayMs?: number
  /** `truncate`: fraction of the bytes kept, in [0, 1). @default 0.5 */
  keepFraction?: number
  /** `corrupt`: bits flipped. @default 1 */
  bits?: number
}

/** Options of {@link chaosStorage}. */
export interface ChaosStoragePlan {
  seed: number
  rules?: readonly DiskRule[]
}

/** Collaborators of {@link chaosStorage}. */
export interface ChaosStorageComponents {
  log?: ChaosLog
  /** @default systemClock() */
  clock?: Clock
}

/** A storage with disk faults that can be changed while it runs. */
export type ChaosStorage<S extends ChaosStorageTarget> = S & {
  /** Activates a rule; returns the function that removes it. */
  addRule(rule: DiskRule): () => void
  readonly log: ChaosLog
}

function globRe (glob: string): RegExp {
  return new RegExp(`^${glob.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`)
}

/** A Node-style system error, as `fs` raises on a full disk. */
function enospc (path: string): Error {
  return Object.assign(new Error(`ENOSPC: no space left on device, write '${path}'`), { code: 'ENOSPC', errno: -28, syscall: 'write', path })
}

interface Compiled { id: string, rule: DiskRule, re: RegExp, seen: number, fired: number }

/**
 * Wraps `inner` with disk faults. Methods other than the three writes pass through unchanged.
 *
 * @example
 * ```ts
 * const storage = chaosStorage(createLocalStorage({ dir }), { seed: 1, rules: [{ kind: 'enospc', path: '*.bin', count: 1 }] })
 * const store = createCheckpointStore({ ... }, { storage })
 * ```
 */
export function chaosStorage<S extends ChaosStorageTarget> (inner: S, plan: ChaosStoragePlan, components: ChaosStorageComponents = {}): ChaosStorage<S> {
  const clock = components.clock ?? systemClock()
  const log = components.log ?? createChaosLog({ now: () => clock.now() })
  const rules = new Map<number, Compiled>()
  let nextId = 0
  let writes = 0

  const addRule = (rule: DiskRule): (() => void) => {
    if (rule.probability !== undefined && !(rule.probability >= 0 && rule.probability <= 1)) throw new InvalidParametersError('probability must be in [0, 1]')
    if (rule.keepFraction !== undefined && !(rule.keepFraction >= 0 && rule.keepFraction < 1)) throw new InvalidParametersError('keepFraction must be in [0, 1)')
    const key = nextId++
    rules.set(key, { id: rule.id ?? `disk-${key}`, rule, re: globRe(rule.path ?? '*'), seen: 0, fired: 0 })
    return () => { rules.delete(key) }
  }
  for (const r of plan.rules ?? []) addRule(r)

  /** The faults that hit this write, in rule order. */
  const faultsFor = (path: string, op: string): Compiled[] => {
    const index = writes++
    const hits: Compiled[] = []
    for (const c of rules.values()) {
      if (!c.re.test(path)) continue
      const n = c.seen++
      if (n < (c.rule.after ?? 0)) continue
      if (c.rule.count !== undefined && c.fired >= c.rule.count) continue
      if (createChaosRng(plan.seed, c.id, path, n).next() >= (c.rule.probability ?? 1)) continue
      c.fired++
      hits.push(c)
      log.append({ class: 'disk', kind: c.rule.kind, target: path, details: { op, rule: c.id, write: index } })
    }
    return hits
  }

  /** Applies truncate/corrupt to a copy of the bytes; returns the parts to write. */
  const mangle = (path: string, parts: readonly Uint8Array[], hits: readonly Compiled[]): Uint8Array[] => {
    let total = 0
    for (const p of parts) total += p.byteLength
    let bytes: Uint8Array | undefined
    const joined = (): Uint8Array => {
      if (bytes !== undefined) return bytes
      bytes = new Uint8Array(total)
      let off = 0
      for (const p of parts) { bytes.set(p, off); off += p.byteLength }
      return bytes
    }
    for (const c of hits) {
      if (c.rule.kind === 'truncate') {
        bytes = joined().subarray(0, Math.floor(total * (c.rule.keepFraction ?? 0.5)))
      } else if (c.rule.kind === 'corrupt') {
        const b = joined()
        const rng = createChaosRng(plan.seed, c.id, path, 'bits', c.fired)
        for (let k = 0; k < (c.rule.bits ?? 1) && b.byteLength > 0; k++) {
          const bit = rng.int(b.byteLength * 8)
          b[bit >>> 3] = (b[bit >>> 3] as number) ^ (1 << (bit & 7))
        }
      }
    }
    return bytes === undefined ? [...parts] : [bytes]
  }

  const before = async (path: string, hits: readonly Compiled[], options: AbortOptions): Promise<void> => {
    for (const c of hits) {
      if (c.rule.kind === 'enospc') throw enospc(path)
      if (c.rule.kind === 'slow-fsync') await raceSignal(clock.sleep(c.rule.delayMs ?? 100), options.signal)
    }
  }

  const wrapper = Object.create(inner) as ChaosStorage<S>
  Object.defineProperties(wrapper, {
    log: { value: log, enumerable: true },
    addRule: { value: addRule, enumerable: true },
    writeFile: {
      enumerable: true,
      value: async (path: string, parts: readonly Uint8Array[], options: AbortOptions = {}): Promise<void> => {
        const hits = faultsFor(path, 'writeFile')
        await before(path, hits, options)
        await inner.writeFile(path, mangle(path, parts, hits), options)
      }
    },
    writeAtomic: {
      enumerable: true,
      value: async (path: string, data: Uint8Array, options: AbortOptions = {}): Promise<void> => {
        const hits = faultsFor(path, 'writeAtomic')
        await before(path, hits, options)
        const parts = mangle(path, [data], hits)
        await inner.writeAtomic(path, parts.length === 1 ? parts[0] as Uint8Array : data, options)
      }
    },
    rename: {
      enumerable: true,
      value: async (from: string, to: string): Promise<void> => {
        const hits = faultsFor(to, 'rename').filter((c) => c.rule.kind === 'enospc' || c.rule.kind === 'slow-fsync')
        await before(to, hits, {})
        await inner.rename(from, to)
      }
    }
  })
  return wrapper
}
