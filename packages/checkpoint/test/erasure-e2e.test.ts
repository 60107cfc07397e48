import { Writable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { stateDictsBitEqual, type Endpoint, type Logger } from '@phalanx/core'
import { zmqTransport } from '@phalanx/transport/zmq'
import { createCheckpointStore, restoreBest } from '../src/index.js'
import { chooseScheme, createErasureL1Source, decodeSnapshot, type ExchangeGroup } from '../src/erasure/index.js'
import { startFixture, tempDir, type FixtureProcess } from './helpers.js'
import { hostState } from './fixtures/erasure-state.js'

const FIXTURE = fileURLToPath(new URL('./fixtures/erasure-host.ts', import.meta.url))
const HOSTS = 6

interface Host extends FixtureProcess { id: string }

function startHost (index: number): Host {
  const id = `host-${index}`
  // Its own process group (detached), so a whole host — holder and anything it started — dies at once.
  return { id, ...startFixture(FIXTURE, [id, String(index)], { detached: true }) }
}

async function killGroup (h: Host): Promise<void> {
  if (h.proc.exitCode === null && h.proc.signalCode === null && h.proc.pid !== undefined) {
    try { process.kill(-h.proc.pid, 'SIGKILL') } catch { h.proc.kill('SIGKILL') }
  }
  await h.exited
}

function capture (): { logger: Logger, lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({ write (chunk: Buffer, _enc, cb) { lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>); cb() } })
  return { logger: pino({ level: 'info' }, stream) as unknown as Logger, lines }
}

describe('erasure e2e: 6 host processes over loopback zmq, RS(4,2)', () => {
  const hosts: Host[] = []
  const cleanups: Array<() => Promise<void>> = []
  afterEach(async () => {
    await Promise.all(hosts.splice(0).map(killGroup))
    for (const f of cleanups.splice(0).reverse()) await f()
  })

  it('rebuilds two SIGKILLed hosts bit-exact from memory, and falls back to L2 when a third dies', async () => {
    for (let i = 0; i < HOSTS; i++) hosts.push(startHost(i))
    const addresses: Record<string, string> = {}
    await Promise.all(hosts.map(async (h) => { addresses[h.id] = (await h.waitFor((l) => l.startsWith('address '))).slice(8) }))
    const group: ExchangeGroup = { members: hosts.map((h) => h.id), scheme: chooseScheme(HOSTS) }
    expect(group.scheme).toEqual({ kind: 'rs', k: 4, m: 2 })
    const config = { group, addresses, t0: Date.now(), slotMs: 250 }
    for (const h of hosts) h.proc.stdin?.write(`${JSON.stringify(config)}\n`)
    // Three committed snapshots everywhere before the failures.
    let timer: NodeJS.Timeout | undefined
    try {
      await Promise.race([
        Promise.all(hosts.map(async (h) => { for (let i = 0; i < 3; i++) await h.waitFor((l) => l.startsWith('committed ')) })),
        new Promise((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`hosts did not commit 3 snapshots in 40 s: ${hosts.map((h) => `${h.id}: ${h.tail.join(' | ')}`).join('; ')}`)) }, 40_000) })
      ])
    } finally { clearTimeout(timer) }

    // An L2 checkpoint of host-1 from long ago: the fallback when L1 cannot help.
    const { dir, cleanup } = await tempDir('phx-erasure-e2e-')
    cleanups.push(cleanup)
    const store = createCheckpointStore({ dir })
    await store.save(hostState(1, 1), { step: 1 })

    // Two whole hosts die at once, mid-run.
    const before = Math.max(...hosts.flatMap((h) => h.committed))
    const lost = [hosts[1] as Host, hosts[4] as Host]
    await Promise.all(lost.map(killGroup))

    const endpoint: Endpoint = await zmqTransport().open({ id: 'replacement', job: 'erasure-e2e', requestTimeoutMs: 5000 })
    cleanups.push(async () => { await endpoint.close({ lingerMs: 0 }) })
    for (const [id, address] of Object.entries(addresses)) endpoint.connect(id, address)
    for (const h of lost) {
      const index = hosts.indexOf(h)
      const l1 = createErasureL1Source({ group, owner: h.id, probeTimeoutMs: 1000 }, { endpoint })
      const report = await l1.recover()
      expect(report.version).toBeGreaterThanOrEqual(before)
      expect(report.alive).toHaveLength(4)
      // Each lost host held a data piece of the other's snapshot: that piece is decoded from parity.
      expect(report.chunksRebuilt).toBeGreaterThan(0)
      const state = decodeSnapshot(report.bytes)
      expect(state.meta.step).toBe(report.version * 100 + index)
      expect(stateDictsBitEqual(state, hostState(report.version, index))).toBe(true)
    }

    // A third host dies: 3 > m = 2, the in-memory snapshot is gone; restoreBest says so and uses L2.
    await killGroup(hosts[2] as Host)
    const { logger, lines } = capture()
    const l1 = createErasureL1Source({ group, owner: 'host-1', probeTimeoutMs: 1000 }, { endpoint, logger })
    await expect(l1.recover()).rejects.toMatchObject({ name: 'InsufficientShardsError' })
    const best = await restoreBest({ l1, store }, { logger })
    expect(best.tier).toBe('L2')
    expect(best.step).toBe(1)
    expect(stateDictsBitEqual(best.state, hostState(1, 1))).toBe(true)
    expect(best.skipped.find((s) => s.tier === 'L1')?.error).toMatch(/InsufficientShardsError: 3 of 6 members .* restore from L2/)
    expect(lines.some((l) => l.level === 50 && String(l.msg).includes('fall back to the L2 checkpoint'))).toBe(true)
  }, 90_000)
})
