import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createEpochFence, ElasticMessage, ELASTIC_FENCE_EXEMPT, type Endpoint } from '@phalanx/core'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { chromium, type Browser } from 'playwright-core'
import { afterEach, describe, expect, it } from 'vitest'
import { createCoordinator, type Coordinator } from '../src/index.js'

const CHROMIUM = '/usr/bin/chromium'
const hasChromium = existsSync(CHROMIUM) && spawnSync(CHROMIUM, ['--version'], { encoding: 'utf8' }).status === 0
// The screenshot is a test artifact (test-artifacts/, ignored by git); PHALANX_UPDATE_DOCS=1 refreshes
// the copy linked from docs/operations.md instead.
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
const SCREENSHOT = process.env.PHALANX_UPDATE_DOCS === '1'
  ? join(ROOT, 'docs', 'img', 'dashboard.png')
  : join(ROOT, 'test-artifacts', 'dashboard.png')

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

async function liveJob (): Promise<{ coordinator: Coordinator, workers: Endpoint[], step: (members: Endpoint[]) => Promise<void> }> {
  const transport = memoryTransport({ network: createMemoryNetwork() })
  const fence = createEpochFence({ exempt: ELASTIC_FENCE_EXEMPT })
  const endpoint = await transport.open({ id: 'coordinator', job: 'dash', fence })
  cleanups.push(async () => { await endpoint.close() })
  const coordinator = createCoordinator({
    jobId: 'dashboard-demo', minWorkers: 2, maxWorkers: 3, lastCallMs: 10_000, globalBatch: 48, microBatch: 8, steps: 1000, deterministic: true,
    heartbeatIntervalMs: 100, suspectAfterMs: 60_000, stepTimeoutMs: 60_000, rendezvousTimeoutMs: 60_000, rebalanceEvery: 0, metricsPort: 0, hangFloorMs: 60_000
  }, { endpoint, fence })
  cleanups.push(async () => { await coordinator.stop() })
  await coordinator.start()
  const workers: Endpoint[] = []
  for (const id of ['worker-1', 'worker-2', 'worker-3']) {
    const w = await transport.open({ id, job: 'dash' })
    cleanups.push(async () => { await w.close() })
    w.connect('coordinator', 'coordinator')
    for (const t of [ElasticMessage.quorum, ElasticMessage.commit, ElasticMessage.done]) w.handle(t, () => undefined)
    workers.push(w)
    await w.request('coordinator', { type: ElasticMessage.join, body: { id, address: id, incarnation: `${id}-1`, size: 10, committed: 0 } })
  }
  let n = 0
  const step = async (members: Endpoint[]): Promise<void> => {
    const { epoch, committed } = coordinator.status()
    const done = new Promise<void>((resolve) => { const off = coordinator.on('commit', () => { off(); resolve() }) })
    const per = 6 / members.length
    n++
    for (const w of members) {
      await w.send('coordinator', { type: ElasticMessage.ready, epoch, step: committed, body: { checksum: 1, computeMs: 20 + (n % 7), microBatches: per, loss: 2 * Math.exp(-n / 25) + 0.05 * Math.sin(n) } })
    }
    await done
  }
  return { coordinator, workers, step }
}

describe.skipIf(!hasChromium)('dashboard in headless Chromium (needs /usr/bin/chromium: bash scripts/ci-services.sh)', () => {
  it('serves the live job and updates when a worker is lost', async () => {
    const { coordinator, workers, step } = await liveJob()
    for (let i = 0; i < 40; i++) await step(workers)
    const browser: Browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync']
    })
    cleanups.push(async () => { await browser.close() })
    const page = await browser.newPage({ viewport: { width: 1200, height: 860 } })
    await page.goto(coordinator.metricsUrl as string)
    await page.locator('#committed', { hasText: /^40$/ }).waitFor({ timeout: 10_000 })
    expect(await page.locator('#workers tbody tr').count()).toBe(3)
    expect(await page.locator('#loss canvas').count()).toBe(1)
    // Lose a worker (as its disconnect would: the coordinator removes it); the survivors commit on.
    const shrunk = new Promise<void>((resolve) => { const off = coordinator.on('quorum', (e) => { if (e.members.length === 2) { off(); resolve() } }) })
    await workers[2]?.close()
    await coordinator.evict('worker-3', 'disconnect')
    await shrunk
    for (let i = 0; i < 30; i++) await step(workers.slice(0, 2))
    await page.locator('#nrec', { hasText: /^1$/ }).waitFor({ timeout: 10_000 })
    await expect(page.locator('tr[data-worker="worker-3"] td.bad').textContent()).resolves.toContain('disconnect')
    expect(await page.locator('#recoveries tbody tr').count()).toBe(1)
    mkdirSync(dirname(SCREENSHOT), { recursive: true })
    await page.screenshot({ path: SCREENSHOT, fullPage: true })
    // Read-only: anything but GET is refused.
    const post = await fetch(coordinator.metricsUrl as string + '/status', { method: 'POST' })
    expect(post.status).toBe(405)
  }, 60_000)

  it('requires the token when one is set', async () => {
    const transport = memoryTransport({ network: createMemoryNetwork() })
    const endpoint = await transport.open({ id: 'coordinator', job: 'dash' })
    cleanups.push(async () => { await endpoint.close() })
    const coordinator = createCoordinator({
      jobId: 'tok', minWorkers: 1, maxWorkers: 1, globalBatch: 8, microBatch: 8, steps: 10, deterministic: true,
      heartbeatIntervalMs: 100, suspectAfterMs: 60_000, stepTimeoutMs: 60_000, rendezvousTimeoutMs: 60_000, metricsPort: 0, metricsToken: 's3cret'
    }, { endpoint })
    cleanups.push(async () => { await coordinator.stop() })
    await coordinator.start()
    const url = coordinator.metricsUrl as string
    expect((await fetch(url + '/dashboard.json')).status).toBe(401)
    expect((await fetch(url + '/dashboard.json?token=wrong')).status).toBe(401)
    const ok = await fetch(url + '/dashboard.json', { headers: { authorization: 'Bearer s3cret' } })
    expect(ok.status).toBe(200)
    expect(await ok.json()).toMatchObject({ job: 'tok', status: { phase: 'rendezvous' } })
  })
})
