import { createFakeClock } from '@phalanx/core'
import { describe, expect, it } from 'vitest'
import { chaosStorage, comparableEvent, createByzantineHook, createChaosAgent, createChaosLog, createLabelFlipHook, skewedClock, type ChaosStorageTarget } from '../src/index.js'

function memoryStorage (): ChaosStorageTarget & { files: Map<string, Uint8Array> } {
  const files = new Map<string, Uint8Array>()
  const join = (parts: readonly Uint8Array[]): Uint8Array => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0))
    let off = 0
    for (const p of parts) { out.set(p, off); off += p.byteLength }
    return out
  }
  return {
    files,
    async writeFile (path, parts) { files.set(path, join(parts)) },
    async writeAtomic (path, data) { files.set(path, data.slice()) },
    async rename (from, to) { const d = files.get(from); if (d !== undefined) { files.set(to, d); files.delete(from) } }
  }
}

describe('skewedClock', () => {
  it('adds an offset, drifts, scales timers, and stays monotonic', () => {
    const inner = createFakeClock(1000)
    const log = createChaosLog()
    const clock = skewedClock(inner, { offsetMs: 500, driftPpm: 100_000 }, { log, target: 'worker-1' })
    expect(clock.now()).toBe(1500)
    inner.advance(100)
    expect(clock.now()).toBeCloseTo(1610, 6)
    let fired = false
    clock.setTimeout(() => { fired = true }, 110)
    inner.advance(99)
    expect(fired).toBe(false)
    inner.advance(1)
    expect(fired).toBe(true)
    const before = clock.now()
    clock.setSkew({ offsetMs: -10_000 })
    expect(clock.now()).toBeGreaterThanOrEqual(before)
    expect(log.events().map((e) => e.kind)).toEqual(['skew', 'skew'])
    expect(() => clock.setSkew({ driftPpm: -2e6 })).toThrow(/driftPpm/)
  })
})

describe('chaosStorage', () => {
  it('fails with ENOSPC, nothing written, and only `count` times', async () => {
    const inner = memoryStorage()
    const s = chaosStorage(inner, { seed: 1, rules: [{ kind: 'enospc', path: '*.bin', count: 1 }] })
    await expect(s.writeFile('a.bin', [new Uint8Array([1])])).rejects.toMatchObject({ code: 'ENOSPC' })
    expect(inner.files.has('a.bin')).toBe(false)
    await s.writeFile('a.bin', [new Uint8Array([1])])
    await s.writeFile('manifest.json', [new Uint8Array([2])])
    expect([...inner.files.keys()].sort()).toEqual(['a.bin', 'manifest.json'])
    expect(s.log.counts()).toEqual({ 'disk:enospc': 1 })
  })

  it('truncates and corrupts what it writes, never the caller\'s buffers, reproducibly', async () => {
    const write = async (): Promise<Uint8Array[]> => {
      const inner = memoryStorage()
      const s = chaosStorage(inner, { seed: 9, rules: [{ kind: 'truncate', path: 'chunk-0', keepFraction: 0.25 }, { kind: 'corrupt', path: 'chunk-1', bits: 2 }] })
      const data = Uint8Array.from({ length: 64 }, (_, i) => i)
      await s.writeFile('chunk-0', [data.subarray(0, 32), data.subarray(32)])
      await s.writeAtomic('chunk-1', data)
      expect(data).toEqual(Uint8Array.from({ length: 64 }, (_, i) => i))
      return [inner.files.get('chunk-0') as Uint8Array, inner.files.get('chunk-1') as Uint8Array]
    }
    const [truncated, corrupted] = await write()
    expect(truncated).toEqual(Uint8Array.from({ length: 16 }, (_, i) => i))
    let bits = 0
    for (let i = 0; i < 64; i++) for (let b = 0; b < 8; b++) if ((((corrupted as Uint8Array)[i]! ^ i) >> b) & 1) bits++
    expect(bits === 2 || bits === 0).toBe(true)
    expect(bits).toBe(2)
    expect(await write()).toEqual([truncated, corrupted])
  })

  it('slows writes down on its clock', async () => {
    const clock = createFakeClock(0)
    const inner = memoryStorage()
    const s = chaosStorage(inner, { seed: 1, rules: [{ kind: 'slow-fsync', delayMs: 200 }] }, { clock })
    const p = s.writeFile('x', [new Uint8Array([1])])
    await Promise.resolve()
    expect(inner.files.has('x')).toBe(false)
    clock.advance(200)
    await p
    expect(inner.files.has('x')).toBe(true)
  })
})

describe('Byzantine hooks', () => {
  it('replaces a worker\'s gradients by the attack from @phalanx/aggregate and logs each step', () => {
    const log = createChaosLog()
    const hook = createByzantineHook({ attack: { name: 'SignFlip' }, fromStep: 2 }, { log })
    const grads = [Float32Array.from([1, 2]), Float32Array.from([3, 4])]
    expect(hook(grads, { step: 1, worker: 'w' })).toEqual(grads)
    const out = hook(grads, { step: 2, worker: 'w' })
    expect(out.map((g) => Array.from(g))).toEqual([[-2, -3], [-2, -3]])
    expect(log.events().map(comparableEvent)).toEqual([{ index: 0, class: 'byzantine', kind: 'SignFlipping', target: 'w', step: 2, details: { microBatches: 2 } }])
    expect(() => createByzantineHook({ attack: { name: 'Nope' } })).toThrow(/Attacks: SignFlipping/)
  })

  it('flips labels', () => {
    const hook = createLabelFlipHook({ classes: 10 })
    expect(Array.from(hook([0, 3, 9], { step: 0, worker: 'w' }))).toEqual([9, 6, 0])
  })

  it('an agent applies and reverts Byzantine behaviour and refuses faults it was not composed for', async () => {
    const crashes: string[] = []
    const agent = createChaosAgent({ id: 'w' }, { crash: (m) => crashes.push(m) })
    const g = [Float32Array.from([1])]
    const h = agent.apply({ kind: 'byzantine', attack: { name: 'SignFlipping' }, seed: 1 })
    expect(Array.from(agent.gradientHook(g, { step: 0, worker: 'w' })[0] as Float32Array)).toEqual([-1])
    await h.revert()
    expect(Array.from(agent.gradientHook(g, { step: 0, worker: 'w' })[0] as Float32Array)).toEqual([1])
    agent.apply({ kind: 'crash' })
    expect(crashes).toEqual(['chaos: crash injected into w'])
    expect(() => agent.apply({ kind: 'network', rule: { drop: 1 } })).toThrow(/needs the process to be composed with a chaos transport/)
    expect(() => agent.apply({ kind: 'stall', ms: 1e9 })).toThrow(/outside/)
  })
})
