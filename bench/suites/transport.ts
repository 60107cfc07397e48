/**
 * `npm run bench -- transport`: tensor throughput of the ZeroMQ transport against raw-socket
 * baselines measured in the same run, over tcp loopback and ipc (unix domain), for 4 MiB and
 * 64 MiB tensors.
 *
 * The parent process receives; a forked child sends. Every receiver ends with whole tensors in one
 * reused buffer, so all kinds do the same work:
 * - `phalanx`: `@phalanx/transport/zmq` endpoints; the handler joins the frames with
 *   `decodeTensors(envelope, () => reused)`.
 * - `zeromq`: bare zeromq.js Dealer → Router with the same frame split: what the library costs.
 * - `net`: a node:net socket read with `'data'` events, copied into the reused buffer (the
 *   ordinary Node stream API; the baseline of the target).
 * - `net-onread`: a node:net socket read with `onread` into a reused 4 MiB buffer (the fastest
 *   Node can read a socket; informational).
 * Throughput runs from the arrival of the first complete tensor to the last; best of `--reps`
 * interleaved runs, so every kind sees the same machine load.
 *
 * Options: `--reps N` (default 3), `--mib N` (payload per run, default 512), `--frame-kib N`
 * (frame size of the zmq kinds, default 8192).
 */
import { fork, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { decodeTensors, type Endpoint } from '@phalanx/core'
import { zmqTransport } from '@phalanx/transport/zmq'
import * as zmq from 'zeromq'
import { progress, writeBenchResult, type Metric } from '../report.js'

const MiB = 1024 * 1024
const GiB = 1024 * MiB
const KINDS = ['net', 'net-onread', 'zeromq', 'phalanx'] as const
type Kind = typeof KINDS[number]
type Net = 'tcp' | 'ipc'

interface RunCommand { cmd: 'run', kind: Kind, address: string, size: number, count: number, frameBytes: number }
interface ListenCommand { cmd: 'listen', path?: string }
interface ChildReply { sent?: true, closed?: true, address?: string, error?: string }

function arg (name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`)
  const value = at >= 0 ? Number(process.argv[at + 1]) : fallback
  return Number.isFinite(value) && value > 0 ? value : fallback
}

const FRAME_BYTES = arg('frame-kib', 8192) * 1024

function tcpPort (address: string): number {
  return Number(new URL(address.replace('tcp://', 'http://')).port)
}

// ---------------------------------------------------------------- sender (child process)

async function child (): Promise<void> {
  const payloads = new Map<number, Float32Array>()
  const payload = (size: number): Float32Array => {
    let p = payloads.get(size)
    if (p === undefined) {
      p = new Float32Array(size / 4)
      for (let i = 0; i < p.length; i += 1024) p[i] = i
      payloads.set(size, p)
    }
    return p
  }
  let close: (() => Promise<void>) | undefined
  let accepted: Promise<Socket | undefined> = Promise.resolve(undefined)
  const reply = (m: ChildReply): void => { process.send?.(m) }

  const run = async (message: RunCommand): Promise<void> => {
    const data = payload(message.size)
    // The array is only read, never changed, so sending it again and again is safe.
    const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength)
    if (message.kind === 'phalanx') {
      const endpoint = await zmqTransport().open({ id: 'bench-sender', job: 'bench', listen: 'tcp://127.0.0.1:0', limits: { maxFrameBytes: message.frameBytes } })
      close = async () => { await endpoint.close({ lingerMs: 10_000 }) }
      endpoint.connect('receiver', message.address)
      for (let i = 0; i < message.count; i++) await endpoint.send('receiver', { type: 'tensor', tensors: [{ name: 't', shape: [data.length], dtype: 'float32', data }] })
    } else if (message.kind === 'zeromq') {
      const dealer = new zmq.Dealer({ routingId: 'bench-sender', sendHighWaterMark: 8, linger: 10_000 })
      close = async () => { dealer.close() }
      dealer.connect(message.address)
      const frames: Buffer[] = [Buffer.from('header')]
      for (let off = 0; off < bytes.length; off += message.frameBytes) frames.push(bytes.subarray(off, off + message.frameBytes))
      for (let i = 0; i < message.count; i++) await dealer.send(frames)
    } else if (message.kind === 'net') {
      const socket = message.address.startsWith('ipc://') ? netConnect(message.address.slice(6)) : netConnect(tcpPort(message.address), '127.0.0.1')
      await once(socket, 'connect')
      close = async () => { socket.end(); await once(socket, 'close') }
      for (let i = 0; i < message.count; i++) if (!socket.write(bytes)) await once(socket, 'drain')
    } else {
      const socket = await accepted
      if (socket === undefined) throw new Error('run before listen')
      for (let i = 0; i < message.count; i++) if (!socket.write(bytes)) await once(socket, 'drain')
    }
  }

  const listen = async (message: ListenCommand): Promise<string> => {
    // The onread baseline: the child listens, the parent dials and reads into a reused buffer.
    const server = createServer()
    accepted = new Promise<Socket>((resolve) => { server.once('connection', resolve) })
    if (message.path === undefined) server.listen(0, '127.0.0.1')
    else server.listen(message.path)
    await once(server, 'listening')
    const info = server.address()
    close = async () => {
      const socket = await accepted
      socket?.end()
      server.close()
      await once(server, 'close')
      accepted = Promise.resolve(undefined)
    }
    return typeof info === 'object' && info !== null ? `tcp://127.0.0.1:${info.port}` : `ipc://${message.path ?? ''}`
  }

  process.on('message', (message: RunCommand | ListenCommand | { cmd: 'finish' } | { cmd: 'exit' }) => {
    void (async () => {
      try {
        if (message.cmd === 'exit') process.exit(0)
        if (message.cmd === 'finish') {
          await close?.()
          close = undefined
          reply({ closed: true })
        } else if (message.cmd === 'listen') {
          reply({ address: await listen(message) })
        } else {
          await run(message)
          reply({ sent: true })
        }
      } catch (err) {
        reply({ error: String((err as Error).stack ?? err) })
      }
    })()
  })
}

