/**
 * A heal source for the `elastic` bench suite's healing measurement, run as its own process (as
 * sources are in reality): an elastic worker of the linear job carrying `stateMiB` of extra state,
 * plus a raw endpoint that answers `chunk` requests with one 4 MiB tensor (the transport baseline,
 * from the same process). It tells the parent its raw endpoint's address over IPC and runs until
 * the parent disconnects or sends SIGTERM.
 *
 * Usage (by bench/suites/elastic.ts): `node --import tsx bench/lib/heal-source.ts <id> <coordinatorAddress> <stateMiB> <jobId> <seed>`
 */
import { resolveConfig, silentLogger } from '@phalanx/core'
import { createLinearModel, runStepLoop } from '@phalanx/cli'
import { zmqTransport } from '@phalanx/transport/zmq'

const [id, coordinatorAddress, stateMiB, job, seed] = process.argv.slice(2) as [string, string, string, string, string]
const life = new AbortController()
process.on('SIGTERM', () => { life.abort() })
process.on('disconnect', () => { life.abort() })

const transport = zmqTransport()
const config = resolveConfig({ job: { id: job, seed: Number(seed) }, timeouts: { heartbeatIntervalMs: 200, suspectAfterMs: 5_000, requestTimeoutMs: 20_000 } })
const endpoint = await transport.open({ id, job, listen: 'tcp://127.0.0.1:0', requestTimeoutMs: 20_000 })
const raw = await transport.open({ id: `raw-${id}`, job, listen: 'tcp://127.0.0.1:0' })
const chunk = new Float32Array(1024 * 1024).fill(1)
raw.handle('chunk', () => ({ type: 'chunk', tensors: [{ name: 'c', shape: [chunk.length], dtype: 'float32', data: chunk }] }))
process.send?.({ raw: raw.address })
try {
  await runStepLoop({
    config, workerId: id, endpoint, coordinatorAddress, logger: silentLogger(), signal: life.signal, report: () => {}
  }, createLinearModel(config, { stateMiB: Number(stateMiB) }), { evaluateEvery: 0 }).catch(() => undefined)
} finally {
  await endpoint.close({ lingerMs: 0 })
  await raw.close({ lingerMs: 0 })
  if (process.connected) process.disconnect()
}
