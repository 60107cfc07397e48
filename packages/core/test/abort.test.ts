import { describe, expect, it } from 'vitest'
import { raceSignal, throwIfAborted } from '../src/index.js'

describe('abort helpers', () => {
  it('races a promise against a signal and cleans up its listener', async () => {
    const controller = new AbortController()
    let removed = 0
    const signal = controller.signal
    const orig = signal.removeEventListener.bind(signal)
    signal.removeEventListener = ((...args: Parameters<typeof orig>) => { removed++; orig(...args) }) as typeof orig
    await expect(raceSignal(Promise.resolve(5), signal)).resolves.toBe(5)
    expect(removed).toBe(1)
    const pending = raceSignal(new Promise(() => {}), signal)
    controller.abort(new Error('stop'))
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' })
    expect(() => { throwIfAborted(signal) }).toThrow(expect.objectContaining({ name: 'AbortError' }))
    expect(() => { throwIfAborted(undefined) }).not.toThrow()
  })
})
