import { describe, expect, it } from 'vitest'
import { createChildChaos, splitJobConfig, type ChaosAckEvent, type ChildChaos } from '../src/index.js'

function harness (recovery = true): { acks: ChaosAckEvent[], deliver: (m: unknown) => void, dispose: () => void, overrides: { hangFloorMs?: number }, chaos: ChildChaos } {
  const acks: ChaosAckEvent[] = []
  let listener: ((m: unknown) => void) | undefined
  const chaos = createChildChaos({ id: 'worker-1', seed: 3, recovery }, {
    send: (e) => { acks.push(e) },
    subscribe: (l) => { listener = l; return () => { listener = undefined } }
  })
  return { acks, deliver: (m) => { listener?.(m) }, dispose: () => { chaos.dispose() }, overrides: chaos.coordinatorOverrides, chaos }
}

describe('chaos child glue', () => {
  it('refuses what a launched child cannot do, with a reason, and ignores foreign messages', () => {
    const h = harness()
    try {
      h.deliver({ type: 'progress', step: 1 })
      // No checkpoint storage wrapped: disk faults have nothing to act on.
      h.deliver({ type: 'chaos', ref: 1, fault: { kind: 'disk', rule: { kind: 'enospc' } } })
      // No endpoint opened yet: network rules have no transport to act on.
      h.deliver({ type: 'chaos', ref: 2, fault: { kind: 'network', rule: { delayMs: 1 } } })
      expect(h.acks).toEqual([
        { type: 'chaos-ack', ref: 1, ok: false, error: expect.stringMatching(/^InvalidParametersError: .*storage/) },
        { type: 'chaos-ack', ref: 2, ok: false, error: expect.stringMatching(/^InvalidParametersError: .*transport/) }
      ])
    } finally {
      h.dispose()
    }
  })

  it('acknowledges an applied fault and its revert, and stops listening once disposed', async () => {
    const h = harness()
    h.deliver({ type: 'chaos', ref: 7, fault: { kind: 'label-flip', classes: 10 } })
    h.deliver({ type: 'chaos-revert', ref: 7 })
    await expect.poll(() => h.acks.length).toBe(2)
    expect(h.acks.map((a) => [a.ref, a.ok])).toEqual([[7, true], [7, true]])
    h.dispose()
    h.deliver({ type: 'chaos-revert', ref: 8 })
    expect(h.acks).toHaveLength(2)
  })

  it('skews the process clock, attacks gradients and labels through its hooks, and fails wrapped storage writes', async () => {
    const h = harness()
    try {
      const before = h.chaos.clock.now()
      h.deliver({ type: 'chaos', ref: 1, fault: { kind: 'clock-skew', skew: { offsetMs: 60_000 } } })
      expect(h.chaos.clock.now() - before).toBeGreaterThanOrEqual(60_000)

      const g = [Float32Array.of(1, -2), Float32Array.of(3, 4)]
      expect(h.chaos.gradientHook(g, { step: 0, worker: 'worker-1' }).map((x) => Array.from(x))).toEqual([[1, -2], [3, 4]])
      // SignFlipping: every reported gradient becomes minus the mean of this worker's gradients.
      h.deliver({ type: 'chaos', ref: 2, fault: { kind: 'byzantine', attack: { name: 'SignFlipping' }, seed: 1 } })
      expect(h.chaos.gradientHook(g, { step: 1, worker: 'worker-1' }).map((x) => Array.from(x))).toEqual([[-2, -1], [-2, -1]])
      h.deliver({ type: 'chaos', ref: 3, fault: { kind: 'label-flip', classes: 2 } })
      expect(Array.from(h.chaos.labelHook([0, 1, 1], { step: 1, worker: 'worker-1' }))).toEqual([1, 0, 0])

      const written: string[] = []
      const storage = h.chaos.wrapStorage({
        writeFile: async (path: string, _parts: readonly Uint8Array[]) => { written.push(path) },
        writeAtomic: async (path: string, _data: Uint8Array) => { written.push(path) },
        rename: async () => {}
      })
      h.deliver({ type: 'chaos', ref: 4, fault: { kind: 'disk', rule: { kind: 'enospc', path: '*.bin' } } })
      await expect(storage.writeFile('step-1/rank-00000.bin', [new Uint8Array(4)])).rejects.toMatchObject({ code: 'ENOSPC' })
      await storage.writeAtomic('LATEST', new Uint8Array(1))
      expect(written).toEqual(['LATEST'])
      expect(h.acks.map((a) => [a.ref, a.ok])).toEqual([[1, true], [2, true], [3, true], [4, true]])
    } finally {
      h.dispose()
    }
  })

  it('switches the hang detector off only when recovery is disabled', () => {
    const on = harness(true)
    const off = harness(false)
    try {
      expect(on.overrides).toEqual({})
      expect(off.overrides.hangFloorMs).toBeGreaterThan(3_600_000)
    } finally {
      on.dispose()
      off.dispose()
    }
  })

  it('splits a scenario job.config into job, options and configuration overrides', () => {
    expect(splitJobConfig({ job: 'linear', jobOptions: { stepDelayMs: 3 }, timeouts: { suspectAfterMs: 800 } }))
      .toEqual({ job: 'linear', jobOptions: { stepDelayMs: 3 }, overrides: { timeouts: { suspectAfterMs: 800 } } })
    expect(() => splitJobConfig({ job: 3 })).toThrow(expect.objectContaining({ name: 'InvalidConfigError' }))
    expect(splitJobConfig({ snapshots: true, checkpoints: { every: 4 } })).toEqual({ snapshots: true, checkpointEvery: 4, overrides: {} })
    expect(splitJobConfig({ checkpoints: true }).checkpointEvery).toBe(5)
    expect(() => splitJobConfig({ checkpoints: { every: 0 } })).toThrow(expect.objectContaining({ name: 'InvalidConfigError' }))
  })
})
