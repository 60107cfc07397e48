import { Etcd3, type IOptions, type Lease, type Watcher } from 'etcd3'
import {
  AbortError, ClosedError, FencedError, InvalidParametersError, componentLogger, throwIfAborted,
  type AbortOptions, type Logger
} from '@phalanx/core'

/** Tunables of {@link createEtcdElection}. */
export interface EtcdElectionInit {
  /** etcd client URLs, e.g. `['http://127.0.0.1:2379']`. */
  hosts: string[]
  /**
   * Key prefix of this job; the leader key is `<prefix>/leader`, the log `<prefix>/log/…`.
   * Must start with `/` and not end with one.
   */
  prefix: string
  /**
   * TTL of the leader's lease, seconds (etcd grants at least 1.5 × its election timeout). A killed
   * leader is replaced about this long after it died (plus up to 0.5 s of etcd's expiry scan).
   * @default 2
   */
  ttlSeconds?: number
  /**
   * Deadline of one etcd call (unary RPC), milliseconds.
   * @default 3000
   */
  callTimeoutMs?: number
}

/** Collaborators of {@link createEtcdElection}. */
export interface EtcdElectionComponents {
  /** @default silent */
  logger?: Logger
}

/** The current leader as etcd sees it. */
export interface LeaderInfo {
  /** What the leader advertised: the address workers dial. */
  address: string
  /** The leader's fencing token (create revision of its leader key), as a decimal string. */
  term: string
}

/**
 * Leadership won by {@link EtcdElection.campaign}. It ends when the lease is lost (expired, revoked,
 * etcd unreachable for two TTLs), when the leader key is deleted or replaced, or on `resign()`; then
 * {@link signal} aborts with a `FencedError`. Every write made under it is a transaction conditional
 * on the leader key still having create revision {@link term}, so a deposed leader cannot write.
 */
export interface Leadership {
  /** The fencing token: create revision of the leader key (grows with every new leadership). */
  readonly term: string
  /** The address this leader advertised. */
  readonly address: string
  /** Aborted (reason: `FencedError`) when this leadership ended. */
  readonly signal: AbortSignal
  /**
   * Runs an etcd transaction that applies `ops` only while this leadership is current.
   * @throws `FencedError` when it is not (the transaction changed nothing)
   */
  fencedTxn(ops: EtcdOp[], options?: AbortOptions): Promise<void>
  /** Gives leadership up: deletes the leader key (if still ours) and revokes the lease. Idempotent. */
  resign(options?: AbortOptions): Promise<void>
}

/** One write of a fenced transaction. */
export type EtcdOp =
  | { op: 'put', key: string, value: string }
  | { op: 'delete-prefix', prefix: string }

/**
 * Leader election among coordinator replicas on etcd (lease + create-if-absent on `<prefix>/leader`).
 * Standbys wait on a watch of the leader key and try again when it is deleted, so the next leader
 * is elected as soon as etcd expires the old leader's lease.
 */
export interface EtcdElection extends AsyncDisposable {
  /** The etcd client (shared by the state store and the followers of the same process). */
  readonly client: Etcd3
  /** The job's key prefix. */
  readonly prefix: string
  /** Waits until this candidate is the leader, advertising `address`. */
  campaign(address: string, options?: AbortOptions): Promise<Leadership>
  /** The current leader, or undefined when there is none. */
  leader(options?: AbortOptions): Promise<LeaderInfo | undefined>
  /** Waits for a leader to exist and returns it. */
  waitForLeader(options?: AbortOptions): Promise<LeaderInfo>
  /**
   * Calls `listener` with every new leader (and `undefined` when the key goes away), starting with
   * the current one. Resolves with the function that stops watching.
   */
  follow(listener: (leader: LeaderInfo | undefined) => void, options?: AbortOptions): Promise<() => Promise<void>>
  /** Records that the job finished (a fenced write: only the leader can). */
  markDone(leadership: Leadership, result: { committed: number, epoch: number }, options?: AbortOptions): Promise<void>
  /** The recorded end of the job, when it finished. */
  done(options?: AbortOptions): Promise<{ committed: number, epoch: number } | undefined>
  /** Closes the client (leases held are left to expire unless resigned first). Idempotent. */
  close(): Promise<void>
}

