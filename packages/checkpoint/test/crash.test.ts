import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { stateDictsBitEqual, type Endpoint } from '@phalanx/core'
import { zmqTransport } from '@phalanx/transport/zmq'
import { createCheckpointStore, createHolderClient } from '../src/index.js'
import { makeState, startFixture, tempDir, type FixtureProcess } from './helpers.js'

const FIXTURES = fileURLToPath(new URL('./fixtures/', import.meta.url))

/** A seeded PRNG so the kill points are the same on every run. */
function rng (seed: number): () => number {
  let s = seed >>> 0
  return () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 4294967296 }
}

type Child = FixtureProcess

function start (script: string, args: string[]): Child {
  return startFixture(join(FIXTURES, script), args)
}

async function kill9 (c: Child): Promise<void> {
  if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL')
  await c.exited
}

describe('crash consistency (kill -9 of real child processes)', () => {
  const children: Child[] = []
  const cleanups: Array<() => Promise<void>> = []
  afterEach(async () => {
    for (const c of children.splice(0)) await kill9(c)
    for (const f of cleanups.splice(0)) await f()
  })

  // snapshot: the L2 write and commit run in the snapshotter's worker thread, so most kills land
  // mid-write or mid-commit there; snapshot-main and save: on the process's main thread.
  it.each(['snapshot', 'snapshot-main', 'save'])('the newest committed L2 checkpoint is always restorable and bit-exact (%s)', async (mode) => {
    const { dir, cleanup } = await tempDir('phx-crash-')
    cleanups.push(cleanup)
    const random = rng(mode === 'save' ? 7 : mode === 'snapshot' ? 11 : 13)
    const store = createCheckpointStore({ dir, keep: 2 })
    let next = 1
    let lastCommitted = 0
    for (let i = 0; i < 4; i++) {
      const child = start('l2-writer.ts', [dir, String(next), mode])
      children.push(child)
      const path = mode === 'save' ? undefined : child.waitFor((l) => l.startsWith('path '))
      await child.waitFor((l) => l.startsWith('committed'))
      if (path !== undefined) expect(await path).toBe(mode === 'snapshot' ? 'path thread' : 'path main')
      // Kill at a seeded point in the next few commits: mid-copy, mid-write, mid-rename, or idle.
      await new Promise((resolve) => { setTimeout(resolve, 5 + random() * 120) })
      await kill9(child)
      lastCommitted = Math.max(lastCommitted, ...child.committed)
      const { info, state } = await store.restore()
      expect(info.step).toBeGreaterThanOrEqual(lastCommitted)
      expect(stateDictsBitEqual(state, makeState(info.step, [200_000, 3, 150_000, 70_001]))).toBe(true)
      expect(state.meta.step).toBe(info.step)
      next = info.step + 1
    }
  })

  it('the holder survives trainer crashes, serves restores, and re-indexes after its own kill -9', async () => {
    const { dir, cleanup } = await tempDir('phx-holder-crash-')
    cleanups.push(cleanup)
    const address = `ipc://${join(dir, 'holder.sock')}`
    const slots = join(dir, 'shm')
    let holder = start('holder.ts', [slots, address])
    children.push(holder)
    await holder.waitFor((l) => l.startsWith('ready'))
    const endpoint: Endpoint = await zmqTransport().open({ id: 'restorer', job: 'fixture' })
    cleanups.push(async () => { await endpoint.close({ lingerMs: 0 }) })
    const client = createHolderClient({ owner: 'rank-0', address, requestTimeoutMs: 5000 }, { endpoint })
    const random = rng(3)
    let next = 1
    let lastCommitted = 0
    for (let i = 0; i < 3; i++) {
      const trainer = start('trainer.ts', [address, String(next), `trainer-${i}`])
      children.push(trainer)
      await trainer.waitFor((l) => l.startsWith('committed'))
      await new Promise((resolve) => { setTimeout(resolve, 5 + random() * 100) })
      await kill9(trainer)
      lastCommitted = Math.max(lastCommitted, ...trainer.committed)
      const t0 = performance.now()
      const { held, state } = await client.restore()
      const ms = performance.now() - t0
      expect(held.step).toBeGreaterThanOrEqual(lastCommitted)
      expect(stateDictsBitEqual(state, makeState(held.step, [300_000, 5, 100_000]))).toBe(true)
      expect(ms).toBeLessThan(5000)
      next = held.step + 1
    }
    const before = await client.latest()
    await kill9(holder)
    holder = start('holder.ts', [slots, address])
    children.push(holder)
    const ready = await holder.waitFor((l) => l.startsWith('ready'))
    expect(ready).toContain(String(before?.step))
    const { held, state } = await client.restore()
    expect(held.step).toBe(before?.step)
    expect(stateDictsBitEqual(state, makeState(held.step, [300_000, 5, 100_000]))).toBe(true)
  })
})
