/**
 * The one way benchmarks report: `writeBenchResult('transport', metrics)` writes
 * `bench/results/<suite>.json` as `{ suite, date, machine, metrics }` and prints a table with a
 * pass/fail mark per metric against its target.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { cpus, totalmem, hostname } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export interface Metric {
  value: number
  unit: string
  /** The target the issue names, or null when the metric is informational. */
  target: number | null
  better: 'lower' | 'higher'
}

export function machine (): Record<string, unknown> {
  const cpu = cpus()
  return { host: hostname(), cpus: cpu.length, model: cpu[0]?.model ?? 'unknown', memGiB: Math.round(totalmem() / 2 ** 30), node: process.version, platform: process.platform }
}

export function meets (m: Metric): boolean | null {
  if (m.target === null) return null
  return m.better === 'lower' ? m.value <= m.target : m.value >= m.target
}

/** Writes the suite's JSON result and prints a summary. Returns the file path. */
export function writeBenchResult (suite: string, metrics: Record<string, Metric>, extra: Record<string, unknown> = {}): string {
  const root = join(dirname(fileURLToPath(import.meta.url)), 'results')
  mkdirSync(root, { recursive: true })
  const file = join(root, `${suite}.json`)
  writeFileSync(file, JSON.stringify({ suite, date: new Date().toISOString(), machine: machine(), metrics, ...extra }, null, 2) + '\n')
  for (const [name, m] of Object.entries(metrics)) {
    const ok = meets(m)
    const mark = ok === null ? ' ' : ok ? '✓' : '✗'
    const target = m.target === null ? '' : ` (target ${m.better === 'lower' ? '<=' : '>='} ${m.target})`
    process.stdout.write(`${mark} ${name}: ${Number(m.value.toPrecision(4))} ${m.unit}${target}\n`)
  }
  process.stdout.write(`wrote ${file}\n`)
  return file
}

/** Median of a list of numbers. */
export function median (xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[mid] as number : ((s[mid - 1] as number) + (s[mid] as number)) / 2
}

/** The q-quantile (0..1) of a list of numbers, nearest-rank. */
export function quantile (xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] as number
}

/** Progress line on stderr for long-running suites. */
export function progress (message: string): void {
  process.stderr.write(`[bench] ${message}\n`)
}
