/**
 * The `phalanx worker` process: configuration → logger → ZeroMQ endpoint → job. It trains until
 * the coordinator says the job is done, then reports (and optionally writes) its final state with
 * a CRC-32C checksum of its flat bytes, so runs can be compared bit for bit.
 *
 * @module
 */
import { mkdirSync, writeFileSync, renameSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { InvalidConfigError, shapeSize, type AbortOptions, type Endpoint, type Logger, type PhalanxConfig, type PinnedState, type StateMeta } from '@phalanx/core'
import { createCheckpointStore, createHolderClient, createLocalStorage, createSnapshotter, restoreBest, type CheckpointStore, type HolderClient, type Snapshotter } from '@phalanx/checkpoint'
import type { SnapshotHooks } from '@phalanx/worker'
import { aggregatorFromConfig, openEndpoint } from './compose.js'
import type { ChildChaos } from './chaos-child.js'
import type { ProcessEvent } from './events.js'
import { stateChecksum, type JobOptions, type JobResult } from './job.js'
import { loadJob } from './load-job.js'

/** Tunables of {@link runWorkerProcess}. */
export interface WorkerProcessInit {
  config: PhalanxConfig
  /** Worker id, unique within the job. */
  id: string
  /** Address of the coordinator's endpoint. */
  coordinatorAddress: string
  /**
   * Where this worker listens for its peers (must be reachable by them).
   * @default 'tcp://127.0.0.1:0'
   */
  listen?: string
  /** Built-in job name or path of a job module. */
  job: string
  /** Options handed to the job's `createJob`. */
  jobOptions?: JobOptions
  /** Writes the final state here as JSON (`{ steps, checksum, loss, tensors }`), atomically. */
  out?: string
  /**
   * Address of this host's snapshot holder (`phalanx holder`): snapshot at commits, restore from
   * it on a restart.
   * @default the `PHALANX_HOLDER` environment variable (set by `phalanx launch --snapshots`), else none
   */
  holder?: string
  /**
   * Snapshot every this many committed steps.
   * @default the `PHALANX_SNAPSHOT_EVERY` environment variable, else 1
   */
  snapshotEvery?: number
  /**
   * Directory of this worker's L2 checkpoints (a store in `<dir>/<id>`): every
   * {@link checkpointEvery}th snapshot is also written there, and a restarted worker restores the
   * newest intact one of L0 and L2 (a torn or corrupt file is detected by its CRC-32C and passed over).
   * @default the `PHALANX_CHECKPOINT_DIR` environment variable, else none
   */
  checkpointDir?: string
  /**
   * Every this many snapshots also go to the L2 store.
   * @default the `PHALANX_CHECKPOINT_EVERY` environment variable, else 5
   */
  checkpointEvery?: number
  /**
   * Minimum interval between progress events.
   * @default 250
   */
  reportIntervalMs?: number
}

/** Collaborators of {@link runWorkerProcess}. */
export interface WorkerProcessComponents {
  logger: Logger
  onEvent?: (event: ProcessEvent) => void
  /** Chaos glue (`phalanx chaos run`): the endpoint is opened through its chaos transport. */
  chaos?: ChildChaos
  /**
   * Called once the endpoint is open, before the job starts (HA mode: re-routes the coordinator to
   * each new leader, see ha.ts); the function it resolves with is awaited when the worker ends.
   */
  onEndpoint?: (endpoint: Endpoint) => Promise<() => Promise<void>>
}

/** The final state and its checksum. */
export interface WorkerProcessResult extends JobResult {
  checksum: number
}

function writeResult (path: string, result: WorkerProcessResult): void {
  mkdirSync(dirname(path), { recursive: true })
  const body = {
    steps: result.steps,
    checksum: result.checksum,
    ...(result.loss === undefined ? {} : { loss: result.loss }),
    ...(result.accuracy === undefined ? {} : { accuracy: result.accuracy }),
    tensors: result.state.tensors.map((t) => ({ name: t.name, shape: t.shape, values: Array.from(t.data) }))
  }
  const tmp = `${path}.tmp`
  writeFileSync(tmp, JSON.stringify(body) + '\n')
  renameSync(tmp, path)
}

/** Runs one worker until the job is done or `options.signal` fires. */
export async function runWorkerProcess (init: WorkerProcessInit, components: WorkerProcessComponents, options: AbortOptions = {}): Promise<WorkerProcessResult> {
  const { config, id } = init
  const { logger } = components
  const emit = components.onEvent ?? (() => {})
  const signal = options.signal ?? new AbortController().signal
  const reportIntervalMs = init.reportIntervalMs ?? 250
  const job = await loadJob(init.job, config, init.jobOptions ?? {})
  // Before the endpoint opens: a bad aggregator spec fails the process at once with InvalidConfigError.
  const aggregator = aggregatorFromConfig(config)
  const listen = init.listen ?? 'tcp://127.0.0.1:0'
  const endpoint = components.chaos === undefined ? await openEndpoint(config, { id, listen, logger }) : await components.chaos.openEndpoint(config, { id, listen, logger })
  let lastReport = 0
  let detach: (() => Promise<void>) | undefined
  const holderAddress = init.holder ?? process.env.PHALANX_HOLDER
  const every = init.snapshotEvery ?? Number(process.env.PHALANX_SNAPSHOT_EVERY ?? 1)
  if (!Number.isInteger(every) || every < 1) throw new InvalidConfigError(`snapshot interval must be a positive integer, got ${String(every)}`)
  const checkpointDir = init.checkpointDir ?? process.env.PHALANX_CHECKPOINT_DIR
  const l2Every = init.checkpointEvery ?? Number(process.env.PHALANX_CHECKPOINT_EVERY ?? 5)
  if (!Number.isInteger(l2Every) || l2Every < 1) throw new InvalidConfigError(`checkpoint interval must be a positive integer, got ${String(l2Every)}`)
  let snapshotter: Snapshotter | undefined
  let snapshots: ((pin: (meta: StateMeta) => PinnedState) => SnapshotHooks) | undefined
  // The owner is the worker id: a process restarted with the same id finds its snapshots.
  const client: HolderClient | undefined = holderAddress !== undefined && holderAddress !== '' ? createHolderClient({ owner: id, address: holderAddress }, { endpoint, logger }) : undefined
  let store: CheckpointStore | undefined
  if (checkpointDir !== undefined && checkpointDir !== '') {
    const local = createLocalStorage({ dir: join(checkpointDir, id) })
    // Under `phalanx chaos` the writes go through chaosStorage, so disk faults reach them.
    store = createCheckpointStore({ keep: 3 }, { storage: components.chaos === undefined ? local : components.chaos.wrapStorage(local), logger })
  }
  if (client !== undefined || store !== undefined) {
    const snap = createSnapshotter({ l2Every: store === undefined ? 0 : l2Every }, { ...(client === undefined ? {} : { holder: client }), ...(store === undefined ? {} : { store }), logger })
    snap.start()
    snapshotter = snap
    const sources = { ...(client === undefined ? {} : { holder: client }), ...(store === undefined ? {} : { store }) }
    snapshots = (pin) => ({
      every,
      // A capture skipped because the previous drain is still running is retried by the worker.
      capture: (meta) => snap.capture(pin(meta)).reason !== 'busy',
      restore: async (step, opts) => {
        const held = client === undefined ? undefined : await client.latest(opts)
        if (held?.step !== step) {
          logger.info({ step, held: held?.step }, 'the snapshot holder has no snapshot of this step; healing from peers')
          return undefined
        }
        return (await (client as HolderClient).restore(opts)).state
      },
      // A restarted worker adopts its newest intact snapshot (L0 or L2) before it joins: the job may
      // have no other holder of the committed state left. Corrupt or torn candidates are skipped.
      latest: async (opts) => {
        try {
          const best = await restoreBest(sources, { ...opts, logger })
          for (const sk of best.skipped) logger.warn({ tier: sk.tier, step: sk.step, err: sk.error }, 'restore candidate passed over')
          logger.info({ tier: best.tier, step: best.step }, 'newest intact snapshot found')
          return best.state
        } catch (err) {
          if ((err as Error).name === 'NotFoundError') {
            logger.info({ err: (err as Error).message, details: (err as { details?: unknown }).details }, 'no restorable snapshot; joining empty-handed')
            return undefined
          }
          throw err
        }
      }
    })
  }
  try {
    detach = await components.onEndpoint?.(endpoint)
    logger.info({ address: endpoint.address, coordinator: init.coordinatorAddress, job: job.name }, 'worker listening')
    emit({ type: 'worker-ready', id, address: endpoint.address })
    const result = await job.run({
      config,
      workerId: id,
      endpoint,
      coordinatorAddress: init.coordinatorAddress,
      aggregator,
      ...(snapshots === undefined ? {} : { snapshots }),
      logger,
      signal,
      ...(components.chaos === undefined
        ? {}
        : {
            clock: components.chaos.clock,
            gradientHook: (g: readonly Float32Array[], step: number) => (components.chaos as ChildChaos).gradientHook(g, { step, worker: id }),
            labelHook: (l: ArrayLike<number>, step: number) => (components.chaos as ChildChaos).labelHook(l, { step, worker: id })
          }),
      report (p) {
        const now = performance.now()
        // Losses are always worth sending; bare step counts only now and then.
        if (p.loss === undefined && now - lastReport < reportIntervalMs) return
        lastReport = now
        emit({ type: 'progress', id, step: p.step, ...(p.loss === undefined ? {} : { loss: p.loss }), ...(p.accuracy === undefined ? {} : { accuracy: p.accuracy }) })
      },
      onWorker (worker) {
        worker.on('heal', (e) => {
          logger.info({ step: e.step, bytes: e.bytes, ms: e.ms, sources: e.sources }, 'healed')
          emit({ type: 'heal', id, step: e.step, bytes: e.bytes, ms: e.ms, sources: e.sources })
        })
        worker.on('epoch', (e) => { logger.info({ epoch: e.epoch, step: e.step, rank: e.rank, active: e.active }, 'epoch') })
      }
    }, { signal })
    const out: WorkerProcessResult = { ...result, checksum: stateChecksum(result.state) }
    const values = result.state.tensors.reduce((a, t) => a + shapeSize(t.shape), 0)
    logger.info({ steps: out.steps, checksum: out.checksum, values, loss: out.loss, accuracy: out.accuracy }, 'job finished')
    if (init.out !== undefined) writeResult(init.out, out)
    emit({ type: 'result', id, steps: out.steps, checksum: out.checksum, ...(out.loss === undefined ? {} : { loss: out.loss }), ...(out.accuracy === undefined ? {} : { accuracy: out.accuracy }) })
    return out
  } finally {
    await detach?.()
    await snapshotter?.stop()
    await endpoint.close({ lingerMs: config.timeouts.closeLingerMs })
    await job.dispose?.()
  }
}
