import { afterEach, describe, expect, it } from 'vitest'
import { resolveConfig, silentLogger, type Endpoint } from '@phalanx/core'
import { createCoordinator } from '@phalanx/coordinator'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { createLinearModel, linearInitFromOptions, referenceLinearRun } from '../src/builtin-linear.js'
import { aggregatorFromConfig } from '../src/compose.js'
import { describeFault, parseFaults } from '../src/faults.js'
import { runStepLoop, stateChecksum } from '../src/job.js'
import { loadJob } from '../src/load-job.js'
import { main } from '../src/main.js'
import { createProgressDisplay, progressLine } from '../src/progress.js'
import { formatSummary, type LaunchSummary } from '../src/launch.js'

function capture (): { io: { stdout: (t: string) => void, stderr: (t: string) => void, isTTY: boolean }, out: () => string, err: () => string } {
  let out = ''
  let err = ''
  return { io: { stdout: (t) => { out += t }, stderr: (t) => { err += t }, isTTY: false }, out: () => out, err: () => err }
}

describe('fault flags', () => {
  it('parses kill, join and stop, sorted by step', () => {
    const faults = parseFaults({ kill: ['worker-2@30', '3@10', 'coordinator@50'], join: ['@40', 'extra@45'], stop: ['worker-1@20:1500'] })
    expect(faults).toEqual([
      { kind: 'kill', target: 'worker-3', step: 10 },
      { kind: 'stop', target: 'worker-1', step: 20, ms: 1500 },
      { kind: 'kill', target: 'worker-2', step: 30 },
      { kind: 'join', step: 40 },
      { kind: 'join', id: 'extra', step: 45 },
      { kind: 'kill', target: 'coordinator', step: 50 }
    ])
    expect(describeFault(faults[5]!)).toContain('restart from WAL')
  })

  it('rejects malformed faults naming the flag', () => {
    expect(() => parseFaults({ kill: ['worker-2'] })).toThrow(/--kill worker-2/)
    expect(() => parseFaults({ kill: ['w 2@3'] })).toThrow(/not a process id/)
    expect(() => parseFaults({ stop: ['worker-1@5'] })).toThrow(/--stop/)
    expect(() => parseFaults({ stop: ['worker-1@5:0'] })).toThrow(/<ms>/)
    expect(() => parseFaults({ join: ['@x'] })).toThrow(/--join/)
  })
})

describe('main', () => {
  it('prints usage and exits 2 without a command, 0 for help', async () => {
    const a = capture()
    expect(await main([], a.io)).toBe(2)
    expect(a.out()).toContain('phalanx launch')
    const b = capture()
    expect(await main(['help', 'launch'], b.io)).toBe(0)
    expect(b.out()).toContain('--kill <id>@<step>')
  })

  it('exits 2 with a clear message on bad flags and configurations', async () => {
    const a = capture()
    expect(await main(['launch', '--nope'], a.io)).toBe(2)
    expect(a.err()).toContain("Unknown option '--nope'")
    const b = capture()
    expect(await main(['launch', '--steps', 'ten'], b.io)).toBe(2)
    expect(b.err()).toContain('--steps expects an integer')
    const c = capture()
    expect(await main(['launch', '--global-batch', '100', '--micro-batch', '32'], c.io)).toBe(2)
    expect(c.err()).toContain('not a multiple of job.microBatch')
    const d = capture()
    expect(await main(['worker', '--coordinator', 'tcp://127.0.0.1:1', '--id', 'coordinator'], d.io)).toBe(2)
    expect(d.err()).toContain('--id')
    const e = capture()
    expect(await main(['status'], e.io)).toBe(2)
  })

  it('rejects a configuration naming an unknown aggregator with InvalidConfigError before joining', async () => {
    expect(() => aggregatorFromConfig(resolveConfig({ aggregator: { name: 'Nope' } }))).toThrow(expect.objectContaining({ name: 'InvalidConfigError', message: expect.stringMatching(/aggregator .*Nope.*Krum/) }))
    expect(() => aggregatorFromConfig(resolveConfig({ aggregator: { name: 'Krum', f: -1 } }))).toThrow(expect.objectContaining({ name: 'InvalidConfigError' }))
    expect(aggregatorFromConfig(resolveConfig({ aggregator: { name: 'Krum', f: 1 } }))).toMatchObject({ name: 'Krum', f: 1, needsGram: true })
    const a = capture()
    expect(await main(['worker', '--coordinator', 'tcp://127.0.0.1:1', '--id', 'w1', '--set', 'aggregator.name=Nope'], a.io)).toBe(2)
    expect(a.err()).toContain('aggregator')
    expect(a.err()).toContain('Nope')
  })

  it('reports an unreachable coordinator with exit code 1', async () => {
    const a = capture()
    expect(await main(['status', 'http://127.0.0.1:9'], a.io)).toBe(1)
    expect(a.err()).toContain('PeerUnreachableError')
  })
})

