/**
 * @packageDocumentation
 *
 * `@phalanx/core` holds the contracts every other Phalanx package reads: the {@link StateDict} data
 * model, the {@link Transport} / {@link Endpoint} messaging interfaces and the wire format, the
 * {@link Clock}, cancellation and lifecycle conventions, the error classes with their wire form and
 * the single {@link isRetryable} policy, chunk checksums, and the configuration schema with presets.
 * It has no Phalanx dependencies and no side effects.
 *
 * @example
 * ```ts
 * import { createStateDict, flattenStateDict, resolveConfig } from '@phalanx/core'
 *
 * const config = resolveConfig({ preset: 'lan' }, { job: { id: 'mnist', minWorkers: 2 } })
 * const state = createStateDict([{ name: 'w', shape: [2, 2], dtype: 'float32', data: new Float32Array(4) }])
 * const flat = flattenStateDict(state)
 * ```
 */
export * from './abort.js'
export * from './checksum.js'
export * from './clock.js'
export * from './config.js'
export * from './errors.js'
export * from './logger.js'
export * from './random.js'
export * from './state-dict.js'
export * from './transport.js'
export * from './wire.js'
export * from './aggregator.js'
export * from './pinned.js'
export * from './elastic.js'
export * from './stages.js'
export * from './replicas.js'
