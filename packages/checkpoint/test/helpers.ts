import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { createStateDict, type StateDict, mulberry32 } from '@phalanx/core'

/** A deterministic state whose every value depends on (step, tensor, index). */
export function makeState (step: number, sizes: readonly number[] = [1000, 37, 4096, 1]): StateDict {
  const random = mulberry32((step * 2654435761) >>> 0)
  const next = (): number => random() - 0.5
  const tensors = sizes.map((n, i) => ({ name: `layer${i}/w`, shape: i === 0 && n % 10 === 0 ? [10, n / 10] : [n], dtype: 'float32' as const, data: Float32Array.from({ length: n }, next) }))
  return createStateDict(tensors, { step, epoch: 1, cursor: step * 32, rng: { s: step } })
}

export async function tempDir (prefix = 'phx-ckpt-'): Promise<{ dir: string, cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  return { dir, cleanup: async () => { await rm(dir, { recursive: true, force: true }) } }
}

/** A fixture script running as a child process, followed through the lines it prints. */
export interface FixtureProcess {
  proc: ChildProcess
  /** Steps it reported as `committed <n>`. */
  committed: number[]
  /** Its last few stdout lines, for failure messages. */
  tail: string[]
  /** Resolves with the first line (from now on) matching `pred`; rejects if the process exits first. */
  waitFor: (pred: (line: string) => boolean) => Promise<string>
  exited: Promise<void>
}

/** Runs `file` (TypeScript, through tsx, on the package sources) with `args`. */
export function startFixture (file: string, args: readonly string[], options: { detached?: boolean } = {}): FixtureProcess {
  const proc = spawn(process.execPath, ['--import', 'tsx', '--conditions=@phalanx/source', file, ...args], { stdio: ['pipe', 'pipe', 'pipe'], detached: options.detached ?? false })
  const committed: number[] = []
  const tail: string[] = []
  const waiters: Array<{ pred: (line: string) => boolean, resolve: (line: string) => void, reject: (err: Error) => void }> = []
  let buf = ''
  let stderr = ''
  proc.stderr?.on('data', (d: Buffer) => { stderr += d.toString() })
  proc.stdout?.on('data', (d: Buffer) => {
    buf += d.toString()
    let nl
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl)
      buf = buf.slice(nl + 1)
      const m = /^committed (\d+)$/.exec(line)
      if (m !== null) committed.push(Number(m[1]))
      tail.push(line)
      if (tail.length > 4) tail.shift()
      for (const w of [...waiters]) if (w.pred(line)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(line) }
    }
  })
  const exited = new Promise<void>((resolve) => {
    proc.once('exit', () => {
      for (const w of waiters.splice(0)) w.reject(new Error(`${basename(file)} ${args.join(' ')} exited: ${stderr.slice(-2000)}`))
      resolve()
    })
  })
  const waitFor = async (pred: (line: string) => boolean): Promise<string> => await new Promise((resolve, reject) => { waiters.push({ pred, resolve, reject }) })
  return { proc, committed, tail, waitFor, exited }
}

