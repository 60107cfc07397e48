/**
 * The in-process transport: endpoints of one {@link MemoryNetwork} exchange messages through the
 * event loop, deterministically ordered (FIFO per sender/receiver pair, delivered asynchronously
 * with `setImmediate`). It runs the same header encoding and inbound validation as the ZeroMQ
 * transport (size caps, msgpack header, schema, job id, frame checks, epoch fence), so a test
 * cluster in one process behaves like a real one, minus the network.
 *
 * **Zero copy.** Tensor frames are delivered as the sender's own bytes: the receiver's tensors are
 * views over the arrays the sender passed to `send`. Senders must treat a sent array as given away
 * (the same rule ZeroMQ imposes); receivers that keep data beyond the handler should copy it.
 *
 * @example
 * ```ts
 * import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
 *
 * const transport = memoryTransport({ network: createMemoryNetwork() })
 * const a = await transport.open({ id: 'a', job: 'demo' })
 * const b = await transport.open({ id: 'b', job: 'demo' })
 * b.handle('ping', () => ({ type: 'pong' }))
 * a.connect('b', b.address)
 * const reply = await a.request('b', { type: 'ping' })
 * ```
 *
 * @module
 */
import {
  ClosedError, InvalidParametersError, PeerUnreachableError, throwIfAborted,
  type Endpoint, type EndpointInit, type PeerId, type Transport
} from '@phalanx/core'
import { createEndpointCore, type Driver, type DriverSink, type TransportComponents } from './endpoint-core.js'

export type { TransportComponents } from './endpoint-core.js'

// Internal wiring of a network, kept off the public interface.
const NODES: unique symbol = Symbol('phalanx.memory.nodes')

interface MemoryNode {
  readonly id: PeerId
  readonly address: string
  closed: boolean
  /** Receives a message from `from` (called inside a setImmediate callback). */
  receive(from: MemoryNode, frames: readonly Uint8Array[]): void
  /** The node at `address` closed. */
  addressClosed(address: string): void
}

/**
 * A hub that in-memory endpoints register with: one per test or per simulated cluster. It holds
 * no global state, so independent networks in one process never see each other.
 */
export interface MemoryNetwork {
  /** Addresses of the endpoints currently open on this network. */
  addresses(): string[]
}

interface MemoryNetworkInternals extends MemoryNetwork {
  readonly [NODES]: Map<string, MemoryNode>
}

/** Creates an empty {@link MemoryNetwork}. */
export function createMemoryNetwork (): MemoryNetwork {
  const nodes = new Map<string, MemoryNode>()
  const network: MemoryNetworkInternals = {
    addresses: () => [...nodes.keys()],
    [NODES]: nodes
  }
  return network
}

/** Tunables of {@link memoryTransport}. */
export interface MemoryTransportInit {
  /** The network endpoints of this transport join. */
  network: MemoryNetwork
}

/** Delivers in a later macrotask, in FIFO order with every other delivery of this process. */
async function later (fn: () => void): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    setImmediate(() => {
      try {
        fn()
        resolve()
      } catch (err) {
        reject(err)
      }
    })
  })
}

function openMemoryDriver (network: MemoryNetworkInternals, init: EndpointInit, sink: DriverSink): Driver {
  const nodes = network[NODES]
  const address = init.listen ?? init.id
  if (typeof address !== 'string' || address.length === 0) throw new InvalidParametersError('Memory listen address must be a non-empty string')
  if (nodes.has(address)) throw new InvalidParametersError(`Memory address "${address}" is already in use`)
  const routes = new Map<PeerId, string>()

  const node: MemoryNode = {
    id: init.id,
    address,
    closed: false,
    receive (from, frames) {
      if (node.closed) return
      sink.deliver(from.id, frames, async (reply) => {
        await later(() => {
          if (from.closed) throw new PeerUnreachableError(`Peer "${from.id}" closed`)
          from.receive(node, reply)
        })
      })
    },
    addressClosed (closedAddress) {
      for (const [peer, a] of routes) if (a === closedAddress) sink.peerDown(peer)
    }
  }
  nodes.set(address, node)

  return {
    address,
    connect (peer, peerAddress) {
      if (typeof peerAddress !== 'string' || peerAddress.length === 0) throw new InvalidParametersError('Memory address must be a non-empty string')
      routes.set(peer, peerAddress)
    },
    disconnect (peer) {
      routes.delete(peer)
    },
    hasRoute: (peer) => routes.has(peer),
    async write (peer, frames) {
      const target = nodes.get(routes.get(peer) ?? '')
      if (target === undefined || target.closed) throw new PeerUnreachableError(`Nothing listens at "${routes.get(peer) ?? ''}" for peer "${peer}"`, { details: { peer } })
      // Resolving at delivery keeps at most one message in flight per peer: the send queue bounds memory.
      await later(() => {
        if (node.closed) throw new ClosedError('Endpoint closed before delivery')
        if (target.closed) throw new PeerUnreachableError(`Peer "${peer}" closed before delivery`, { details: { peer } })
        target.receive(node, frames)
      })
    },
    async close () {
      if (node.closed) return
      node.closed = true
      if (nodes.get(address) === node) nodes.delete(address)
      for (const other of nodes.values()) other.addressClosed(address)
    }
  }
}

/**
 * The in-memory {@link Transport}. Endpoints listen at `init.listen` (any string; default the id)
 * on `network`; request timeouts run on `components.clock` so tests can use a fake clock.
 */
export function memoryTransport (init: MemoryTransportInit, components: TransportComponents = {}): Transport {
  const network = init?.network as Partial<MemoryNetworkInternals> | undefined
  if (network?.[NODES] === undefined) throw new InvalidParametersError('memoryTransport needs a network from createMemoryNetwork()')
  const internals = network as MemoryNetworkInternals
  return {
    name: 'memory',
    async open (endpointInit, options = {}): Promise<Endpoint> {
      throwIfAborted(options.signal)
      const { endpoint } = createEndpointCore(endpointInit, { ...components, component: 'transport-memory' },
        (sink) => openMemoryDriver(internals, endpointInit, sink))
      return endpoint
    }
  }
}