// ---------------------------------------------------------------- receiver (parent process)

async function ask (sender: ChildProcess, message: object, expect: keyof ChildReply): Promise<ChildReply> {
  const replies = once(sender, 'message') as Promise<[ChildReply]>
  sender.send(message)
  for (let pending = replies; ; pending = once(sender, 'message') as Promise<[ChildReply]>) {
    const [reply] = await pending
    if (reply.error !== undefined) throw new Error(`sender failed: ${reply.error}`)
    if (reply[expect] !== undefined) return reply
  }
}

/** Receives `count` tensors of `size` bytes; resolves with GiB/s between the first and the last. */
async function measure (sender: ChildProcess, kind: Kind, net: Net, size: number, count: number, dir: string, run: number): Promise<number> {
  const out = new Float32Array(size / 4)
  const target = new Uint8Array(out.buffer)
  const arrivals: number[] = []
  let resolveDone: () => void = () => {}
  const done = new Promise<void>((resolve) => { resolveDone = resolve })
  const arrived = (): void => {
    arrivals.push(performance.now())
    if (arrivals.length === count) resolveDone()
  }
  let received = 0
  const consume = (chunk: Uint8Array, n: number): void => {
    let off = 0
    while (off < n) {
      const at = received % size
      const k = Math.min(size - at, n - off)
      target.set(chunk.subarray(off, off + k), at)
      off += k
      received += k
      if (received % size === 0) arrived()
    }
  }
  const zmqListen = net === 'tcp' ? 'tcp://127.0.0.1:0' : `ipc://${join(dir, `${kind}-${run}.sock`)}`
  let address: string
  let shutdown: () => Promise<void>
  if (kind === 'phalanx') {
    const endpoint: Endpoint = await zmqTransport().open({ id: 'receiver', job: 'bench', listen: zmqListen, limits: { maxFrameBytes: FRAME_BYTES } })
    endpoint.handle('tensor', (envelope) => {
      decodeTensors(envelope, () => out)
      arrived()
    })
    address = endpoint.address
    shutdown = async () => { await endpoint.close({ lingerMs: 0 }) }
  } else if (kind === 'zeromq') {
    const router = new zmq.Router({ receiveHighWaterMark: 8, linger: 0 })
    await router.bind(zmqListen.replace(/:0$/, ':*'))
    address = router.lastEndpoint ?? ''
    const loop = (async () => {
      for await (const [, , ...frames] of router) {
        let off = 0
        for (const f of frames) { target.set(f, off); off += f.length }
        arrived()
      }
    })()
    shutdown = async () => { router.close(); await loop }
  } else if (kind === 'net') {
    const server: Server = createServer((socket: Socket) => {
      socket.on('data', (chunk: Buffer) => { consume(chunk, chunk.length) })
      socket.on('error', () => {})
    })
    if (net === 'tcp') server.listen(0, '127.0.0.1')
    else server.listen(join(dir, `${kind}-${run}.sock`))
    await once(server, 'listening')
    const info = server.address()
    address = typeof info === 'object' && info !== null ? `tcp://127.0.0.1:${info.port}` : `ipc://${join(dir, `${kind}-${run}.sock`)}`
    shutdown = async () => { server.close(); await once(server, 'close') }
  } else {
    const reply = await ask(sender, net === 'tcp' ? { cmd: 'listen' } : { cmd: 'listen', path: join(dir, `${kind}-${run}.sock`) }, 'address')
    address = reply.address ?? ''
    const onread = { buffer: Buffer.allocUnsafe(4 * MiB), callback: (n: number, buf: Uint8Array): boolean => { consume(buf, n); return true } }
    const socket = address.startsWith('ipc://')
      ? netConnect({ path: address.slice(6), onread })
      : netConnect({ port: tcpPort(address), host: '127.0.0.1', onread })
    await once(socket, 'connect')
    socket.on('error', () => {})
    shutdown = async () => { socket.destroy() }
  }
  try {
    await ask(sender, { cmd: 'run', kind, address, size, count, frameBytes: FRAME_BYTES } satisfies RunCommand, 'sent')
    await done
    await ask(sender, { cmd: 'finish' }, 'closed')
  } finally {
    await shutdown()
  }
  const first = arrivals[0] as number
  const last = arrivals[arrivals.length - 1] as number
  return ((count - 1) * size / GiB) / ((last - first) / 1000)
}

