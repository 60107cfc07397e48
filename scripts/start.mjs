// npm start: the Phalanx demo. Trains the built-in MNIST MLP with 4 worker processes on this machine
// over loopback ZeroMQ; one worker is killed with SIGKILL mid-run and a new one joins later and heals
// from its peers. Progress is shown live; the summary gives the final accuracy and the recovery
// timings per phase (detect, quorum, reconfigure, heal, first commit). Extra arguments are passed to
// `phalanx launch` (e.g. `npm start -- --steps 200`). Falls back to the pure-JS `linear` job when the
// MNIST job is not part of the build.
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const bin = join(root, 'packages', 'cli', 'bin', 'phalanx.js')
if (!existsSync(join(root, 'packages', 'cli', 'dist', 'src', 'main.js'))) {
  process.stderr.write('phalanx is not built yet: run `npm install` (or `npm run build`) first\n')
  process.exit(1)
}
const mnist = existsSync(join(root, 'packages', 'cli', 'dist', 'src', 'jobs', 'mnist.js'))

const demo = mnist
  ? ['--job', 'mnist', '--job-id', 'mnist', '--steps', '500', '--global-batch', '256', '--micro-batch', '32',
      '--workers', '4', '--kill', 'worker-2@120', '--join', '@200', '--job-opt', 'evaluateEvery=100']
  : ['--job', 'linear', '--job-id', 'linear', '--steps', '600', '--global-batch', '64', '--micro-batch', '8',
      '--workers', '4', '--kill', 'worker-2@150', '--join', '@300', '--job-opt', 'stepDelayMs=5']

process.stderr.write(`phalanx demo: ${mnist ? 'MNIST MLP' : 'linear regression (MNIST job not built)'}, 4 workers, ` +
  `kill -9 of worker-2 mid-run, a new worker joining later\n`)
const child = spawn(process.execPath, [bin, 'launch', ...demo, ...process.argv.slice(2)], { cwd: root, stdio: 'inherit' })
// The launcher stops its workers on SIGINT/SIGTERM and prints what it has.
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { child.kill(sig) })
child.on('exit', (code, signal) => { process.exit(code ?? (signal === null ? 1 : 130)) })
