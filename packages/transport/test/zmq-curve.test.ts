import { chmod, mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Endpoint, RejectedEvent } from '@phalanx/core'
import { generateKeyPair, isCurveKey, readKeyFile, writeKeyFile, z85Decode, z85Encode, zmqTransport, type ZmqEndpoint, type ZmqEndpointInit } from '@phalanx/transport/zmq'
import { afterEach, describe, expect, it } from 'vitest'

describe('zmq CURVE', () => {
  const opened: Endpoint[] = []
  afterEach(async () => {
    await Promise.all(opened.splice(0).map(async (e) => { await e.close({ lingerMs: 0 }) }))
  })

  const open = async (init: Partial<ZmqEndpointInit> & { id: string }): Promise<ZmqEndpoint> => {
    const endpoint = await zmqTransport().open({ job: 'secure', listen: 'tcp://127.0.0.1:0', ...init })
    opened.push(endpoint)
    return endpoint
  }

  const serverKeys = generateKeyPair()
  const allowedKeys = generateKeyPair()
  const strangerKeys = generateKeyPair()

  const openServer = async (): Promise<{ server: ZmqEndpoint, served: () => number, refused: Promise<RejectedEvent> }> => {
    const server = await open({ id: 'server', curve: { ...serverKeys, allow: [allowedKeys.publicKey] } })
    let served = 0
    server.handle('ping', () => { served++; return { type: 'pong' } })
    const refused = new Promise<RejectedEvent>((resolve) => { server.on('rejected', resolve) })
    return { server, served: () => served, refused }
  }

  it('serves an authorised client and reports its public key', async () => {
    const { server, served } = await openServer()
    const client = await open({ id: 'client', curve: { ...allowedKeys, serverKeys: { server: serverKeys.publicKey } } })
    expect(server.publicKey).toBe(serverKeys.publicKey)
    client.connect('server', server.address)
    server.connect('client', 'tcp://127.0.0.1:1', { serverKey: allowedKeys.publicKey })
    await expect(client.request('server', { type: 'ping' })).resolves.toMatchObject({ header: { type: 'pong' }, peer: 'server' })
    expect(served()).toBe(1)
  })

  it('refuses a client whose key is not on the allow-list', async () => {
    const { server, served, refused } = await openServer()
    const stranger = await open({ id: 'stranger', curve: { ...strangerKeys, serverKeys: { server: serverKeys.publicKey } } })
    stranger.connect('server', server.address)
    const attempt = expect(stranger.request('server', { type: 'ping' }, { timeoutMs: 10_000 })).rejects.toMatchObject({ name: 'PeerUnreachableError' })
    expect(await refused).toMatchObject({ reason: 'UnauthorizedPeerError' })
    await attempt
    expect(served()).toBe(0)
    expect(server.stats().received).toBe(0)
  })

  it('refuses a client that expects the wrong server key', async () => {
    const { server, served, refused } = await openServer()
    const confused = await open({ id: 'confused', curve: { ...allowedKeys } })
    confused.connect('server', server.address, { serverKey: strangerKeys.publicKey })
    const attempt = expect(confused.request('server', { type: 'ping' }, { timeoutMs: 10_000 })).rejects.toMatchObject({ name: 'PeerUnreachableError' })
    expect(await refused).toMatchObject({ reason: 'UnauthorizedPeerError' })
    await attempt
    expect(served()).toBe(0)
  })

  it('refuses a plain-text client', async () => {
    const { server, served, refused } = await openServer()
    const plain = await open({ id: 'plain' })
    plain.connect('server', server.address)
    const attempt = expect(plain.request('server', { type: 'ping' }, { timeoutMs: 10_000 })).rejects.toMatchObject({ name: 'PeerUnreachableError' })
    expect(await refused).toMatchObject({ reason: 'UnauthorizedPeerError' })
    await attempt
    expect(served()).toBe(0)
  })

  it('validates keys up front', async () => {
    await expect(zmqTransport().open({ id: 'x', job: 'j', curve: { publicKey: 'short', secretKey: serverKeys.secretKey } }))
      .rejects.toMatchObject({ name: 'InvalidParametersError' })
    const client = await open({ id: 'client', curve: { ...allowedKeys } })
    expect(() => { client.connect('server', 'tcp://127.0.0.1:1') }).toThrow(expect.objectContaining({ name: 'InvalidParametersError' }))
  })
})

describe('CURVE key files', () => {
  let dir = ''
  afterEach(async () => { if (dir !== '') await rm(dir, { recursive: true, force: true }) })

  it('round-trips a key pair with mode 0600 and refuses a group/world-readable secret', async () => {
    dir = await mkdtemp(join(tmpdir(), 'phx-keys-'))
    const keys = generateKeyPair()
    const path = join(dir, 'worker.key')
    await writeKeyFile(path, keys)
    expect((await stat(path)).mode & 0o777).toBe(0o600)
    expect(await readKeyFile(path)).toEqual(keys)
    await chmod(path, 0o644)
    await expect(readKeyFile(path)).rejects.toMatchObject({ name: 'InvalidConfigError', details: { mode: '644' } })
    const pub = join(dir, 'worker.pub')
    await writeKeyFile(pub, { publicKey: keys.publicKey })
    await chmod(pub, 0o644)
    expect(await readKeyFile(pub)).toEqual({ publicKey: keys.publicKey })
    await expect(readKeyFile(join(dir, 'missing.key'))).rejects.toMatchObject({ name: 'NotFoundError' })
  })

  it('encodes Z85 as ZeroMQ does', () => {
    // The test vector of ZeroMQ RFC 32.
    const bytes = new Uint8Array([0x86, 0x4f, 0xd2, 0x6f, 0xb5, 0x59, 0xf7, 0x5b])
    expect(z85Encode(bytes)).toBe('HelloWorld')
    expect(Array.from(z85Decode('HelloWorld'))).toEqual(Array.from(bytes))
    const keys = generateKeyPair()
    expect(z85Decode(keys.publicKey)).toHaveLength(32)
    expect(z85Encode(z85Decode(keys.secretKey))).toBe(keys.secretKey)
    expect(isCurveKey(keys.publicKey)).toBe(true)
    expect(isCurveKey('x'.repeat(39))).toBe(false)
    expect(isCurveKey('~'.repeat(40))).toBe(false)
  })
})
