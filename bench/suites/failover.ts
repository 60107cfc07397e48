/**
 * Coordinator failover time: three coordinator replicas on etcd (lease TTL 1 s), three workers of
 * the linear job; the leader is killed with SIGKILL ≥ 10 times (each killed replica is restarted as
 * a standby). Failover time = from the kill to the next step committed by the new leader.
 * Target: p99 ≤ 3 s. Needs the etcd binary (bash scripts/ci-services.sh).
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from '@phalanx/cli'
import { startEtcd } from '../../packages/coordinator/test/etcd-server.js'
import { startHaJob, waitForLeaderStatus } from '../../test/ops-harness.js'
import { median, progress, quantile, writeBenchResult } from '../report.js'

const KILLS = Number(process.env.FAILOVER_KILLS ?? 12)
const etcd = await startEtcd()
const dir = mkdtempSync(join(tmpdir(), 'phalanx-failover-'))
const ports = [await freePort(), await freePort(), await freePort()]
const job = startHaJob({
  etcdUrl: etcd.url, dir, replicas: 3, workers: 3, ports, steps: 100_000,
  config: ['--global-batch', '64', '--micro-batch', '8', '--seed', '7'], job: ['--job', 'linear', '--job-opt', 'stepDelayMs=5'], leaseTtl: 1
})
const samples: number[] = []
try {
  let last = await waitForLeaderStatus(job, (s) => s.committed >= 20, 60_000)
  for (let k = 0; k < KILLS; k++) {
    const killedAt = last.status.committed
    const t0 = performance.now()
    const victim = last.index
    job.replicas[victim]?.proc.kill('SIGKILL')
    await job.replicas[victim]?.exited
    const next = await waitForLeaderStatus(job, (s) => s.committed > killedAt, 30_000, [victim])
    samples.push(performance.now() - t0)
    progress(`kill ${k + 1}/${KILLS}: replica ${victim} → ${next.index}, next commit after ${Math.round(samples.at(-1) as number)} ms`)
    job.startReplica(victim)
    // Let the new leader settle (and the restarted standby campaign) before the next kill.
    last = await waitForLeaderStatus(job, (s) => s.committed >= next.status.committed + 20, 30_000, [victim])
  }
} finally {
  job.killAll()
  await etcd.stop()
  rmSync(dir, { recursive: true, force: true })
}
writeBenchResult('failover', {
  failover_p50_ms: { value: median(samples), unit: 'ms', target: null, better: 'lower' },
  failover_p99_ms: { value: quantile(samples, 0.99), unit: 'ms', target: 3000, better: 'lower' },
  failover_max_ms: { value: Math.max(...samples), unit: 'ms', target: null, better: 'lower' }
}, { kills: samples.length, samplesMs: samples.map((s) => Math.round(s)), leaseTtlSeconds: 1 })