/** Builds the etcd client options every Phalanx etcd user shares. */
export function etcdClientOptions (hosts: readonly string[], callTimeoutMs = 3000): IOptions {
  return {
    hosts: [...hosts],
    dialTimeout: callTimeoutMs,
    // Unary calls get a deadline so a dead etcd turns into an error, not a hang; streams (watch, keepalive) do not.
    defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + callTimeoutMs })
  }
}

const decoder = new TextDecoder()
const text = (v: Buffer | Uint8Array | string | undefined | null): string =>
  v === undefined || v === null ? '' : typeof v === 'string' ? v : decoder.decode(v)

/** Creates an {@link EtcdElection}; nothing is contacted until a method is called. */
export function createEtcdElection (init: EtcdElectionInit, components: EtcdElectionComponents = {}): EtcdElection {
  if (init.hosts.length === 0) throw new InvalidParametersError('etcd needs at least one host')
  if (!init.prefix.startsWith('/') || init.prefix.endsWith('/')) throw new InvalidParametersError(`etcd prefix "${init.prefix}" must start with "/" and not end with one`)
  const ttl = init.ttlSeconds ?? 2
  if (!Number.isInteger(ttl) || ttl < 1) throw new InvalidParametersError(`ttlSeconds must be an integer ≥ 1, got ${ttl}`)
  const log = componentLogger(components.logger, 'etcd-election')
  const client = new Etcd3(etcdClientOptions(init.hosts, init.callTimeoutMs))
  const leaderKey = `${init.prefix}/leader`
  const doneKey = `${init.prefix}/done`
  let closed = false
  const live = new Set<Lease>()

  const checkOpen = (): void => { if (closed) throw new ClosedError('etcd election is closed') }

  /** Resolves when `key` is deleted after `revision` (or rejects when aborted). */
  const waitForDelete = async (revision: string, options: AbortOptions): Promise<void> => {
    let watcher: Watcher | undefined
    let onAbort: (() => void) | undefined
    let finished = false
    try {
      await new Promise<void>((resolve, reject) => {
        onAbort = () => { reject(options.signal?.reason ?? new AbortError('campaign aborted')) }
        options.signal?.addEventListener('abort', onAbort, { once: true })
        client.watch().key(leaderKey).startRevision(revision).create().then((w) => {
          watcher = w
          if (finished) { void w.cancel().catch(() => undefined); return }
          w.on('delete', () => { resolve() })
          w.on('error', reject)
        }, reject)
      })
    } finally {
      finished = true
      if (onAbort !== undefined) options.signal?.removeEventListener('abort', onAbort)
      await watcher?.cancel().catch(() => undefined)
    }
  }

  const elect = async (address: string, lease: Lease, leaseId: string, term: string): Promise<Leadership> => {
    const ctl = new AbortController()
    let watcher: Watcher | undefined
    const lose = (why: string): void => {
      if (ctl.signal.aborted) return
      log.warn({ term, why }, 'leadership lost')
      ctl.abort(new FencedError(`Leadership of term ${term} ended: ${why}`, { details: { term } }))
      live.delete(lease)
      lease.release()
      void watcher?.cancel().catch(() => undefined)
    }
    lease.on('lost', (err) => { lose(`lease lost (${err.message})`) })
    watcher = await client.watch().key(leaderKey).startRevision(String(BigInt(term) + 1n)).create()
    watcher.on('delete', () => { lose('leader key deleted') })
    watcher.on('put', (kv) => { if (String(kv.create_revision) !== term) lose('leader key replaced') })
    const leadership: Leadership = {
      term,
      address,
      signal: ctl.signal,
      async fencedTxn (ops, options = {}) {
        throwIfAborted(options.signal)
        if (ctl.signal.aborted) throw ctl.signal.reason as Error
        const clauses = ops.map((o) => (o.op === 'put' ? client.put(o.key).value(o.value) : client.delete().prefix(o.prefix)))
        const res = await client.if(leaderKey, 'Create', '==', term).then(...clauses).commit()
        if (!res.succeeded) {
          lose('fenced write rejected')
          throw new FencedError(`Write rejected: term ${term} is no longer the leader`, { details: { term } })
        }
      },
      async resign () {
        if (!ctl.signal.aborted) {
          await client.if(leaderKey, 'Create', '==', term).then(client.delete().key(leaderKey)).commit().catch((err: Error) => { log.debug({ err: err.message }, 'resign: delete failed') })
          lose('resigned')
        }
        await lease.revoke().catch(() => undefined)
      }
    }
    log.info({ term, address, lease: leaseId }, 'elected leader')
    return leadership
  }

  const election: EtcdElection = {
    client,
    prefix: init.prefix,
    async campaign (address, options = {}) {
      checkOpen()
      for (;;) {
        throwIfAborted(options.signal)
        const lease = client.lease(ttl, { autoKeepAlive: true })
        live.add(lease)
        let won = false
        try {
          const leaseId = await lease.grant()
          for (;;) {
            throwIfAborted(options.signal)
            if (lease.revoked()) break
            const res = await client.if(leaderKey, 'Create', '==', 0)
              .then(client.put(leaderKey).value(address).lease(leaseId))
              .else(client.get(leaderKey))
              .commit()
            if (res.succeeded) {
              won = true
              return await elect(address, lease, leaseId, String(res.header.revision))
            }
            log.debug({ revision: res.header.revision }, 'standing by')
            await waitForDelete(String(BigInt(res.header.revision) + 1n), options)
          }
        } finally {
          if (!won) { live.delete(lease); await lease.revoke().catch(() => undefined) }
        }
      }
    },
    async leader (options = {}) {
      checkOpen()
      throwIfAborted(options.signal)
      const res = await client.get(leaderKey).exec()
      const kv = res.kvs[0]
      return kv === undefined ? undefined : { address: text(kv.value), term: String(kv.create_revision) }
    },
    async waitForLeader (options = {}) {
      checkOpen()
      throwIfAborted(options.signal)
      const res = await client.get(leaderKey).exec()
      const kv = res.kvs[0]
      if (kv !== undefined) return { address: text(kv.value), term: String(kv.create_revision) }
      let watcher: Watcher | undefined
      let onAbort: (() => void) | undefined
      let finished = false
      try {
        return await new Promise<LeaderInfo>((resolve, reject) => {
          onAbort = () => { reject(options.signal?.reason ?? new AbortError('wait for leader aborted')) }
          options.signal?.addEventListener('abort', onAbort, { once: true })
          // From the revision just read: a leader elected in between is not missed.
          client.watch().key(leaderKey).startRevision(String(BigInt(res.header.revision) + 1n)).create().then((w) => {
            watcher = w
            if (finished) { void w.cancel().catch(() => undefined); return }
            w.on('put', (k) => { resolve({ address: text(k.value), term: String(k.create_revision) }) })
            w.on('error', reject)
          }, reject)
        })
      } finally {
        finished = true
        if (onAbort !== undefined) options.signal?.removeEventListener('abort', onAbort)
        await watcher?.cancel().catch(() => undefined)
      }
    },
    async follow (listener, options = {}) {
      checkOpen()
      throwIfAborted(options.signal)
      const res = await client.get(leaderKey).exec()
      const kv = res.kvs[0]
      let last = kv === undefined ? '' : `${String(kv.create_revision)}:${text(kv.value)}`
      listener(kv === undefined ? undefined : { address: text(kv.value), term: String(kv.create_revision) })
      const watcher = await client.watch().key(leaderKey).startRevision(String(BigInt(res.header.revision) + 1n)).create()
      watcher.on('put', (k) => {
        const id = `${String(k.create_revision)}:${text(k.value)}`
        if (id === last) return
        last = id
        listener({ address: text(k.value), term: String(k.create_revision) })
      })
      watcher.on('delete', () => { last = ''; listener(undefined) })
      watcher.on('error', (err) => { log.warn({ err: err.message }, 'leader watch failed') })
      return async () => { await watcher.cancel().catch(() => undefined) }
    },
    async markDone (leadership, result, options = {}) {
      await leadership.fencedTxn([{ op: 'put', key: doneKey, value: JSON.stringify(result) }], options)
    },
    async done (options = {}) {
      checkOpen()
      throwIfAborted(options.signal)
      const v = await client.get(doneKey).string()
      if (v === null) return undefined
      const parsed = JSON.parse(v) as { committed?: unknown, epoch?: unknown }
      if (typeof parsed.committed !== 'number' || typeof parsed.epoch !== 'number') return undefined
      return { committed: parsed.committed, epoch: parsed.epoch }
    },
    async close () {
      if (closed) return
      closed = true
      for (const l of live) l.release()
      live.clear()
      client.close()
    },
    async [Symbol.asyncDispose] () { await election.close() }
  }
  return election
}
