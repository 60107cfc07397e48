/**
 * End-to-end: three coordinator replicas elected through etcd, three workers following the leader.
 * The leader is killed with SIGKILL mid-run; a standby takes over from the etcd state store, the
 * workers re-route to it without restarting, and the job ends with weights bit-identical to the
 * fault-free reference (so no committed step was lost or applied twice).
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { freePort } from '@phalanx/cli'
import { hasEtcd, startEtcd, type EtcdServer } from '../packages/coordinator/test/etcd-server.js'
import { JOB, referenceChecksum } from './cli-harness.js'
import { startHaJob, waitForLeaderStatus, workerResult, type HaJob } from './ops-harness.js'

const CONFIG = ['--global-batch', String(JOB.globalBatch), '--micro-batch', String(JOB.microBatch), '--seed', String(JOB.seed)]

describe.skipIf(!hasEtcd)('coordinator high availability on etcd (needs etcd: bash scripts/ci-services.sh)', () => {
  let etcd: EtcdServer | undefined
  let job: HaJob | undefined
  let dir: string | undefined
  let reference = 0
  beforeAll(() => { reference = referenceChecksum() })
  afterEach(async () => {
    job?.killAll()
    await etcd?.stop()
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
    job = undefined; etcd = undefined; dir = undefined
  })

  it('survives kill -9 of the leading coordinator: a standby takes over, workers follow, weights match', async () => {
    etcd = await startEtcd()
    dir = mkdtempSync(join(tmpdir(), 'phalanx-ha-'))
    const ports = [await freePort(), await freePort(), await freePort()]
    job = startHaJob({ etcdUrl: etcd.url, dir, replicas: 3, workers: 3, ports, steps: JOB.steps, config: CONFIG, job: ['--job', 'linear', '--job-opt', 'stepDelayMs=3'] })
    const first = await waitForLeaderStatus(job, (s) => s.committed >= 40, 60_000)
    const killedAt = first.status.committed
    const t0 = performance.now()
    job.replicas[first.index]?.proc.kill('SIGKILL')
    const next = await waitForLeaderStatus(job, (s) => s.committed > killedAt, 30_000, [first.index])
    const failoverMs = performance.now() - t0
    expect(next.index).not.toBe(first.index)
    const results = await Promise.all(job.workers.map(async (w) => await w.exited))
    expect(results.map((r) => r.code), job.workers.map((w) => w.output()).join('\n')).toEqual([0, 0, 0])
    for (const w of job.workers) expect(workerResult(dir, w.name)).toEqual({ steps: JOB.steps, checksum: reference })
    // The standbys and the new leader exit cleanly once the job is recorded as done in etcd.
    const replicas = await Promise.all(job.replicas.map(async (r) => await r.exited))
    expect(replicas[first.index]?.signal).toBe('SIGKILL')
    for (const [i, r] of replicas.entries()) if (i !== first.index) expect(r.code, job.replicas[i]?.output()).toBe(0)
    expect(failoverMs).toBeLessThan(10_000)
  })
})
