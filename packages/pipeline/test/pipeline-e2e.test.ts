/**
 * Real processes: a 6-stage CheckFree+ pipeline (out-of-order, embedding/head copies) whose stage 3
 * has a data-parallel replica, over ZeroMQ tcp loopback. Stage processes are killed with SIGKILL
 * mid-run: an interior stage (recovered by averaging), the first stage (recovered by copy), and a
 * replica of stage 3 (exact copy). Training goes on after each.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createEpochFence, stateDictsBitEqual, type Endpoint } from '@phalanx/core'
import { zmqTransport } from '@phalanx/transport/zmq'
import { createStageRegistry } from '@phalanx/coordinator'
import { createPipelineController, pipelineGraph, PipelineMessage, type Member, type PipelineController, type RecoveryEvent } from '@phalanx/pipeline'
import { decodeTensors } from '@phalanx/core'

const FIXTURE = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'stage-process.ts')
const TEXT = 'the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. '.repeat(12)
const S = 6
const base = {
  lm: { vocab: 0, dModel: 16, heads: 2, layers: 6, seqLen: 8, ffn: 32, seed: 3 },
  stages: S, microBatches: 4, microBatchSize: 2, outOfOrder: true, edgeReplicas: true, lr: 1e-2, text: TEXT
}
base.lm.vocab = new Set(TEXT).size

const procs = new Map<string, ChildProcess>()
const spares = new Map<number, Array<Promise<Member>>>()
let endpoint: Endpoint
let controller: PipelineController

async function start (id: string, stage: number): Promise<Member> {
  const proc = spawn(process.execPath, ['--import', 'tsx', '--conditions=@phalanx/source', FIXTURE, JSON.stringify({ ...base, id, stage })], { stdio: ['pipe', 'pipe', 'inherit'] })
  procs.set(id, proc)
  const lines = createInterface({ input: proc.stdout as NonNullable<typeof proc.stdout> })
  try {
    return await new Promise<Member>((resolve, reject) => {
      proc.once('exit', (code) => { reject(new Error(`${id} exited with ${code} before READY`)) })
      lines.on('line', (line) => {
        const [tag, pid, address] = line.split(' ')
        if (tag === 'READY' && pid === id && address !== undefined) resolve({ id, address })
      })
    })
  } finally {
    proc.removeAllListeners('exit')
  }
}

async function fullState (id: string) {
  const reply = await endpoint.request(id, { type: PipelineMessage.get, body: { part: 'full' } }, { timeoutMs: 20_000 })
  return { tensors: decodeTensors(reply) }
}

beforeAll(async () => {
  // The initial members and one spare per stage that will be killed start together.
  const initial = Array.from({ length: S }, (_, s) => start(`s${s}`, s))
  const dp = start('s3b', 3)
  for (const s of [0, 2, 3]) spares.set(s, [start(`spare-${s}`, s)])
  endpoint = await zmqTransport().open({ id: 'controller', job: 'pipeline-e2e', listen: 'tcp://127.0.0.1:0', fence: createEpochFence(), requestTimeoutMs: 20_000 })
  controller = createPipelineController({ stages: S, microBatches: base.microBatches, outOfOrder: true, edgeReplicas: true, recovery: { strategy: 'checkfree-plus' }, probeTimeoutMs: 3_000, stepTimeoutMs: 30_000 }, {
    endpoint,
    registry: createStageRegistry({ graph: pipelineGraph({ stages: S, outOfOrder: true }) }),
    spawn: async (stage) => {
      const next = spares.get(stage)?.shift()
      if (next === undefined) throw new Error(`no spare for stage ${stage}`)
      return await next
    }
  })
  const members = await Promise.all(initial)
  members.forEach((m, s) => { controller.join(s, m) })
  controller.join(3, await dp)
  await Promise.all([...spares.values()].flat())
}, 80_000)

afterAll(async () => {
  controller?.stop()
  for (const p of procs.values()) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL')
  await endpoint?.close({ lingerMs: 0 })
})

describe('pipeline over zmq with real processes', () => {
  it('survives kill -9 of an interior stage, the first stage and a data-parallel replica', async () => {
    const recovered: RecoveryEvent[] = []
    controller.on('recovered', (e) => recovered.push(e))
    const first = await controller.trainStep()
    await controller.trainStep()

    const kill = (id: string): void => { procs.get(id)?.kill('SIGKILL') }
    // Interior stage, killed while a step is in flight.
    const inFlight = controller.trainStep()
    kill('s2')
    const a = await inFlight
    expect(a.recoveries).toMatchObject([{ stage: 2, strategy: 'average', lost: 's2', replacement: 'spare-2' }])

    kill('s0')
    const b = await controller.trainStep()
    expect(b.recoveries).toMatchObject([{ stage: 0, strategy: 'copy', replacement: 'spare-0' }])

    kill('s3')
    const c = await controller.trainStep()
    expect(c.recoveries).toMatchObject([{ stage: 3, strategy: 'replica-copy', replacement: 'spare-3' }])
    // The replacement holds exactly the survivor's state (weights and optimiser) after the replayed step.
    expect(stateDictsBitEqual(await fullState('s3b'), await fullState('spare-3'))).toBe(true)

    const last = await controller.trainStep()
    expect(Number.isFinite(last.loss)).toBe(true)
    expect(last.loss).toBeLessThan(first.loss)
    expect(recovered.map((e) => e.strategy)).toEqual(['average', 'copy', 'replica-copy'])
    expect(controller.metrics()).toMatchObject({ stagesLost: 3, stepsCommitted: 6 })
  }, 80_000)
})
