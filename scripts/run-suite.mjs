// Runs bench/suites/<name>.ts or eval/<name>.ts with tsx, after making sure the packages are built.
import { spawnSync } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

export function runSuite (kind, dir, args) {
  const [name, ...rest] = args
  const available = readdirSync(join(root, dir)).filter((f) => f.endsWith('.ts')).map((f) => f.slice(0, -3))
  if (name === undefined || !available.includes(name)) {
    process.stderr.write(`usage: npm run ${kind} -- <name>\navailable: ${available.join(', ') || '(none)'}\n`)
    process.exit(2)
  }
  const build = spawnSync('npx', ['tsc', '-b'], { cwd: root, stdio: 'inherit' })
  if (build.status !== 0) process.exit(build.status ?? 1)
  const file = join(root, dir, `${name}.ts`)
  if (!existsSync(file)) process.exit(2)
  const run = spawnSync(process.execPath, ['--import', 'tsx', '--expose-gc', file, ...rest], { cwd: root, stdio: 'inherit' })
  process.exit(run.status ?? 1)
}
