/** Worker thread of the Byzantine evaluation: trains the runs it is sent and posts back accuracies. */
import { parentPort } from 'node:worker_threads'
import { createRng } from '@phalanx/aggregate'
import { loadMnist, splitIndices, train, type RunConfig } from './byzantine-train.js'

const data = loadMnist()
const split = splitIndices(data.size, createRng(2024))
parentPort?.on('message', (msg: { id: number, cfg: RunConfig }) => {
  const t0 = performance.now()
  let acc = Number.NaN
  let error: string | undefined
  try {
    acc = train(data, split, msg.cfg)
  } catch (err) {
    // One misconfigured run must not lose the others: report it and keep going.
    error = err instanceof Error ? `${err.name}: ${err.message}` : String(err)
  }
  parentPort?.postMessage({ id: msg.id, acc, error, ms: performance.now() - t0 })
})
