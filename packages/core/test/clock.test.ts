import { describe, expect, it } from 'vitest'
import { createFakeClock, systemClock } from '../src/index.js'

describe('fake clock', () => {
  it('fires timers in time order when advanced', () => {
    const clock = createFakeClock(1000)
    const fired: string[] = []
    clock.setTimeout(() => fired.push('b'), 20)
    clock.setTimeout(() => fired.push('a'), 10)
    const c = clock.setTimeout(() => fired.push('c'), 15)
    c.cancel()
    clock.advance(9)
    expect(fired).toEqual([])
    clock.advance(11)
    expect(fired).toEqual(['a', 'b'])
    expect(clock.now()).toBe(1020)
    expect(clock.pending()).toBe(0)
  })

  it('repeats intervals and fires timers scheduled by timers', () => {
    const clock = createFakeClock()
    const ticks: number[] = []
    const h = clock.setInterval(() => {
      ticks.push(clock.now())
      if (ticks.length === 2) clock.setTimeout(() => ticks.push(-clock.now()), 5)
    }, 10)
    clock.advance(35)
    h.cancel()
    expect(ticks).toEqual([10, 20, -25, 30])
    expect(clock.next()).toBe(false)
  })

  it('resolves sleep on advance and rejects it on abort', async () => {
    const clock = createFakeClock()
    const slept = clock.sleep(100)
    clock.advance(100)
    await expect(slept).resolves.toBeUndefined()
    const controller = new AbortController()
    const aborted = clock.sleep(100, { signal: controller.signal })
    controller.abort()
    await expect(aborted).rejects.toMatchObject({ name: 'AbortError' })
    expect(clock.pending()).toBe(0)
  })
})

describe('system clock', () => {
  it('is monotonic and sleeps', async () => {
    const clock = systemClock()
    const a = clock.now()
    await clock.sleep(5)
    expect(clock.now()).toBeGreaterThanOrEqual(a + 4)
    const controller = new AbortController()
    controller.abort()
    await expect(clock.sleep(10, { signal: controller.signal })).rejects.toMatchObject({ name: 'AbortError' })
  })
})