async function main (): Promise<void> {
  const reps = arg('reps', 3)
  const perRun = arg('mib', 512) * MiB
  const dir = mkdtempSync(join(tmpdir(), 'phx-bench-'))
  const sender = fork(fileURLToPath(import.meta.url), ['--child'], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const metrics: Record<string, Metric> = {}
  const started = performance.now()
  try {
    for (const net of ['tcp', 'ipc'] as const) {
      for (const sizeMiB of [4, 64]) {
        const size = sizeMiB * MiB
        const count = Math.max(4, Math.round(perRun / size) + 1)
        const best: Record<Kind, number> = { net: 0, 'net-onread': 0, zeromq: 0, phalanx: 0 }
        for (let rep = 0; rep < reps; rep++) {
          for (const kind of KINDS) {
            const gibps = await measure(sender, kind, net, size, count, dir, rep)
            best[kind] = Math.max(best[kind], gibps)
            progress(`${net} ${sizeMiB} MiB ${kind} rep ${rep + 1}/${reps}: ${gibps.toFixed(2)} GiB/s`)
          }
        }
        const label = `${net}_${sizeMiB}MiB`
        metrics[`zmq_${label}_ratio`] = { value: best.phalanx / best.net, unit: 'x', target: 0.8, better: 'higher' }
        metrics[`zmq_${label}_ratio_vs_onread`] = { value: best.phalanx / best['net-onread'], unit: 'x', target: null, better: 'higher' }
        metrics[`zmq_${label}_vs_bare_zeromq`] = { value: best.phalanx / best.zeromq, unit: 'x', target: null, better: 'higher' }
        for (const kind of KINDS) metrics[`${kind.replace('-', '_')}_${label}_gibps`] = { value: best[kind], unit: 'GiB/s', target: null, better: 'higher' }
      }
    }
  } finally {
    sender.send({ cmd: 'exit' })
    rmSync(dir, { recursive: true, force: true })
  }
  writeBenchResult('transport', metrics, {
    method: `parent receives, forked child sends; best of ${reps} interleaved runs of ~${perRun / MiB} MiB each; zmq frames of ${FRAME_BYTES / 1024} KiB; ` +
      'ratio = phalanx zmq / node:net socket read with data events; ratio_vs_onread = against a socket read with onread into a reused buffer; vs_bare_zeromq = against zeromq.js Dealer->Router with the same frames',
    seconds: Math.round((performance.now() - started) / 100) / 10
  })
}

if (process.argv.includes('--child')) await child()
else await main()
