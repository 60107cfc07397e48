/**
 * The ZeroMQ transport (zeromq 6 / libzmq 4.3).
 *
 * Each endpoint binds one ROUTER socket and dials every connected peer with its own DEALER whose
 * routing id is the endpoint's id. Requests and messages travel DEALER → ROUTER; replies go back
 * over the same connection (ROUTER → the requester's routing id), so no reverse dial is needed.
 * Frame 0 is the msgpack header, frames 1..n raw tensor bytes of at most `maxFrameBytes`, received
 * as zero-copy Buffers. Per peer, one DEALER and one in-flight `send` behind a bounded queue give
 * ordered delivery and `QueueFullError` back-pressure.
 *
 * With `curve`, every socket uses CURVE (encryption and server authentication); `curve.allow`
 * restricts the clients this endpoint's ROUTER accepts to a list of public keys (checked by a ZAP
 * handler in the endpoint's own ZeroMQ context). Plain-text clients are refused by CURVE itself.
 *
 * @example
 * ```ts
 * import { zmqTransport } from '@phalanx/transport/zmq'
 *
 * const transport = zmqTransport()
 * const server = await transport.open({ id: 'server', job: 'demo', listen: 'tcp://127.0.0.1:0' })
 * const client = await transport.open({ id: 'client', job: 'demo' })
 * server.handle('ping', () => ({ type: 'pong' }))
 * client.connect('server', server.address)
 * await client.request('server', { type: 'ping' })
 * await Promise.all([client.close(), server.close()])
 * ```
 *
 * @module
 */
import {
  ClosedError, DEFAULT_WIRE_LIMITS, InvalidParametersError, MalformedMessageError, PeerUnreachableError, QueueFullError, UnauthorizedPeerError,
  throwIfAborted, type AbortOptions, type Endpoint, type EndpointInit, type Logger, type PeerId, type Transport
} from '@phalanx/core'
import * as zmq from 'zeromq'
import { assertCurveKey, z85Encode, type CurveKeyPair } from './curve-keys.js'
import { createEndpointCore, validateEndpointInit, type Driver, type DriverSink, type TransportComponents } from './endpoint-core.js'

export { isCurveKey, readKeyFile, writeKeyFile, z85Decode, z85Encode, type CurveKeyPair } from './curve-keys.js'
export type { TransportComponents } from './endpoint-core.js'

/** CURVE settings of one endpoint. */
export interface ZmqCurveOptions {
  /** This endpoint's public key (Z85). */
  publicKey: string
  /** This endpoint's secret key (Z85). Never logged. */
  secretKey: string
  /**
   * Client public keys allowed to connect to this endpoint's ROUTER. When absent, any client with
   * a CURVE key pair is accepted (traffic is still encrypted and the server still authenticated).
   */
  allow?: readonly string[]
  /** Server public keys of peers, by peer id (or pass `serverKey` to `connect`). */
  serverKeys?: Readonly<Record<PeerId, string>>
}

/** What a ZeroMQ endpoint is opened with. */
export interface ZmqEndpointInit extends EndpointInit {
  /** Turns on CURVE for every socket of this endpoint. @default plain text */
  curve?: ZmqCurveOptions
}

/** Options of {@link ZmqEndpoint.connect}. */
export interface ZmqConnectOptions {
  /** The peer's CURVE public key; overrides `curve.serverKeys[peer]`. */
  serverKey?: string
}

/** A ZeroMQ {@link Endpoint}; `connect` also takes the peer's CURVE server key. */
export interface ZmqEndpoint extends Endpoint {
  /** This endpoint's CURVE public key, when CURVE is on. */
  readonly publicKey: string | undefined
  connect(peer: PeerId, address: string, options?: ZmqConnectOptions): void
}

/** Tunables of {@link zmqTransport}. */
export interface ZmqTransportInit {
  /**
   * ZMQ_SNDHWM of each per-peer DEALER, in messages (sent buffers stay referenced until they leave).
   * Together with `sendQueueLimit` it bounds what one peer can hold: mind large tensors.
   * @default 8
   */
  sendHighWaterMark?: number
  /**
   * ZMQ_RCVHWM of every socket, in messages per connection: up to this many whole messages per peer
   * wait in ZeroMQ while JavaScript is busy (8 × a 64 MiB tensor = 512 MiB).
   * @default 8
   */
  receiveHighWaterMark?: number
  /**
   * ZMQ_RECONNECT_IVL: how often a DEALER retries a lost connection.
   * @default 100
   */
  reconnectIntervalMs?: number
}

