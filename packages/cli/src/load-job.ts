/**
 * Resolves `--job <name | path>` to a {@link Job}: a built-in name (`linear`, `mnist`) or the path
 * of an ES module exporting `createJob(config, options)`.
 *
 * @module
 */
import { existsSync } from 'node:fs'
import { isAbsolute, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { InvalidConfigError, type PhalanxConfig } from '@phalanx/core'
import { createLinearJob } from './builtin-linear.js'
import type { Job, JobOptions } from './job.js'

/** Names of the built-in jobs. */
export const BUILTIN_JOBS = ['linear', 'mnist'] as const

function isJob (value: unknown): value is Job {
  return typeof value === 'object' && value !== null && typeof (value as Job).run === 'function'
}

/** True when the built-in MNIST job (packages/cli/src/jobs/mnist.ts) is part of this build. */
export function mnistJobAvailable (): boolean {
  return existsSync(new URL('./jobs/mnist.js', import.meta.url)) || existsSync(new URL('./jobs/mnist.ts', import.meta.url))
}

async function loadMnist (config: PhalanxConfig, options: JobOptions): Promise<Job> {
  // Loaded lazily: TensorFlow.js is heavy and only this job needs it.
  const { createMnistCliJob } = await import('./builtin-mnist.js')
  return createMnistCliJob(config, options)
}

/**
 * Creates the job named by `spec`: a built-in name or a module path (relative to the working
 * directory). Module jobs must export `createJob(config, options)` returning a {@link Job}.
 *
 * @throws InvalidConfigError when the module cannot be loaded or exports no job
 */
export async function loadJob (spec: string, config: PhalanxConfig, options: JobOptions = {}): Promise<Job> {
  if (spec === 'linear') return createLinearJob(config, options)
  if (spec === 'mnist') return await loadMnist(config, options)
  const path = isAbsolute(spec) ? spec : resolve(process.cwd(), spec)
  if (!existsSync(path)) {
    throw new InvalidConfigError(`--job ${spec}: not a built-in job (${BUILTIN_JOBS.join(', ')}) and no file ${path}`)
  }
  let mod: Record<string, unknown>
  try {
    mod = await import(pathToFileURL(path).href) as Record<string, unknown>
  } catch (err) {
    throw new InvalidConfigError(`--job ${spec}: cannot load ${path}: ${(err as Error).message}`, { cause: err })
  }
  const create = mod.createJob
  if (typeof create !== 'function') throw new InvalidConfigError(`--job ${spec}: ${path} does not export createJob(config, options)`)
  const job: unknown = await (create as (c: PhalanxConfig, o: JobOptions) => unknown)(config, options)
  if (!isJob(job)) throw new InvalidConfigError(`--job ${spec}: createJob() did not return a job with a run(context) method`)
  return job
}
