/**
 * Scheduled faults of `phalanx launch`: `--kill <id>@<step>`, `--join [id]@<step>`,
 * `--stop <id>@<step>:<ms>`. A fault fires when the committed step count reaches `step`.
 *
 * @module
 */
import { InvalidConfigError } from '@phalanx/core'

/** One scheduled fault. */
export type Fault =
  /** SIGKILL a worker; for `coordinator`, SIGKILL it and restart it from its WAL on the same address. */
  | { kind: 'kill', target: string, step: number }
  /** Spawn a new worker (`id` defaults to the next free `worker-<n>`). */
  | { kind: 'join', id?: string, step: number }
  /** SIGSTOP a worker, SIGCONT it `ms` later: a hang that comes back. */
  | { kind: 'stop', target: string, step: number, ms: number }

const ID = /^[A-Za-z0-9._-]{1,128}$/

function target (raw: string, flag: string): string {
  // `3` is shorthand for `worker-3`.
  const id = /^\d+$/.test(raw) ? `worker-${raw}` : raw
  if (!ID.test(id)) throw new InvalidConfigError(`${flag}: "${raw}" is not a process id`)
  return id
}

function stepOf (raw: string | undefined, flag: string, value: string): number {
  const n = Number(raw)
  if (raw === undefined || raw === '' || !Number.isInteger(n) || n < 0) throw new InvalidConfigError(`${flag} ${value}: expected <step> to be a non-negative integer`)
  return n
}

/** Parses the fault flags; throws `InvalidConfigError` naming the bad flag. */
export function parseFaults (flags: { kill?: readonly string[], join?: readonly string[], stop?: readonly string[] }): Fault[] {
  const faults: Fault[] = []
  for (const v of flags.kill ?? []) {
    const m = /^([^@]+)@(\d*)$/.exec(v)
    if (m === null) throw new InvalidConfigError(`--kill ${v}: expected <id>@<step>, e.g. --kill worker-2@30`)
    faults.push({ kind: 'kill', target: target(m[1] as string, '--kill'), step: stepOf(m[2], '--kill', v) })
  }
  for (const v of flags.join ?? []) {
    const m = /^([^@]*)@(\d*)$/.exec(v)
    if (m === null) throw new InvalidConfigError(`--join ${v}: expected [id]@<step>, e.g. --join @50`)
    const id = m[1] === '' ? undefined : target(m[1] as string, '--join')
    faults.push({ kind: 'join', ...(id === undefined ? {} : { id }), step: stepOf(m[2], '--join', v) })
  }
  for (const v of flags.stop ?? []) {
    const m = /^([^@]+)@(\d*):(\d*)$/.exec(v)
    if (m === null) throw new InvalidConfigError(`--stop ${v}: expected <id>@<step>:<ms>, e.g. --stop worker-1@20:1500`)
    const ms = Number(m[3])
    if (m[3] === '' || !Number.isInteger(ms) || ms < 1 || ms > 3_600_000) throw new InvalidConfigError(`--stop ${v}: <ms> must be an integer in [1, 3600000]`)
    faults.push({ kind: 'stop', target: target(m[1] as string, '--stop'), step: stepOf(m[2], '--stop', v), ms })
  }
  return faults.sort((a, b) => a.step - b.step)
}

/** Human form of a fault, as it was written on the command line. */
export function describeFault (f: Fault): string {
  if (f.kind === 'kill') return f.target === 'coordinator' ? `kill -9 coordinator @${f.step} (restart from WAL)` : `kill -9 ${f.target} @${f.step}`
  if (f.kind === 'join') return `join ${f.id ?? 'new worker'} @${f.step}`
  return `stop ${f.target} @${f.step} for ${f.ms} ms`
}
