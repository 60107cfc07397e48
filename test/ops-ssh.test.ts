/**
 * End-to-end through a real sshd on the loopback: `phalanx launch --hosts 127.0.0.1,localhost`
 * starts the coordinator and two workers with `ssh -o BatchMode=yes`; one worker's remote process is
 * killed with `kill -9` (through ssh) mid-run and the job must finish with the survivor's weights
 * bit-identical to the fault-free reference; SIGINT to the launcher must stop every remote process.
 *
 * The sshd is the one `scripts/ci-services.sh` starts on 127.0.0.1:2222 (keys in /tmp/phalanx-sshd);
 * when that one is not running, the test starts a private sshd the same way (throwaway host and
 * client keys in a temp dir, key logins only) on a free loopback port.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { freePort, type LaunchSummary } from '@phalanx/cli'
import { BIN, JOB, JOB_FLAGS, ROOT, referenceChecksum, waitForStatus } from './cli-harness.js'

const SSHD = ['/usr/sbin/sshd', '/usr/bin/sshd'].find((p) => existsSync(p))
const hasSsh = SSHD !== undefined && spawnSync('sh', ['-c', 'command -v ssh && command -v ssh-keygen']).status === 0
const CI_DIR = process.env.PHALANX_SSHD_DIR ?? '/tmp/phalanx-sshd'

interface Sshd { port: number, key: string, knownHosts: string, proc?: ChildProcess, dir: string }

function sshBase (s: Sshd): string[] {
  return ['-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=accept-new', '-o', `UserKnownHostsFile=${s.knownHosts}`, '-o', 'LogLevel=ERROR', '-i', s.key, '-p', String(s.port)]
}

function canLogIn (s: Sshd): boolean {
  return spawnSync('ssh', [...sshBase(s), '-o', 'ConnectTimeout=5', '127.0.0.1', 'true'], { timeout: 10_000 }).status === 0
}

/** The CI sshd when it answers, else a private one (stopped in afterAll). */
async function startSshd (): Promise<Sshd> {
  const dir = mkdtempSync(join(tmpdir(), 'phalanx-ssh-'))
  const knownHosts = join(dir, 'known_hosts')
  const ci: Sshd = { port: 2222, key: join(CI_DIR, 'client_key'), knownHosts, dir }
  if (existsSync(ci.key) && canLogIn(ci)) return ci
  for (const k of ['host_key', 'client_key']) execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, k)])
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'client_key.pub')), { mode: 0o600 })
  const port = await freePort()
  writeFileSync(join(dir, 'sshd_config'), [
    `ListenAddress 127.0.0.1:${port}`, `HostKey ${join(dir, 'host_key')}`, `PidFile ${join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`, 'PubkeyAuthentication yes', 'PasswordAuthentication no',
    'KbdInteractiveAuthentication no', 'PermitRootLogin prohibit-password', 'UsePAM no', 'StrictModes no', 'UseDNS no',
    'AllowTcpForwarding local', 'X11Forwarding no', 'PermitTTY no', 'LogLevel ERROR', ''
  ].join('\n'))
  // sshd refuses to start without its privilege separation directory (root only; harmless otherwise).
  try { mkdirSync('/run/sshd', { recursive: true, mode: 0o755 }) } catch { /* not root: sshd runs unprivileged */ }
  const proc = spawn(SSHD as string, ['-D', '-f', join(dir, 'sshd_config'), '-E', join(dir, 'sshd.log')], { stdio: 'ignore' })
  const s: Sshd = { port, key: join(dir, 'client_key'), knownHosts, proc, dir }
  for (let i = 0; i < 50 && proc.exitCode === null; i++) {
    if (canLogIn(s)) return s
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  proc.kill('SIGKILL')
  throw new Error(`private sshd did not accept logins: ${existsSync(join(dir, 'sshd.log')) ? readFileSync(join(dir, 'sshd.log'), 'utf8') : ''}`)
}

interface Record { id: string, host: string, pid?: number }

function processes (runDir: string): Record[] {
  const file = join(runDir, 'ssh-processes.json')
  return existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) as Record[] : []
}

function isAlive (pid: number): boolean {
  try { process.kill(pid, 0); return true } catch { return false }
}