/** The ZeroMQ {@link Transport}. */
export interface ZmqTransport extends Transport {
  open(init: ZmqEndpointInit, options?: AbortOptions): Promise<ZmqEndpoint>
}

/** Generates a CURVE key pair (Z85). */
export function generateKeyPair (): CurveKeyPair {
  const { publicKey, secretKey } = zmq.curveKeyPair()
  return { publicKey, secretKey }
}

const ZAP_ADDRESS = 'inproc://zeromq.zap.01'
const ZAP_DOMAIN = 'phalanx'
const DEFAULT_LISTEN = 'tcp://127.0.0.1:0'

/** Serialises sends on one socket (zeromq allows one blocked send at a time), with a bound. */
interface SerialSender {
  send(frames: Uint8Array[]): Promise<void>
}

function serialSender (socket: zmq.Writable, limit: number): SerialSender {
  let tail: Promise<void> = Promise.resolve()
  let queued = 0
  return {
    async send (frames) {
      if (queued >= limit) throw new QueueFullError('Socket send queue is full')
      queued++
      const run = tail.then(async () => { await socket.send(frames) })
      tail = run.then(() => {}, () => {})
      try {
        await run
      } finally {
        queued--
      }
    }
  }
}

/** A printable peer label: the routing id as text, or hex when ZeroMQ generated it (leading 0 byte). */
function routingLabel (id: Buffer): string {
  return id.length > 0 && id[0] !== 0 ? id.toString('utf8') : `0x${id.toString('hex')}`
}

function zmqAddress (address: string): string {
  // EndpointInit speaks of port 0 for "any free port"; libzmq spells it '*'.
  return address.replace(/^(tcp:\/\/[^/]*):0$/, '$1:*')
}

function closeQuietly (socket: zmq.Socket, lingerMs: number): void {
  if (socket.closed) return
  socket.linger = Math.max(0, Math.floor(lingerMs))
  socket.close()
}

async function runZapHandler (socket: zmq.Reply, allowed: ReadonlySet<string>, log: Logger): Promise<void> {
  for await (const request of socket) {
    // RFC 27: version, request id, domain, address, identity, mechanism, credentials...
    const [version, requestId, domain, address, , mechanism, credentials] = request
    const mech = mechanism?.toString('latin1') ?? ''
    const key = mech === 'CURVE' && credentials?.length === 32 ? z85Encode(credentials) : undefined
    const ok = version?.toString('latin1') === '1.0' && domain?.toString('latin1') === ZAP_DOMAIN && key !== undefined && allowed.has(key)
    if (!ok) log.warn({ mechanism: mech.slice(0, 16), publicKey: key, address: address?.toString('latin1').slice(0, 64) }, 'CURVE client refused: key not on the allow-list')
    await socket.send(['1.0', requestId ?? '', ok ? '200' : '400', ok ? 'OK' : 'Key not allowed', ok ? (key ?? '') : '', ''])
  }
}

