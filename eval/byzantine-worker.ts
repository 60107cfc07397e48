/** Worker thread of the Byzantine evaluation: trains the runs it is sent and posts back accuracies. */
import { parentPort } from 'node:worker_threads'
import { createRng } from '@phalanx/aggregate'
import { loadMnist, splitIndices, train, type RunConfig } from './byzantine-train.js'

const data = loadMnist()
const split = splitIndices(data.size, createRng(2024))
parentPort?.on('message', (msg: { id: number, cfg: RunConfig }) => {
  const t0 = performance.now()
  const acc = train(data, split, msg.cfg)
  parentPort?.postMessage({ id: msg.id, acc, ms: performance.now() - t0 })
})
