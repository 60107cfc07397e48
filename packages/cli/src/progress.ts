/**
 * The launcher's live progress display: one redrawn line on a TTY, plain periodic lines otherwise;
 * events (faults, recoveries, joins) always get a line of their own.
 *
 * @module
 */
import type { RecoveryRecord } from '@phalanx/coordinator'

/** Where the display writes. */
export interface ProgressOutput {
  write(text: string): void
  /** Redraw one line in place (a terminal) or print periodic lines (a file or pipe). */
  isTTY: boolean
}

/** What the progress line shows. */
export interface ProgressState {
  committed: number
  steps: number
  epoch: number
  members: number
  loss?: number
  accuracy?: number
  /** Committed steps per second over the last few seconds. */
  stepsPerSecond: number
  globalBatch: number
  recoveries: number
}

/** The progress display. */
export interface ProgressDisplay {
  /** Updates the line (redrawn at most every `redrawMs` on a TTY, printed every `lineEveryMs` otherwise). */
  update(state: ProgressState): void
  /** Prints an event line. */
  event(text: string): void
  /** Clears the live line (before the summary). */
  end(): void
}

/** Formats a number of milliseconds for tables: `-` when unknown. */
export function ms (v: number | undefined): string {
  return v === undefined ? '-' : `${Math.round(v)}`
}

/** The progress line text. */
export function progressLine (s: ProgressState): string {
  const parts = [`step ${s.committed}/${s.steps}`]
  if (s.loss !== undefined) parts.push(`loss ${s.loss.toPrecision(4)}`)
  if (s.accuracy !== undefined) parts.push(`acc ${(100 * s.accuracy).toFixed(1)}%`)
  parts.push(`members ${s.members}`, `epoch ${s.epoch}`)
  parts.push(`${s.stepsPerSecond.toFixed(1)} steps/s (${Math.round(s.stepsPerSecond * s.globalBatch)} samples/s)`)
  if (s.recoveries > 0) parts.push(`recoveries ${s.recoveries}`)
  return parts.join('  ')
}

/** One line describing a recovery and its phases. */
export function recoveryLine (r: RecoveryRecord): string {
  return `recovered from ${r.reason} of ${r.peers.join(',')} at step ${r.step}: detect ${ms(r.detectMs)} ms, quorum ${ms(r.quorumMs)} ms, ` +
    `reconfigure ${ms(r.reconfigureMs)} ms, heal ${ms(r.healMs)} ms, first commit ${ms(r.firstCommitMs)} ms (total ${ms(r.totalMs)} ms)`
}

/** Creates the display. */
export function createProgressDisplay (out: ProgressOutput, init: { redrawMs?: number, lineEveryMs?: number, prefix?: string } = {}): ProgressDisplay {
  const redrawMs = init.redrawMs ?? 100
  const lineEveryMs = init.lineEveryMs ?? 2000
  const prefix = init.prefix ?? '[phalanx] '
  let last = -Infinity
  let live = ''
  let drawn = false
  let finalPrinted = false
  const clear = (): void => {
    if (out.isTTY && drawn) out.write('\r\x1b[2K')
    drawn = false
  }
  return {
    update (state) {
      live = prefix + progressLine(state)
      const now = performance.now()
      const done = state.committed >= state.steps
      if (done && finalPrinted) return
      if (done) finalPrinted = true
      if (out.isTTY) {
        if (now - last < redrawMs && !done) return
        last = now
        out.write(`\r\x1b[2K${live}`)
        drawn = true
      } else if (now - last >= lineEveryMs || done) {
        last = now
        out.write(`${live}\n`)
      }
    },
    event (text) {
      clear()
      out.write(`${prefix}${text}\n`)
      if (out.isTTY && live !== '') { out.write(live); drawn = true }
    },
    end () {
      clear()
    }
  }
}
