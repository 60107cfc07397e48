import { readFile } from 'node:fs/promises'
import { extname } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { InvalidConfigError, resolveConfig, type PhalanxConfig } from '@phalanx/core'

/**
 * Reads a configuration file (`.json`, `.yaml` or `.yml`). A missing or unparsable file is an
 * {@link InvalidConfigError} that names the file and the line when the parser knows it.
 */
export async function readConfigFile (path: string): Promise<unknown> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw new InvalidConfigError(`Cannot read config file ${path}: ${(err as Error).message}`, { cause: err })
  }
  try {
    return extname(path) === '.json' ? JSON.parse(text) : parseYaml(text)
  } catch (err) {
    throw new InvalidConfigError(`Config file ${path} is not valid ${extname(path) === '.json' ? 'JSON' : 'YAML'}: ${(err as Error).message}`, { cause: err })
  }
}

/**
 * Turns `--set a.b.c=value` overrides into a nested object. Values are parsed as JSON when they
 * can be (`10`, `true`, `[1,2]`), and kept as strings otherwise.
 */
export function parseOverrides (sets: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const set of sets) {
    const eq = set.indexOf('=')
    if (eq <= 0) throw new InvalidConfigError(`--set expects key.path=value, got "${set}"`)
    const path = set.slice(0, eq).split('.')
    const raw = set.slice(eq + 1)
    let value: unknown
    try { value = JSON.parse(raw) } catch { value = raw }
    let node = out
    for (const key of path.slice(0, -1)) {
      const next = node[key]
      node = (typeof next === 'object' && next !== null ? next : (node[key] = {})) as Record<string, unknown>
    }
    node[path[path.length - 1] as string] = value
  }
  return out
}

/** Resolves the configuration of a command: preset, then the file, then `extra` (flags), then `--set` overrides. */
export async function loadConfig (options: { file?: string, sets?: readonly string[], extra?: unknown }): Promise<PhalanxConfig> {
  const fromFile = options.file === undefined ? {} : await readConfigFile(options.file)
  return resolveConfig(fromFile, options.extra ?? {}, parseOverrides(options.sets ?? []))
}
