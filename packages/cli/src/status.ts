/**
 * `phalanx status <url | run-dir>`: reads a running coordinator's `GET /status` and prints members,
 * epoch, step and recoveries.
 *
 * @module
 */
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { InvalidConfigError, NotFoundError, PeerUnreachableError, type AbortOptions } from '@phalanx/core'
import type { JobStatus } from './coordinator-process.js'
import { ms } from './progress.js'

/** Where the coordinator process writes its status URL inside a run directory. */
export const STATUS_URL_FILE = 'coordinator.status-url'

/** Resolves a `phalanx status` argument: an `http://` URL, or a run directory holding {@link STATUS_URL_FILE}. */
export function statusUrlOf (target: string): string {
  if (/^https?:\/\//.test(target)) return target.replace(/\/(status)?$/, '') + '/status'
  const file = join(target, STATUS_URL_FILE)
  if (!existsSync(file)) throw new NotFoundError(`${target} is neither an http:// URL nor a run directory with ${STATUS_URL_FILE}`)
  return readFileSync(file, 'utf8').trim() + '/status'
}

/** Fetches the status JSON. */
export async function fetchStatus (target: string, options: AbortOptions & { timeoutMs?: number } = {}): Promise<JobStatus> {
  const url = statusUrlOf(target)
  const signal = AbortSignal.any([AbortSignal.timeout(options.timeoutMs ?? 5000), ...(options.signal === undefined ? [] : [options.signal])])
  let res: Response
  try {
    res = await fetch(url, { signal })
  } catch (err) {
    throw new PeerUnreachableError(`Cannot reach the coordinator at ${url}: ${(err as Error).message}`, { cause: err })
  }
  if (!res.ok) throw new PeerUnreachableError(`${url} answered HTTP ${res.status}`)
  const body: unknown = await res.json()
  if (typeof body !== 'object' || body === null || typeof (body as JobStatus).epoch !== 'number') throw new InvalidConfigError(`${url} did not return a Phalanx job status`)
  return body as JobStatus
}

/** Formats a status for people. */
export function formatStatus (s: JobStatus): string {
  const lines = [
    `job ${s.job}: ${s.phase}, step ${s.committed}/${s.steps}, epoch ${s.epoch}, coordinator ${s.address}`,
    `members (${s.members.length}):`
  ]
  for (const m of s.members) lines.push(`  ${m.id.padEnd(16)} rank ${String(m.rank).padStart(3)}  micro-batches ${String(m.microBatches).padStart(4)}  committed ${String(m.committed).padStart(7)}  ${m.phase}`)
  if (s.waiting.length > 0) lines.push(`waiting: ${s.waiting.join(', ')}`)
  const rejected = Object.entries(s.transport.rejected).map(([k, v]) => `${k} ${v}`).join(', ')
  lines.push(`messages: ${s.transport.received} received, ${s.transport.sent} sent, rejected: ${rejected === '' ? 'none' : rejected}, stale-epoch dropped ${s.staleDropped}`)
  lines.push(`recoveries (${s.recoveries.length}):`)
  for (const r of s.recoveries) {
    lines.push(`  ${r.reason} of ${r.peers.join(',')} at step ${r.step}: detect ${ms(r.detectMs)} ms, quorum ${ms(r.quorumMs)} ms, reconfigure ${ms(r.reconfigureMs)} ms, heal ${ms(r.healMs)} ms, first commit ${ms(r.firstCommitMs)} ms, total ${ms(r.totalMs)} ms`)
  }
  return lines.join('\n')
}
