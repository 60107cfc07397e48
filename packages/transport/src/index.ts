/**
 * @packageDocumentation
 * Phalanx transports: in-memory (`@phalanx/transport/memory`) and ZeroMQ with CURVE
 * (`@phalanx/transport/zmq`). Both implement `Transport` / `Endpoint` from `@phalanx/core` and pass
 * the same compliance suite. This entry point holds only what both share and loads no native code.
 *
 * @example
 * ```ts
 * import { DEFAULT_SEND_QUEUE_LIMIT } from '@phalanx/transport'
 * import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
 *
 * const transport = memoryTransport({ network: createMemoryNetwork() })
 * const endpoint = await transport.open({ id: 'a', job: 'demo', sendQueueLimit: DEFAULT_SEND_QUEUE_LIMIT })
 * await endpoint.close()
 * ```
 */
export { DEFAULT_LINGER_MS, DEFAULT_REQUEST_TIMEOUT_MS, DEFAULT_SEND_QUEUE_LIMIT, type TransportComponents } from './endpoint-core.js'