describe.skipIf(!hasSsh)('phalanx launch --hosts over a real sshd (skipped: no sshd/ssh/ssh-keygen; apt-get install openssh-server)', () => {
  let sshd: Sshd
  let reference = 0
  let launcher: ChildProcess | undefined
  let runDir: string | undefined
  beforeAll(async () => {
    reference = referenceChecksum()
    sshd = await startSshd()
  }, 20_000)
  afterAll(() => {
    sshd?.proc?.kill('SIGTERM')
    if (sshd !== undefined) rmSync(sshd.dir, { recursive: true, force: true })
  })
  afterEach(() => {
    if (launcher?.pid !== undefined && launcher.exitCode === null && launcher.signalCode === null) {
      try { process.kill(-launcher.pid, 'SIGKILL') } catch { /* already gone */ }
    }
    // The hosts are this machine: whatever remote process is left can be killed from here.
    if (runDir !== undefined) for (const p of processes(runDir)) if (p.pid !== undefined && isAlive(p.pid)) process.kill(-p.pid, 'SIGKILL')
    launcher = undefined
    runDir = undefined
  })

  const start = async (extra: string[]): Promise<{ exited: Promise<number | null>, output: () => string, summaryFile: string }> => {
    runDir = join(sshd.dir, `run-${Date.now()}`)
    const summaryFile = join(runDir, 'launcher-summary.json')
    mkdirSync(runDir, { recursive: true })
    const ssh = ['--ssh-port', String(sshd.port), '--ssh-key', sshd.key, '--ssh-opt', 'StrictHostKeyChecking=accept-new', '--ssh-opt', `UserKnownHostsFile=${sshd.knownHosts}`, '--ssh-opt', 'LogLevel=ERROR']
    const proc = spawn(process.execPath, [BIN, 'launch', '--hosts', '127.0.0.1,localhost', '--workers', '2', ...ssh, '--run-dir', runDir,
      '--port', String(await freePort()), '--status-port', String(await freePort()), '--summary-json', summaryFile, '--timeout-ms', '60000', ...extra],
    { cwd: ROOT, detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
    launcher = proc
    let out = ''
    proc.stdout.on('data', (d: Buffer) => { out += d.toString() })
    proc.stderr.on('data', (d: Buffer) => { out += d.toString() })
    return { exited: new Promise((resolve) => proc.once('exit', resolve)), output: () => out, summaryFile }
  }

  it('trains on two hosts, survives kill -9 of one remote worker, and ends bit-identical to the reference', async () => {
    const run = await start(JOB_FLAGS)
    await waitForStatus(runDir as string, (s) => s.committed >= 30, 20_000)
    const victim = processes(runDir as string).find((p) => p.id === 'worker-2')
    expect(victim?.host).toBe('localhost')
    expect(victim?.pid).toBeGreaterThan(1)
    execFileSync('ssh', [...(sshBase(sshd)), victim?.host as string, `kill -9 ${victim?.pid as number}`], { timeout: 10_000 })
    expect(await run.exited, run.output()).toBe(0)
    const summary = JSON.parse(readFileSync(run.summaryFile, 'utf8')) as LaunchSummary
    expect(summary.ok).toBe(true)
    expect(summary.committed).toBe(JOB.steps)
    expect(summary.checksums).toEqual([reference])
    expect(summary.workers.find((w) => w.id === 'worker-1')).toMatchObject({ steps: JOB.steps, checksum: reference, exitCode: 0 })
    expect(summary.workers.find((w) => w.id === 'worker-2')?.checksum).toBeUndefined()
    expect(summary.recoveries.some((r) => r.peers.includes('worker-2'))).toBe(true)
    const result = JSON.parse(readFileSync(join(runDir as string, 'worker-1.result.json'), 'utf8')) as { steps: number, checksum: number }
    expect({ steps: result.steps, checksum: result.checksum }).toEqual({ steps: JOB.steps, checksum: reference })
    expect(run.output()).toContain(`final state crc32c ${reference.toString(16).padStart(8, '0')} on worker-1`)
    expect(readFileSync(join(runDir as string, 'host-localhost.log'), 'utf8')).toContain('[worker-2]')
    for (const p of processes(runDir as string)) expect(isAlive(p.pid as number), p.id).toBe(false)
  }, 45_000)

  it('stops every remote process group on SIGINT and exits 130', async () => {
    const run = await start(['--steps', '100000', '--global-batch', '64', '--micro-batch', '8', '--job', 'linear', '--job-opt', 'stepDelayMs=3', '--last-call-ms', '500'])
    await waitForStatus(runDir as string, (s) => s.committed >= 5, 20_000)
    const started = processes(runDir as string)
    expect(started.map((p) => p.id)).toEqual(['coordinator', 'worker-1', 'worker-2'])
    for (const p of started) expect(isAlive(p.pid as number), p.id).toBe(true)
    launcher?.kill('SIGINT')
    expect(await run.exited, run.output()).toBe(130)
    for (const p of started) expect(isAlive(p.pid as number), p.id).toBe(false)
    const summary = JSON.parse(readFileSync(run.summaryFile, 'utf8')) as LaunchSummary
    expect(summary).toMatchObject({ ok: false, error: 'interrupted' })
  }, 30_000)
})
