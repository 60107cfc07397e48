/**
 * `npm run bench -- elastic`: the elastic runtime with real processes and ZeroMQ.
 *
 * (a) MTTR: `phalanx launch` with 4 worker processes, 20 SIGKILLs of workers (each replaced by a
 *     joining worker so the count stays up); from each kill to the next committed step, p50/p99,
 *     with the coordinator's phase breakdown (detect, quorum, reconfigure, first commit).
 * (b) Per-step framework overhead of `train()` against a plain tfjs loop (bench/lib/elastic-overhead.ts).
 * (c) Healing throughput: a joiner pulls a 64 MiB state from 2 peers over zmq tcp (the sources are
 *     separate processes, bench/lib/heal-source.ts; coordinator and joiner in this one), as a ratio
 *     of raw transport throughput for the same bytes (4 MiB request/reply chunks from the same 2
 *     processes, same concurrency) measured in the same run.
 *
 * Options: `--kills <n>` (20), `--heal-mib <n>` (64), `--skip-mttr`, `--skip-overhead` (partial runs, for development).
 */
import { fork, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { resolveConfig, silentLogger, type Endpoint } from '@phalanx/core'
import { createCoordinator } from '@phalanx/coordinator'
import { createLinearModel, launch, runStepLoop, type Fault } from '@phalanx/cli'
import { zmqTransport } from '@phalanx/transport/zmq'
import { median, progress, quantile, writeBenchResult, type Metric } from '../report.js'

const { values } = parseArgs({ options: { kills: { type: 'string' }, 'heal-mib': { type: 'string' }, 'skip-overhead': { type: 'boolean' }, 'skip-mttr': { type: 'boolean' } }, strict: true })
const KILLS = Number(values.kills ?? 20)
const HEAL_MIB = Number(values['heal-mib'] ?? 64)
/** Chunk requests in flight per source: the worker's default `healConcurrency`, used for the raw baseline too. */
const HEAL_CONCURRENCY = 2
const root = join(import.meta.dirname, '..', '..')
const bin = join(root, 'packages', 'cli', 'bin', 'phalanx.js')
const metrics: Record<string, Metric> = {}
const extra: Record<string, unknown> = {}

// (a) MTTR over injected kills.
if (values['skip-mttr'] !== true) {
  const every = 40
  const faults: Fault[] = []
  for (let i = 0; i < KILLS; i++) {
    const step = 30 + i * every
    // Kill i targets worker-(i+1); the join at the same step starts worker-(5+i), killed in its turn later.
    faults.push({ kind: 'kill', target: `worker-${i + 1}`, step }, { kind: 'join', step })
  }
  const steps = 30 + KILLS * every + 40
  const config = resolveConfig({ job: { id: 'bench-mttr', steps, globalBatch: 64, microBatch: 8, seed: 1 }, log: { level: 'info' } })
  const runDir = mkdtempSync(join(tmpdir(), 'phalanx-bench-mttr-'))
  progress(`MTTR: ${KILLS} kills over ${steps} steps, 4 worker processes (run dir ${runDir})`)
  const summary = await launch({ config, job: 'linear', jobOptions: { stepDelayMs: 3 }, workers: 4, faults, runDir, bin, lastCallMs: 1500, timeoutMs: 280_000 }, {
    progress: { write: (t) => { process.stderr.write(t) }, isTTY: false },
    summary: (t) => { process.stderr.write(t + '\n') }
  })
  const mttr = summary.faults.filter((f) => f.fault.kind === 'kill' && f.nextCommitMs !== undefined).map((f) => f.nextCommitMs as number)
  const recs = summary.recoveries
  const phase = (pick: (r: typeof recs[number]) => number | undefined): number[] => recs.map(pick).filter((x): x is number => x !== undefined)
  metrics.mttr_kill_to_commit_p50_ms = { value: mttr.length > 0 ? median(mttr) : Number.NaN, unit: 'ms', target: null, better: 'lower' }
  metrics.mttr_kill_to_commit_p99_ms = { value: mttr.length > 0 ? quantile(mttr, 0.99) : Number.NaN, unit: 'ms', target: 1000, better: 'lower' }
  metrics.mttr_kills_measured = { value: mttr.length, unit: 'kills', target: 20, better: 'higher' }
  for (const [name, pick] of [
    ['detect', (r: typeof recs[number]) => r.detectMs],
    ['quorum', (r: typeof recs[number]) => r.quorumMs],
    ['reconfigure', (r: typeof recs[number]) => r.reconfigureMs],
    ['first_commit', (r: typeof recs[number]) => r.firstCommitMs],
    ['total', (r: typeof recs[number]) => r.totalMs]
  ] as const) {
    const xs = phase(pick)
    if (xs.length === 0) continue
    metrics[`recovery_${name}_p50_ms`] = { value: median(xs), unit: 'ms', target: null, better: 'lower' }
    metrics[`recovery_${name}_p99_ms`] = { value: quantile(xs, 0.99), unit: 'ms', target: null, better: 'lower' }
  }
  metrics.mttr_run_bit_identical = { value: summary.ok && summary.checksums.length === 1 ? 1 : 0, unit: 'bool', target: 1, better: 'higher' }
  extra.mttr = { kills: mttr, recoveries: recs.length, steps: summary.committed, stepsPerSecond: summary.stepsPerSecond, ok: summary.ok, error: summary.error }
  rmSync(runDir, { recursive: true, force: true })
}

// (b) Per-step overhead of train() (written by the train() engineer).
if (values['skip-overhead'] !== true) {
  progress('per-step overhead of train() vs a plain tfjs loop')
  const { measureOverhead } = await import('../lib/elastic-overhead.js')
  Object.assign(metrics, await measureOverhead())
}

// (c) Healing throughput vs raw transport throughput, same bytes, same run. The two sources are
// separate processes (as in reality); each also serves the raw baseline's chunks, so heal and
// baseline cross the same process boundaries. Coordinator and joiner run in this process.
{
  const transport = zmqTransport()
  const logger = silentLogger()
  const job = 'bench-heal'
  const seed = 3
  const config = resolveConfig({ job: { id: job, steps: 1_000_000, globalBatch: 32, microBatch: 8, minWorkers: 2, seed } })
  const endpoints: Endpoint[] = []
  const open = async (id: string): Promise<Endpoint> => {
    const e = await transport.open({ id, job, listen: 'tcp://127.0.0.1:0', requestTimeoutMs: 20_000 })
    endpoints.push(e)
    return e
  }
  const life = new AbortController()
  const runs: Array<Promise<unknown>> = []
  const children: ChildProcess[] = []
  const heals: Array<{ bytes: number, ms: number, metaMs: number, transferMs: number, setMs: number }> = []
  let rawMBps = Number.NaN
  try {
    const coordinatorEndpoint = await open('coordinator')
    const coordinator = createCoordinator({
      jobId: job, minWorkers: 2, maxWorkers: 8, globalBatch: 32, microBatch: 8, steps: 1_000_000, deterministic: true,
      heartbeatIntervalMs: 200, suspectAfterMs: 5_000, stepTimeoutMs: 60_000, rendezvousTimeoutMs: 60_000
    }, { endpoint: coordinatorEndpoint, logger })
    await coordinator.start()
    progress(`healing: ${HEAL_MIB} MiB state from 2 source processes over zmq tcp`)
    const rawAddresses = await Promise.all(['source-1', 'source-2'].map(async (id) => {
      const child = fork(join(root, 'bench', 'lib', 'heal-source.ts'), [id, coordinatorEndpoint.address, String(HEAL_MIB), job, String(seed)], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
      children.push(child)
      return await new Promise<string>((resolve, reject) => {
        child.once('message', (m) => { resolve((m as { raw: string }).raw) })
        child.once('exit', (code) => { reject(new Error(`heal source ${id} exited with ${code}`)) })
      })
    }))
    const startJoiner = async (id: string): Promise<{ healed: Promise<typeof heals[number]>, stop: () => Promise<void> }> => {
      const endpoint = await open(id)
      const ctl = new AbortController()
      const model = createLinearModel(config, { stateMiB: HEAL_MIB })
      let resolveHeal!: (h: typeof heals[number]) => void
      const healed = new Promise<typeof heals[number]>((resolve) => { resolveHeal = resolve })
      const run = runStepLoop({
        config: resolveConfig({ job: { id: job, seed }, timeouts: { heartbeatIntervalMs: 200, suspectAfterMs: 5_000, requestTimeoutMs: 20_000 } }),
        workerId: id, endpoint, coordinatorAddress: coordinatorEndpoint.address, logger, signal: AbortSignal.any([life.signal, ctl.signal]), report: () => {},
        onWorker: (w) => { w.on('heal', (e) => { resolveHeal({ bytes: e.bytes, ms: e.ms, metaMs: e.metaMs, transferMs: e.transferMs, setMs: e.setMs }) }) }
      }, model, { evaluateEvery: 0 }).catch(() => undefined)
      runs.push(run)
      // A healed joiner leaves again, so every heal pulls from the same two sources.
      return { healed, stop: async () => { ctl.abort(); await run; await endpoint.close({ lingerMs: 0 }) } }
    }
    await new Promise<void>((resolve) => { const off = coordinator.on('commit', (e) => { if (e.step >= 3) { off(); resolve() } }) })
    for (let i = 0; i < 3; i++) {
      const joiner = await startJoiner(`joiner-${i + 1}`)
      heals.push(await joiner.healed)
      await joiner.stop()
      progress(`heal ${i + 1}: ${(heals[i]!.bytes / 2 ** 20).toFixed(0)} MiB in ${heals[i]!.ms.toFixed(0)} ms (meta ${heals[i]!.metaMs.toFixed(0)}, chunks ${heals[i]!.transferMs.toFixed(0)}, set ${heals[i]!.setMs.toFixed(0)})`)
    }

    // Raw: the same bytes as 4 MiB request/reply chunks from the same 2 processes, with the heal's
    // concurrency per peer (the worker's default healConcurrency).
    const client = await open('raw-client')
    const peers = ['raw-source-1', 'raw-source-2']
    peers.forEach((p, k) => { client.connect(p, rawAddresses[k] as string) })
    const chunks = Math.ceil((HEAL_MIB * 2 ** 20) / (4 * 2 ** 20))
    const rawTimes: number[] = []
    for (let round = 0; round < 3; round++) {
      let next = 0
      const t0 = performance.now()
      await Promise.all(peers.flatMap((p) => Array.from({ length: HEAL_CONCURRENCY }, async () => {
        while (next < chunks) { next++; await client.request(p, { type: 'chunk' }) }
      })))
      rawTimes.push(performance.now() - t0)
    }
    rawMBps = (chunks * 4) / (median(rawTimes) / 1000)
    life.abort()
    await Promise.all(runs)
    await coordinator.stop()
  } finally {
    life.abort()
    for (const c of children) c.kill('SIGTERM')
    await Promise.all(children.map(async (c) => { if (c.exitCode === null && c.signalCode === null) await new Promise((resolve) => { c.once('exit', resolve) }) }))
    await Promise.all(endpoints.map(async (e) => { await e.close({ lingerMs: 0 }) }))
  }
  const healMBps = median(heals.map((h) => h.bytes / 2 ** 20 / (h.ms / 1000)))
  metrics.heal_throughput_MiBps = { value: healMBps, unit: 'MiB/s', target: null, better: 'higher' }
  metrics.raw_transport_throughput_MiBps = { value: rawMBps, unit: 'MiB/s', target: null, better: 'higher' }
  metrics.heal_vs_transport_ratio = { value: healMBps / rawMBps, unit: 'ratio', target: 0.8, better: 'higher' }
  extra.heal = { stateMiB: HEAL_MIB, heals, sources: 'separate processes' }
}

writeBenchResult('elastic', metrics, extra)
