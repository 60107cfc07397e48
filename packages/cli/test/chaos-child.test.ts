import { describe, expect, it } from 'vitest'
import { createChildChaos, splitJobConfig, type ChaosAckEvent } from '../src/index.js'

function harness (recovery = true): { acks: ChaosAckEvent[], deliver: (m: unknown) => void, dispose: () => void, overrides: { hangFloorMs?: number } } {
  const acks: ChaosAckEvent[] = []
  let listener: ((m: unknown) => void) | undefined
  const chaos = createChildChaos({ id: 'worker-1', seed: 3, recovery }, {
    send: (e) => { acks.push(e) },
    subscribe: (l) => { listener = l; return () => { listener = undefined } }
  })
  return { acks, deliver: (m) => { listener?.(m) }, dispose: () => { chaos.dispose() }, overrides: chaos.coordinatorOverrides }
}

describe('chaos child glue', () => {
  it('refuses what a launched child cannot do, with a reason, and ignores foreign messages', () => {
    const h = harness()
    try {
      h.deliver({ type: 'progress', step: 1 })
      h.deliver({ type: 'chaos', ref: 1, fault: { kind: 'clock-skew', skew: { offsetMs: 5 } } })
      // No endpoint opened yet: network rules have no transport to act on.
      h.deliver({ type: 'chaos', ref: 2, fault: { kind: 'network', rule: { delayMs: 1 } } })
      expect(h.acks).toEqual([
        { type: 'chaos-ack', ref: 1, ok: false, error: expect.stringMatching(/^InvalidParametersError: .*clock/) },
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
  })
})
