import { appendFileSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { assignMicroBatches, createFailureDetector, createWalStateStore, recoverState, shardRange } from '../src/index.js'
import { createFakeClock } from '@phalanx/core'

const dirs: string[] = []
afterEach(() => { for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true }) })
const walPath = (): string => { const d = mkdtempSync(join(tmpdir(), 'wal-')); dirs.push(d); return join(d, 'wal.log') }

describe('WAL state store', () => {
  it('replays appended records after reopening and folds them into the job state', async () => {
    const path = walPath()
    const a = createWalStateStore({ path })
    await a.append({ type: 'epoch', epoch: 1, members: [{ id: 'w1', address: 'w1' }] }, { sync: true })
    await a.append({ type: 'commit', step: 0, epoch: 1, cursor: 32 }, { sync: true })
    await a.append({ type: 'commit', step: 1, epoch: 1, cursor: 64 }, { sync: true })
    await a.close()
    const b = createWalStateStore({ path })
    expect(recoverState(await b.replay())).toEqual({ epoch: 1, committed: 2, cursor: 64, members: [{ id: 'w1', address: 'w1' }] })
    await b.close()
  })

  it('truncates a torn tail and keeps every whole record before it', async () => {
    const path = walPath()
    const a = createWalStateStore({ path })
    await a.append({ type: 'commit', step: 0, epoch: 1, cursor: 8 }, { sync: true })
    await a.close()
    const good = statSync(path).size
    appendFileSync(path, Buffer.from([40, 0, 0, 0, 1, 2, 3, 4, 123, 34]))
    const b = createWalStateStore({ path })
    expect((await b.replay()).length).toBe(1)
    expect(statSync(path).size).toBe(good)
    await b.append({ type: 'commit', step: 1, epoch: 1, cursor: 16 }, { sync: true })
    await b.close()
    const c = createWalStateStore({ path })
    expect(recoverState(await c.replay()).committed).toBe(2)
    await c.close()
  })

  it('detects a corrupt record by its CRC32C and drops it and everything after', async () => {
    const path = walPath()
    const a = createWalStateStore({ path })
    await a.append({ type: 'commit', step: 0, epoch: 1, cursor: 8 }, { sync: true })
    await a.append({ type: 'commit', step: 1, epoch: 1, cursor: 16 }, { sync: true })
    await a.close()
    const bytes = readFileSync(path)
    bytes[bytes.length - 3] = (bytes[bytes.length - 3] as number) ^ 0x01
    writeFileSync(path, bytes)
    const b = createWalStateStore({ path })
    expect(recoverState(await b.replay()).committed).toBe(1)
    await b.close()
  })

  it('compacts into one snapshot record that survives reopening', async () => {
    const path = walPath()
    const a = createWalStateStore({ path })
    for (let s = 0; s < 5; s++) await a.append({ type: 'commit', step: s, epoch: 2, cursor: (s + 1) * 8 })
    await a.compact({ type: 'snapshot', epoch: 2, committed: 5, cursor: 40, members: [] })
    await a.append({ type: 'commit', step: 5, epoch: 2, cursor: 48 }, { sync: true })
    await a.close()
    const b = createWalStateStore({ path })
    const records = await b.replay()
    expect(records.map((r) => r.type)).toEqual(['snapshot', 'commit'])
    expect(recoverState(records).committed).toBe(6)
    await b.close()
  })
})

describe('failure detector (fake clock)', () => {
  it('suspects a peer only after suspectAfterMs of silence', () => {
    const clock = createFakeClock(1000)
    const d = createFailureDetector({ suspectAfterMs: 500, stepTimeoutMs: 10_000 }, { clock })
    d.heard('a')
    d.heard('b')
    clock.advance(300)
    d.heard('b')
    expect(d.silent()).toEqual([])
    clock.advance(200)
    expect(d.silent()).toEqual(['a'])
    d.forget('a')
    expect(d.silent()).toEqual([])
  })

  it('derives the hang deadline from the median step time, floored and capped', () => {
    const clock = createFakeClock()
    const d = createFailureDetector({ suspectAfterMs: 500, stepTimeoutMs: 10_000, hangFactor: 3, hangFloorMs: 1000 }, { clock })
    expect(d.stepDeadlineMs()).toBe(10_000)
    for (const ms of [100, 120, 90]) d.recordStep(ms)
    expect(d.stepDeadlineMs()).toBe(1000)
    for (let i = 0; i < 16; i++) d.recordStep(2000)
    expect(d.stepDeadlineMs()).toBe(6000)
    for (let i = 0; i < 16; i++) d.recordStep(9000)
    expect(d.stepDeadlineMs()).toBe(10_000)
  })
})

describe('scheduling', () => {
  it('splits micro-batches by speed, at least one each, deterministically', () => {
    expect(assignMicroBatches(8, [1, 1])).toEqual([4, 4])
    expect(assignMicroBatches(8, [3, 1])).toEqual([6, 2])
    expect(assignMicroBatches(3, [100, 1, 1])).toEqual([1, 1, 1])
    expect(assignMicroBatches(7, [Number.NaN, 1, 1])).toEqual([3, 2, 2])
    expect(() => assignMicroBatches(2, [1, 1, 1])).toThrow(/cannot give/)
  })

  it('covers every coordinate exactly once with contiguous shards', () => {
    const ranges = [0, 1, 2].map((r) => shardRange(10, 3, r))
    expect(ranges).toEqual([[0, 3], [3, 6], [6, 10]])
  })
})