function openZmqDriver (
  init: ZmqEndpointInit,
  transportInit: Required<ZmqTransportInit>,
  sink: DriverSink,
  log: Logger,
  bound: { router: zmq.Router, context: zmq.Context | undefined, zap: zmq.Reply | undefined, address: string }
): Driver {
  const { router, context, zap } = bound
  const curve = init.curve
  const routingId = init.id
  const socketCap = socketFrameCap(init.limits)
  const replyLimit = init.sendQueueLimit ?? 64
  const routerSender = serialSender(router, replyLimit * 16)
  let closed = false
  const loops = new Set<Promise<void>>()
  const track = (loop: Promise<void>): void => {
    loops.add(loop)
    void loop.finally(() => { loops.delete(loop) })
  }

  interface Route { address: string, serverKey: string | undefined, dealer: zmq.Dealer, sender: SerialSender, down: boolean }
  const routes = new Map<PeerId, Route>()

  const refuseHandshake = (event: zmq.EventOfType<'handshake:error:protocol' | 'handshake:error:auth' | 'handshake:error:other'>): void => {
    const code = (event.error as { code?: string }).code ?? event.type
    log.warn({ code, address: event.address }, 'connection refused during handshake')
    // With CURVE on, every handshake failure is someone without valid credentials (wrong key, plain text).
    const err = curve !== undefined || event.type === 'handshake:error:auth'
      ? new UnauthorizedPeerError(`Handshake refused (${code})`, { details: { code } })
      : new MalformedMessageError(`Handshake failed (${code})`, { details: { code } })
    sink.refuse(err, event.address)
  }
  router.events.on('handshake:error:protocol', refuseHandshake)
  router.events.on('handshake:error:auth', refuseHandshake)
  router.events.on('handshake:error:other', refuseHandshake)

  const receive = async (socket: zmq.Dealer | zmq.Router, fromRouter: boolean, dealerPeer?: PeerId, sender?: SerialSender): Promise<void> => {
    try {
      for await (const message of socket) {
        if (fromRouter) {
          const id = message[0] as Buffer
          const frames = message.slice(1)
          sink.deliver(routingLabel(id), frames, async (reply) => { await routerSender.send([id, ...reply]) })
        } else if (dealerPeer !== undefined && sender !== undefined) {
          sink.deliver(dealerPeer, message, async (reply) => { await sender.send(reply) })
        }
      }
    } catch (err) {
      if (!closed && !socket.closed) log.error({ err }, 'receive loop failed')
    }
  }
  track(receive(router, true))

  const dropRoute = (peer: PeerId, lingerMs: number): void => {
    const route = routes.get(peer)
    if (route === undefined) return
    routes.delete(peer)
    closeQuietly(route.dealer, lingerMs)
  }

  return {
    address: bound.address,
    connect (peer, address, options?: unknown) {
      if (typeof address !== 'string' || !/^(tcp|ipc|inproc):\/\/./.test(address)) throw new InvalidParametersError(`Cannot dial "${String(address)}": expected tcp://, ipc:// or inproc://`)
      const serverKey = (options as ZmqConnectOptions | undefined)?.serverKey ?? curve?.serverKeys?.[peer]
      if (curve !== undefined) assertCurveKey(serverKey, `The CURVE server key of peer "${peer}"`)
      const existing = routes.get(peer)
      if (existing?.address === address && existing.serverKey === serverKey && !existing.dealer.closed) return
      dropRoute(peer, 0)
      const dealer = new zmq.Dealer({
        ...(context === undefined ? {} : { context }),
        routingId,
        linger: 0,
        sendHighWaterMark: transportInit.sendHighWaterMark,
        receiveHighWaterMark: transportInit.receiveHighWaterMark,
        reconnectInterval: transportInit.reconnectIntervalMs,
        maxMessageSize: socketCap,
        ...(curve === undefined ? {} : { curvePublicKey: curve.publicKey, curveSecretKey: curve.secretKey, curveServerKey: serverKey as string })
      })
      const route: Route = { address, serverKey, dealer, sender: serialSender(dealer, replyLimit * 16), down: false }
      const down = (reason: string) => (event: { address?: string }) => {
        if (closed || routes.get(peer) !== route || route.down) return
        route.down = true
        log.info({ peer, reason, address: event.address }, 'lost connection to peer')
        sink.peerDown(peer)
      }
      dealer.events.on('disconnect', down('disconnect'))
      dealer.events.on('handshake:error:auth', down('refused by server'))
      dealer.events.on('handshake:error:protocol', down('handshake failed (wrong server key?)'))
      dealer.events.on('handshake:error:other', down('handshake failed'))
      dealer.events.on('handshake', () => { route.down = false })
      dealer.connect(address)
      routes.set(peer, route)
      track(receive(dealer, false, peer, route.sender))
    },
    disconnect (peer) {
      dropRoute(peer, 0)
    },
    hasRoute: (peer) => routes.has(peer),
    async write (peer, frames) {
      const route = routes.get(peer)
      if (route === undefined) throw new PeerUnreachableError(`Route to "${peer}" was removed`, { details: { peer } })
      try {
        await route.sender.send(frames)
      } catch (err) {
        if ((err as Error).name === QueueFullError.name) throw err
        // The socket closed under the send (endpoint closing or route replaced): say which.
        if (closed) throw new ClosedError('Endpoint closed during send', { cause: err })
        throw new PeerUnreachableError(`Send to "${peer}" failed`, { cause: err, details: { peer } })
      }
    },
    async close (lingerMs) {
      if (closed) return
      closed = true
      for (const peer of [...routes.keys()]) dropRoute(peer, lingerMs)
      closeQuietly(router, 0)
      if (zap !== undefined) closeQuietly(zap, 0)
      await Promise.all([...loops])
    }
  }
}

