/**
 * Built-in jobs a `phalanx worker` can train without user code, by name.
 *
 * @module
 */
import { createMnistJob } from './mnist.js'

export { createMnistJob, type MnistJob, type MnistJobComponents, type MnistJobInit } from './mnist.js'

/** Factories of the built-in jobs, by the name used in configuration (`--job mnist`). */
export const BUILTIN_JOBS = { mnist: createMnistJob } as const

/** Name of a built-in job. */
export type BuiltinJobName = keyof typeof BUILTIN_JOBS
