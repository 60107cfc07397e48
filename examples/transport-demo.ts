/**
 * Two ZeroMQ endpoints on tcp loopback: a "server" that doubles the tensor it is sent, and a
 * "client" that sends it 16 MiB tensors and prints the round-trip throughput. Then the same
 * exchange once more over CURVE with an allow-list.
 *
 * Run: npx tsx examples/transport-demo.ts
 */
import { decodeTensors, type Envelope } from '@phalanx/core'
import { generateKeyPair, zmqTransport } from '@phalanx/transport/zmq'

const MiB = 1024 * 1024
const transport = zmqTransport()

function doubled (envelope: Envelope): { type: string, tensors: Array<{ name: string, shape: readonly number[], dtype: 'float32', data: Float32Array }> } {
  const [t] = decodeTensors(envelope)
  if (t === undefined) return { type: 'doubled', tensors: [] }
  // Received frames are views over ZeroMQ's buffers: write the result into a new array.
  const data = new Float32Array(t.data.length)
  for (let i = 0; i < data.length; i++) data[i] = 2 * (t.data[i] as number)
  return { type: 'doubled', tensors: [{ name: t.name, shape: t.shape, dtype: 'float32', data }] }
}

// Plain text: fastest, for a trusted network.
const server = await transport.open({ id: 'server', job: 'demo', listen: 'tcp://127.0.0.1:0' })
const client = await transport.open({ id: 'client', job: 'demo' })
server.handle('double', doubled)
client.connect('server', server.address)

const n = (16 * MiB) / 4
const rounds = 10
const started = performance.now()
let check = 0
for (let r = 0; r < rounds; r++) {
  // A fresh array per send: a sent array must not be reused (ZeroMQ sends it zero-copy).
  const data = new Float32Array(n).fill(r)
  const reply = await client.request('server', { type: 'double', tensors: [{ name: 'x', shape: [n], dtype: 'float32', data }] }, { timeoutMs: 10_000 })
  check += decodeTensors(reply)[0]?.data[n - 1] ?? Number.NaN
}
const seconds = (performance.now() - started) / 1000
const moved = 2 * rounds * n * 4
console.log(`plain tcp: ${rounds} round trips of a 16 MiB tensor in ${seconds.toFixed(2)} s = ${(moved / seconds / 2 ** 30).toFixed(2)} GiB/s both ways, doubling included (check ${check} = ${2 * (rounds * (rounds - 1)) / 2})`)
console.log('server stats:', server.stats())
await Promise.all([client.close(), server.close()])

// CURVE: encrypted, and the server accepts only the client's public key.
const serverKeys = generateKeyPair()
const clientKeys = generateKeyPair()
const secureServer = await transport.open({ id: 'server', job: 'demo', curve: { ...serverKeys, allow: [clientKeys.publicKey] } })
const secureClient = await transport.open({ id: 'client', job: 'demo', curve: { ...clientKeys } })
secureServer.handle('double', doubled)
secureClient.connect('server', secureServer.address, { serverKey: serverKeys.publicKey })
const small = new Float32Array([1, 2, 3])
const reply = await secureClient.request('server', { type: 'double', tensors: [{ name: 'x', shape: [3], dtype: 'float32', data: small }] })
console.log(`curve: [1, 2, 3] doubled = [${Array.from(decodeTensors(reply)[0]?.data ?? []).join(', ')}]`)
await Promise.all([secureClient.close(), secureServer.close()])