describe('jobs', () => {
  it('loads the built-in linear job and rejects unknown jobs and options', async () => {
    const config = resolveConfig({})
    expect((await loadJob('linear', config)).name).toBe('linear')
    await expect(loadJob('no-such-job', config)).rejects.toMatchObject({ name: 'InvalidConfigError' })
    expect(() => linearInitFromOptions({ speed: 1 })).toThrow(/unknown option "speed"/)
    expect(() => linearInitFromOptions({ lr: -1 })).toThrow(/lr/)
  })

  const endpoints: Endpoint[] = []
  afterEach(async () => { await Promise.all(endpoints.splice(0).map(async (e) => { await e.close({ lingerMs: 0 }) })) })

  it('trains the linear job elastically to the bit-exact reference, whatever the worker count', async () => {
    const config = resolveConfig({ job: { id: 'unit', steps: 30, globalBatch: 32, microBatch: 4, seed: 5 }, timeouts: { heartbeatIntervalMs: 50, suspectAfterMs: 300 } })
    const reference = referenceLinearRun(config, { stateMiB: 0.01 })
    const expected = stateChecksum(await reference.state.get())
    const transport = memoryTransport({ network: createMemoryNetwork() })
    const coordinatorEndpoint = await transport.open({ id: 'coordinator', job: 'unit' })
    endpoints.push(coordinatorEndpoint)
    const coordinator = createCoordinator({
      jobId: 'unit', minWorkers: 3, maxWorkers: 3, globalBatch: 32, microBatch: 4, steps: 30, deterministic: true,
      heartbeatIntervalMs: 50, suspectAfterMs: 300, stepTimeoutMs: 10_000, rendezvousTimeoutMs: 10_000
    }, { endpoint: coordinatorEndpoint })
    await coordinator.start()
    const ctl = new AbortController()
    try {
      const runs = await Promise.all(['w1', 'w2', 'w3'].map(async (id) => {
        const endpoint = await transport.open({ id, job: 'unit' })
        endpoints.push(endpoint)
        const model = createLinearModel(config, { stateMiB: 0.01 })
        const reports: number[] = []
        const result = runStepLoop({
          config, workerId: id, endpoint, coordinatorAddress: 'coordinator', logger: silentLogger(), signal: ctl.signal,
          report: (p) => { if (p.loss !== undefined) reports.push(p.loss) }
        }, model, { evaluateEvery: 10 })
        return { result, reports }
      }))
      const results = await Promise.all(runs.map(async (r) => await r.result))
      for (const r of results) {
        expect(r.steps).toBe(30)
        expect(stateChecksum(r.state)).toBe(expected)
      }
      expect(runs[0]!.reports).toHaveLength(3)
      expect(results[0]!.loss).toBeLessThan(runs[0]!.reports[0]!)
    } finally {
      ctl.abort()
      await coordinator.stop()
    }
  })
})

describe('progress and summary', () => {
  it('prints plain lines off a TTY and redraws one line on a TTY', () => {
    const state = { committed: 5, steps: 10, epoch: 2, members: 3, stepsPerSecond: 4, globalBatch: 64, recoveries: 1, loss: 0.5 }
    expect(progressLine(state)).toBe('step 5/10  loss 0.5000  members 3  epoch 2  4.0 steps/s (256 samples/s)  recoveries 1')
    let plain = ''
    const p = createProgressDisplay({ write: (t) => { plain += t }, isTTY: false })
    p.update(state)
    p.event('kill -9 worker-2')
    p.update({ ...state, committed: 10 })
    p.update({ ...state, committed: 10 })
    expect(plain.split('\n').filter(Boolean)).toHaveLength(3)
    expect(plain).not.toContain('\r')
    let tty = ''
    const t = createProgressDisplay({ write: (x) => { tty += x }, isTTY: true })
    t.update(state)
    t.event('join')
    t.end()
    expect(tty).toContain('\r\x1b[2K[phalanx] step 5/10')
    expect(tty).toContain('[phalanx] join\n')
  })

  it('summarises faults, heals and recoveries with MTTR per phase', () => {
    const s: LaunchSummary = {
      ok: true, job: 'linear', runDir: 'runs/x', steps: 100, committed: 100, epoch: 3, durationMs: 5000, stepsPerSecond: 25, loss: 0.001,
      checksums: [0xabc], workers: [{ id: 'worker-1', exitCode: 0, signal: null, steps: 100, checksum: 0xabc, killed: false }, { id: 'worker-2', exitCode: null, signal: 'SIGKILL', killed: true }],
      recoveries: [{ reason: 'disconnect', peers: ['worker-2'], epoch: 2, step: 40, detectMs: 0, quorumMs: 2, reconfigureMs: 10, healMs: undefined, firstCommitMs: 20, totalMs: 22 }],
      faults: [{ fault: { kind: 'kill', target: 'worker-2', step: 40 }, firedAtMs: 100, firedAtStep: 40, nextCommitMs: 25 }],
      heals: [{ id: 'worker-3', step: 60, bytes: 72, ms: 8, sources: ['worker-1'] }]
    }
    const text = formatSummary(s)
    expect(text).toContain('job linear finished: 100/100 steps')
    expect(text).toContain('final state crc32c 00000abc on worker-1')
    expect(text).toContain('kill -9 worker-2 @40: fired at step 40, next commit 25 ms later')
    expect(text).toMatch(/disconnect\s+worker-2\s+40\s+0\s+2\s+10\s+-\s+20\s+22/)
    expect(text).toContain('worker-3 healed step 60')
  })
})
