import { ClosedError, componentLogger, throwIfAborted, type Logger } from '@phalanx/core'
import type { EtcdElection, Leadership } from './leader.js'
import type { StateStore, StoreRecord } from './state-store.js'

/** Options of {@link createEtcdStateStore}. */
export interface EtcdStateStoreInit {
  /** The election whose client and prefix the store uses. */
  election: EtcdElection
  /** The leadership every write is fenced by (a deposed leader's writes fail with `FencedError`). */
  leadership: Leadership
}

function isRecord (value: unknown): value is StoreRecord {
  if (typeof value !== 'object' || value === null) return false
  const t = (value as { type?: unknown }).type
  return t === 'commit' || t === 'epoch' || t === 'snapshot'
}

// Fixed width, so etcd's byte order of keys is the order of appends.
const seqKey = (prefix: string, seq: number): string => `${prefix}/log/${seq.toString().padStart(16, '0')}`

/**
 * The highly available {@link StateStore}: records live in etcd under `<prefix>/log/<seq>` (and a
 * compacted `<prefix>/snapshot`), so a standby coordinator that wins the election replays exactly
 * what the deposed leader made durable. Every append and compaction is one etcd transaction that
 * applies only while the leader key still has the leadership's create revision (the fencing
 * token): a deposed leader's write is rejected with `FencedError` and changes nothing. etcd
 * acknowledges a write once a majority of its members has it on disk, which is what `sync` asks.
 */
export function createEtcdStateStore (init: EtcdStateStoreInit, components: { logger?: Logger } = {}): StateStore {
  const { election, leadership } = init
  const { client, prefix } = election
  const log = componentLogger(components.logger, 'etcd-store')
  const snapshotKey = `${prefix}/snapshot`
  const logPrefix = `${prefix}/log/`
  let next: number | undefined
  let closed = false

  const checkOpen = (): void => { if (closed) throw new ClosedError('etcd state store is closed') }

  const readAll = async (): Promise<{ records: StoreRecord[], lastSeq: number }> => {
    const [snap, entries] = await Promise.all([
      client.get(snapshotKey).string(),
      client.getAll().prefix(logPrefix).sort('Key', 'Ascend').strings()
    ])
    const records: StoreRecord[] = []
    if (snap !== null) {
      const parsed: unknown = JSON.parse(snap)
      if (isRecord(parsed)) records.push(parsed)
    }
    let lastSeq = 0
    for (const [key, value] of Object.entries(entries).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      const seq = Number(key.slice(logPrefix.length))
      if (Number.isInteger(seq)) lastSeq = Math.max(lastSeq, seq)
      let parsed: unknown
      try { parsed = JSON.parse(value) } catch { log.warn({ key }, 'skipping a log entry that is not JSON'); continue }
      if (isRecord(parsed)) records.push(parsed)
      else log.warn({ key }, 'skipping a log entry of unknown type')
    }
    return { records, lastSeq }
  }

  const nextSeq = async (): Promise<number> => {
    if (next === undefined) next = (await readAll()).lastSeq + 1
    return next
  }

  return {
    async append (record, options = {}) {
      checkOpen()
      throwIfAborted(options.signal)
      const seq = await nextSeq()
      await leadership.fencedTxn([{ op: 'put', key: seqKey(prefix, seq), value: JSON.stringify(record) }], options)
      next = seq + 1
    },
    async replay (options = {}) {
      checkOpen()
      throwIfAborted(options.signal)
      const { records, lastSeq } = await readAll()
      next = lastSeq + 1
      return records
    },
    async compact (snapshot, options = {}) {
      checkOpen()
      throwIfAborted(options.signal)
      // One transaction: the snapshot replaces the log atomically (and only while we lead).
      await leadership.fencedTxn([
        { op: 'put', key: snapshotKey, value: JSON.stringify(snapshot) },
        { op: 'delete-prefix', prefix: logPrefix }
      ], options)
      // Sequence numbers keep growing, so no key of the deleted log is ever reused.
    },
    async close () {
      closed = true
    }
  }
}
