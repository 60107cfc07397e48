/**
 * End-to-end: 8 NoLoCo replica processes over loopback ZeroMQ. Each sync is one pair exchange; one
 * replica is killed with SIGKILL mid-run and the others must keep going: the replica paired with it
 * falls back to a local outer step (counted), nobody blocks, and the survivors keep exchanging
 * among themselves. (After the kill many of their exchanges still fall back: their rounds and
 * membership views drift apart for a while — measured, open in the low-communication issue.)
 */
import { fork, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { ROOT } from './cli-harness.js'

interface Done { fallbacks: number, syncs: number, rounds: number, checksum: number, mean: number, weights: number[] }
interface Sync { round: number, mode: string, partner?: string }

const FIXTURE = join(ROOT, 'test', 'fixtures', 'noloco-replica.ts')
const children: ChildProcess[] = []
afterEach(() => { for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL') })

describe('NoLoCo over zmq (8 replica processes)', () => {
  it('keeps training when a replica is killed mid-exchange', async () => {
    const n = 8
    const rounds = 30
    const victim = 'r3'
    const ids = Array.from({ length: n }, (_, i) => `r${i}`)
    const addresses = new Map<string, string>()
    const syncs = new Map<string, Sync[]>(ids.map((id) => [id, []]))
    const done = new Map<string, Done>()
    let killedAtRound = -1
    let membersSent = false

    const finished = new Promise<void>((resolve, reject) => {
      for (const [i, id] of ids.entries()) {
        const child = fork(FIXTURE, [id, String(i), String(rounds), '2'], { cwd: ROOT, execArgv: ['--import', 'tsx'], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
        children.push(child)
        child.on('message', (m: { address?: string, sync?: Sync, done?: Done }) => {
          if (m.address !== undefined) {
            addresses.set(id, m.address)
            if (addresses.size === n) for (const c of children) c.send({ peers: Object.fromEntries(addresses) })
          }
          if (m.sync !== undefined) {
            syncs.get(id)?.push(m.sync)
            // Kill the victim in the middle of the run, right after one of its exchanges started the next.
            if (id === victim && m.sync.round === 10 && killedAtRound < 0) {
              killedAtRound = m.sync.round
              child.kill('SIGKILL')
            }
            // The first fallback against the dead replica is when a coordinator would have noticed it:
            // publish the new membership then, as it would.
            if (m.sync.mode === 'fallback' && m.sync.partner === victim && !membersSent) {
              membersSent = true
              for (const c of children) if (c.connected) c.send({ members: ids.filter((x) => x !== victim) })
            }
          }
          if (m.done !== undefined) {
            done.set(id, m.done)
            if (done.size === n - 1) resolve()
          }
        })
        child.on('exit', (code, signal) => { if (id !== victim && code !== 0) reject(new Error(`${id} exited with ${code ?? signal}`)) })
      }
    })
    await finished

    expect(killedAtRound).toBe(10)
    expect(membersSent).toBe(true)
    const survivors = ids.filter((id) => id !== victim)
    for (const id of survivors) {
      const d = done.get(id) as Done
      // Every survivor applied every outer step: none blocked on the dead replica.
      expect(d.syncs).toBe(rounds)
      expect(syncs.get(id)).toHaveLength(rounds)
    }
    // Whoever was paired with the victim after it died fell back to a local step, and it was counted.
    const fellBack = survivors.filter((id) => (syncs.get(id) as Sync[]).some((s) => s.round > killedAtRound && s.mode === 'fallback' && s.partner === victim))
    expect(fellBack.length).toBeGreaterThan(0)
    for (const id of fellBack) expect((done.get(id) as Done).fallbacks).toBeGreaterThan(0)
    // After the membership change the survivors still exchange with each other (one round per sync).
    // Most survivors still exchanged successfully with a live partner after the kill: a dead replica
    // costs its partners a fallback, not the whole job its communication.
    const exchangedLate = survivors.filter((id) => (syncs.get(id) as Sync[]).some((s) => s.round > killedAtRound && s.mode === 'group' && s.partner !== victim))
    expect(exchangedLate.length).toBeGreaterThanOrEqual(4)
  })
})
