/**
 * The composition root: configuration → pino logger → ZeroMQ endpoint. Nothing else in Phalanx
 * opens a real transport; coordinator and worker receive the endpoint built here.
 *
 * @module
 */
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { pino, type Logger } from 'pino'
import { InvalidConfigError, type Aggregator, type EndpointInit, type EpochFence, type PhalanxConfig } from '@phalanx/core'
import { createAggregator } from '@phalanx/aggregate'
import { readKeyFile, zmqTransport, type ZmqCurveOptions, type ZmqEndpoint } from '@phalanx/transport/zmq'

/** Where and how a process logs. */
export interface ProcessLoggerInit {
  /** Process name bound on every line (`coordinator`, `worker-3`). */
  name: string
  /** Level, from the configuration. */
  level: PhalanxConfig['log']['level']
  /**
   * JSON log file. Written synchronously, so the last lines before a SIGKILL are on disk.
   * @default stderr
   */
  file?: string
}

/** Creates the process logger: pino JSON lines, synchronous when writing to a file. */
export function createProcessLogger (init: ProcessLoggerInit): Logger {
  if (init.file === undefined) return pino({ level: init.level, base: { name: init.name, pid: process.pid } }, pino.destination({ dest: 2, sync: true }))
  mkdirSync(dirname(init.file), { recursive: true })
  return pino({ level: init.level, base: { name: init.name, pid: process.pid } }, pino.destination({ dest: init.file, sync: true }))
}

/** What {@link openEndpoint} needs besides the configuration. */
export interface OpenEndpointInit {
  id: string
  /** Where to listen (`tcp://127.0.0.1:0` picks a free port). */
  listen: string
  logger: Logger
  fence?: EpochFence
}

/**
 * CURVE options from `transport.curve`. The CLI uses one key pair per job (made with
 * `phalanx keygen`): every process holds it, every server is dialled with its public key and the
 * allow-list defaults to it, so only holders of the job key can connect and all traffic is encrypted.
 */
export async function curveFromConfig (config: PhalanxConfig): Promise<ZmqCurveOptions | undefined> {
  const c = config.transport.curve
  if (!c.enabled) return undefined
  if (c.keyFile === undefined) throw new InvalidConfigError('transport.curve.enabled needs transport.curve.keyFile (make one with `phalanx keygen <name>`)')
  const keys = await readKeyFile(c.keyFile)
  if (!('secretKey' in keys)) throw new InvalidConfigError(`transport.curve.keyFile ${c.keyFile} holds no secret key`)
  const serverKey = c.serverKey ?? keys.publicKey
  // Peers are learned from quorums at run time: every one of them is dialled with the job's server key.
  const serverKeys = new Proxy<Record<string, string>>({}, { get: () => serverKey })
  return { publicKey: keys.publicKey, secretKey: keys.secretKey, allow: c.allow ?? [keys.publicKey], serverKeys }
}

/**
 * The reduce's aggregation rule from `config.aggregator` (`{ name, ...params }`, validated in full
 * by `@phalanx/aggregate`). Workers run it on the shard they own.
 *
 * @throws {InvalidConfigError} naming the problem (an unknown rule, a bad parameter) and the valid options
 */
export function aggregatorFromConfig (config: PhalanxConfig): Aggregator {
  try {
    return createAggregator(config.aggregator)
  } catch (err) {
    const e = err as Error
    if (e.name === InvalidConfigError.name) {
      throw new InvalidConfigError(`aggregator ${JSON.stringify(config.aggregator)}: ${e.message}`, { cause: err, details: (err as InvalidConfigError).details })
    }
    throw err
  }
}

/** Opens this process's ZeroMQ endpoint from the configuration. */
export async function openEndpoint (config: PhalanxConfig, init: OpenEndpointInit): Promise<ZmqEndpoint> {
  if (config.transport.kind !== 'zmq') throw new InvalidConfigError(`transport.kind "${config.transport.kind}" cannot connect processes; use "zmq"`)
  const curve = await curveFromConfig(config)
  const endpointInit: EndpointInit & { curve?: ZmqCurveOptions } = {
    id: init.id,
    job: config.job.id,
    listen: init.listen,
    limits: { maxFrameBytes: config.transport.maxFrameBytes, maxMessageBytes: config.transport.maxMessageBytes },
    sendQueueLimit: config.transport.sendQueueLimit,
    requestTimeoutMs: config.timeouts.requestTimeoutMs,
    logger: init.logger,
    ...(init.fence === undefined ? {} : { fence: init.fence }),
    ...(curve === undefined ? {} : { curve })
  }
  return await zmqTransport().open(endpointInit)
}
