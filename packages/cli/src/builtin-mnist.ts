/**
 * The built-in `mnist` job as a CLI {@link Job}: the MLP, optimiser, data and loss of
 * `createMnistJob` (packages/cli/src/jobs) trained with `train()` of `@phalanx/worker`.
 * Loaded lazily by {@link loadJob}: it brings in TensorFlow.js.
 *
 * Options (`--job-opt key=value`): `hidden` (128), `learningRate` (0.002), `backend` (`wasm`),
 * `testSamples` (2000), `evaluateEvery` (50 steps; test accuracy shown in the progress line).
 *
 * @module
 */
import { InvalidConfigError, type PhalanxConfig } from '@phalanx/core'
import { extractState, pinState } from '@phalanx/tfjs'
import { createTrainer, workerInitFromConfig } from '@phalanx/worker'
import type { Job, JobOptions } from './job.js'
import { createMnistJob, type MnistJobInit } from './jobs/mnist.js'

const KNOWN = ['hidden', 'learningRate', 'backend', 'testSamples', 'evaluateEvery']

/** Creates the `mnist` job for `phalanx worker --job mnist`. */
export function createMnistCliJob (config: PhalanxConfig, options: JobOptions = {}): Job {
  for (const k of Object.keys(options)) if (!KNOWN.includes(k)) throw new InvalidConfigError(`mnist job: unknown option "${k}" (known: ${KNOWN.join(', ')})`)
  const num = (k: string): number | undefined => {
    const v = options[k]
    if (v === undefined) return undefined
    if (typeof v !== 'number' || !(v > 0)) throw new InvalidConfigError(`mnist job option ${k}: expected a positive number, got ${JSON.stringify(v)}`)
    return v
  }
  const backend = options.backend
  if (backend !== undefined && typeof backend !== 'string') throw new InvalidConfigError('mnist job option backend: expected a backend name')
  const init: MnistJobInit = {
    seed: config.job.seed,
    ...(num('hidden') === undefined ? {} : { hidden: num('hidden') as number }),
    ...(num('learningRate') === undefined ? {} : { learningRate: num('learningRate') as number }),
    ...(num('testSamples') === undefined ? {} : { testSamples: num('testSamples') as number }),
    ...(backend === undefined ? {} : { backend: backend as NonNullable<MnistJobInit['backend']> })
  }
  const evaluateEvery = num('evaluateEvery') ?? 50
  return {
    name: 'mnist',
    async run (context, runOptions = {}) {
      const signal = runOptions.signal === undefined ? context.signal : AbortSignal.any([context.signal, runOptions.signal])
      const job = await createMnistJob(init, { logger: context.logger }, { signal })
      context.logger.info({ backend: job.backend }, 'mnist job ready')
      const { size: _size, coordinatorAddress: _address, ...worker } = workerInitFromConfig(context.config, { size: 0, coordinatorAddress: context.coordinatorAddress })
      try {
        const trainer = createTrainer({
          model: job.model,
          optimizer: job.optimizer,
          data: job.data,
          loss: job.loss,
          seed: job.seed,
          coordinatorAddress: context.coordinatorAddress,
          evaluate: async () => await job.evaluate(),
          evaluateEvery,
          worker,
          onStep: (r) => {
            const loss = r.globalLoss ?? r.loss
            const accuracy = r.evaluation?.accuracy
            context.report({ step: r.step + 1, loss, ...(accuracy === undefined ? {} : { accuracy }) })
          }
        }, {
          endpoint: context.endpoint, logger: context.logger,
          ...(context.aggregator === undefined ? {} : { aggregator: context.aggregator }),
          ...(context.snapshots === undefined ? {} : { snapshots: context.snapshots((meta) => pinState(job.model, job.optimizer, meta)) })
        })
        context.onWorker?.(trainer.worker)
        let summary
        try {
          summary = await trainer.run({ signal })
        } finally {
          await trainer.stop()
        }
        const accuracy = summary.evaluation?.accuracy
        return {
          steps: summary.committed,
          state: await extractState(job.model, job.optimizer),
          ...(summary.loss === undefined ? {} : { loss: summary.loss }),
          ...(accuracy === undefined ? {} : { accuracy })
        }
      } finally {
        job.dispose()
      }
    }
  }
}
