/**
 * The `phalanx holder` process: one snapshot holder per host, outside the trainers' process group
 * (`runHolder` of `@phalanx/checkpoint` on a ZeroMQ `ipc://` endpoint). Workers started with
 * `PHALANX_HOLDER=<address>` send it a lazy snapshot at every commit and, when restarted after a
 * crash, restore from it instead of healing from their peers (see docs/elastic.md, "Snapshots").
 *
 * @module
 */
import { parseArgs } from 'node:util'
import { InvalidConfigError, type AbortOptions, type Logger } from '@phalanx/core'
import { defaultHolderDir, runHolder } from '@phalanx/checkpoint'
import { zmqTransport } from '@phalanx/transport/zmq'
import { createProcessLogger } from './compose.js'

/** Tunables of {@link runHolderProcess}. */
export interface HolderProcessInit {
  /** Job id (names the default directory and is stamped on every message). */
  job: string
  /** Where the holder listens, e.g. `ipc:///tmp/phalanx-job/holder.sock`. */
  listen: string
  /**
   * Slot directory (tmpfs keeps snapshots in RAM).
   * @default `/dev/shm/phalanx-<job>`
   */
  dir?: string
}

/** Runs a snapshot holder until `options.signal` fires. Resolves with nothing once it is closed. */
export async function runHolderProcess (init: HolderProcessInit, components: { logger: Logger, onReady?: (address: string) => void }, options: AbortOptions = {}): Promise<void> {
  const holder = await runHolder({ job: init.job, listen: init.listen, transport: zmqTransport(), dir: init.dir ?? defaultHolderDir(init.job), logger: components.logger })
  try {
    components.logger.info({ address: holder.endpoint.address, dir: init.dir ?? defaultHolderDir(init.job) }, 'snapshot holder listening')
    components.onReady?.(holder.endpoint.address)
    const signal = options.signal
    if (signal !== undefined && !signal.aborted) await new Promise<void>((resolve) => { signal.addEventListener('abort', () => { resolve() }, { once: true }) })
  } finally {
    await holder.close()
  }
}

/** `phalanx holder --job <id> --listen <ipc address> [--dir <path>] [--log-file <path>]`. */
export async function holderCommand (args: string[], io: { stdout: (text: string) => void }): Promise<number> {
  const { values } = parseArgs({ args, options: { job: { type: 'string' }, listen: { type: 'string' }, dir: { type: 'string' }, 'log-file': { type: 'string' }, help: { type: 'boolean' } }, strict: true })
  if (values.help === true) {
    io.stdout('phalanx holder: the per-host snapshot holder.\n  --job <id>          job id (required)\n  --listen <address>  e.g. ipc:///tmp/phalanx-job/holder.sock (required)\n  --dir <path>        slot directory (default /dev/shm/phalanx-<job>)\n  --log-file <path>   JSON log file (default stderr)\n')
    return 0
  }
  if (values.job === undefined || values.listen === undefined) throw new InvalidConfigError('phalanx holder needs --job <id> and --listen <address> (e.g. ipc:///tmp/phalanx-job/holder.sock)')
  const logFile = values['log-file']
  const logger = createProcessLogger({ name: 'holder', level: 'info', ...(logFile === undefined ? {} : { file: logFile }) })
  const ctl = new AbortController()
  const stop = (): void => { ctl.abort() }
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
  process.once('disconnect', stop)
  try {
    await runHolderProcess({ job: values.job, listen: values.listen, ...(values.dir === undefined ? {} : { dir: values.dir }) }, {
      logger,
      onReady: (address) => { process.send?.({ type: 'holder-ready', address }) }
    }, { signal: ctl.signal })
    return 0
  } finally {
    process.off('SIGTERM', stop)
    process.off('SIGINT', stop)
    process.off('disconnect', stop)
  }
}