function resolveTransportInit (init: ZmqTransportInit): Required<ZmqTransportInit> {
  const resolved = {
    sendHighWaterMark: init.sendHighWaterMark ?? 8,
    receiveHighWaterMark: init.receiveHighWaterMark ?? 8,
    reconnectIntervalMs: init.reconnectIntervalMs ?? 100
  }
  for (const [key, value] of Object.entries(resolved)) {
    if (!Number.isInteger(value) || value < 1) throw new InvalidParametersError(`${key} must be a positive integer`)
  }
  return resolved
}

/**
 * Creates the ZeroMQ transport. Endpoints listen on `init.listen` (`tcp://host:port`, port 0 for a
 * free one, or `ipc:///path`); request timeouts run on `components.clock`.
 */
export function zmqTransport (init: ZmqTransportInit = {}, components: TransportComponents = {}): ZmqTransport {
  const transportInit = resolveTransportInit(init)
  return {
    name: 'zmq',
    async open (endpointInit, options = {}): Promise<ZmqEndpoint> {
      throwIfAborted(options.signal)
      if (typeof endpointInit?.id !== 'string' || Buffer.byteLength(endpointInit.id) > 255) throw new InvalidParametersError('A ZeroMQ endpoint id must be at most 255 bytes')
      validateEndpointInit(endpointInit)
      const curve = endpointInit.curve
      if (curve !== undefined) {
        assertCurveKey(curve.publicKey, 'curve.publicKey')
        assertCurveKey(curve.secretKey, 'curve.secretKey')
        for (const key of curve.allow ?? []) assertCurveKey(key, 'Every curve.allow entry')
      }
      const socketCap = socketFrameCap(endpointInit.limits)
      // An allow-list needs a ZAP handler, and ZeroMQ has one per context: give this endpoint its own.
      const context = curve?.allow === undefined ? undefined : new zmq.Context({ blocky: false })
      let zap: zmq.Reply | undefined
      const router = new zmq.Router({
        ...(context === undefined ? {} : { context }),
        handover: true,
        linger: 0,
        receiveHighWaterMark: transportInit.receiveHighWaterMark,
        sendHighWaterMark: Math.max(transportInit.sendHighWaterMark, 64),
        maxMessageSize: socketCap,
        ...(curve === undefined ? {} : { curveServer: true, curveSecretKey: curve.secretKey, curvePublicKey: curve.publicKey, zapDomain: ZAP_DOMAIN })
      })
      let address: string
      try {
        if (context !== undefined && curve?.allow !== undefined) {
          zap = new zmq.Reply({ context, linger: 0 })
          await zap.bind(ZAP_ADDRESS)
        }
        await router.bind(zmqAddress(endpointInit.listen ?? DEFAULT_LISTEN))
        address = router.lastEndpoint ?? endpointInit.listen ?? DEFAULT_LISTEN
        throwIfAborted(options.signal)
      } catch (err) {
        closeQuietly(router, 0)
        if (zap !== undefined) closeQuietly(zap, 0)
        if ((err as { name?: string }).name === 'AbortError') throw err
        throw new InvalidParametersError(`Cannot listen on "${endpointInit.listen ?? DEFAULT_LISTEN}": ${(err as Error).message}`, { cause: err })
      }
      const zapSocket = zap
      let log: Logger | undefined
      let core
      try {
        core = createEndpointCore(endpointInit, { ...components, component: 'transport-zmq' }, (sink, logger) => {
          log = logger
          return openZmqDriver(endpointInit, transportInit, sink, logger, { router, context, zap: zapSocket, address })
        })
      } catch (err) {
        closeQuietly(router, 0)
        if (zapSocket !== undefined) closeQuietly(zapSocket, 0)
        throw err
      }
      if (zapSocket !== undefined && curve?.allow !== undefined && log !== undefined) {
        const zapLog = log
        runZapHandler(zapSocket, new Set(curve.allow), zapLog).catch((err: unknown) => {
          if (!zapSocket.closed) zapLog.error({ err }, 'ZAP handler failed')
        })
      }
      const endpoint = core.endpoint as ZmqEndpoint
      Object.defineProperty(endpoint, 'publicKey', { value: curve?.publicKey, enumerable: true })
      return endpoint
    }
  }
}

/**
 * The ZMQ_MAXMSGSIZE of an endpoint's sockets: a single frame above it makes ZeroMQ drop the
 * connection before any validation (logged as a disconnect), so no peer can make us buffer it.
 */
export function socketFrameCap (limits: EndpointInit['limits'] = {}): number {
  return Math.max(limits.maxFrameBytes ?? DEFAULT_WIRE_LIMITS.maxFrameBytes, limits.maxHeaderBytes ?? DEFAULT_WIRE_LIMITS.maxHeaderBytes)
}
