import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** True when an `etcd` binary is on PATH (scripts/ci-services.sh installs one). */
export const hasEtcd = spawnSync('sh', ['-c', 'command -v etcd'], { encoding: 'utf8' }).status === 0

async function freePort (): Promise<number> {
  const s = createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  const port = (s.address() as AddressInfo).port
  await new Promise<void>((resolve) => s.close(() => { resolve() }))
  return port
}

/** A throw-away single-member etcd on loopback with a temporary data dir. */
export interface EtcdServer {
  url: string
  stop(): Promise<void>
}

/**
 * Starts etcd with a short election timeout (500 ms), so it grants 1 s leases, and resolves once it
 * serves clients (rejects after 20 s).
 */
export async function startEtcd (): Promise<EtcdServer> {
  const dir = mkdtempSync(join(tmpdir(), 'phalanx-etcd-'))
  const [client, peer] = [await freePort(), await freePort()]
  const url = `http://127.0.0.1:${client}`
  const child: ChildProcess = spawn('etcd', [
    '--name', 'test', '--data-dir', join(dir, 'data'),
    '--listen-client-urls', url, '--advertise-client-urls', url,
    '--listen-peer-urls', `http://127.0.0.1:${peer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`,
    '--initial-cluster', `test=http://127.0.0.1:${peer}`,
    '--heartbeat-interval', '50', '--election-timeout', '500', '--log-level', 'error'
  ], { stdio: ['ignore', 'ignore', 'pipe'] })
  const exited = new Promise<void>((resolve) => child.once('exit', () => { resolve() }))
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await exited
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    const deadline = Date.now() + 20_000
    for (;;) {
      if (child.exitCode !== null) throw new Error(`etcd exited with ${child.exitCode}`)
      const ok = await fetch(`${url}/health`).then((r) => r.ok, () => false)
      if (ok) break
      if (Date.now() > deadline) throw new Error('etcd did not become healthy within 20 s')
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  } catch (err) {
    await stop()
    throw err
  }
  return { url, stop }
}
