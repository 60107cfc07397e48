import { readFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const src = resolve(dirname(fileURLToPath(import.meta.url)), '../src')

/** Every bare module specifier reachable from `entry` through relative imports. */
function bareImports (entry: string): Set<string> {
  const seen = new Set<string>()
  const bare = new Set<string>()
  const visit = (file: string): void => {
    if (seen.has(file)) return
    seen.add(file)
    const text = readFileSync(file, 'utf8')
    for (const match of text.matchAll(/^\s*(?:import|export)\s[^'"]*?from\s+'([^']+)'/gm)) {
      const spec = match[1] as string
      if (spec.startsWith('.')) visit(join(dirname(file), spec.replace(/\.js$/, '.ts')))
      else bare.add(spec)
    }
  }
  visit(join(src, entry))
  return bare
}

describe('package entry points', () => {
  it('keeps zeromq out of ./memory and the root entry', () => {
    for (const entry of ['memory.ts', 'index.ts']) {
      const deps = bareImports(entry)
      expect(deps.has('@phalanx/core')).toBe(true)
      expect([...deps].filter((d) => d.includes('zeromq'))).toEqual([])
    }
    expect(bareImports('zmq.ts').has('zeromq')).toBe(true)
  })
})
