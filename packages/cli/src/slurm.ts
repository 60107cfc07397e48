/**
 * `phalanx launch --slurm`: renders an sbatch script (the coordinator on the job's first node, one
 * `srun` step per worker so a single worker can be signalled or lost alone) into the run directory,
 * submits it with `sbatch --wait` and resolves with the job's exit code. On `scancel` (SIGTERM to
 * the batch shell) the script stops its steps and the coordinator cleanly.
 *
 * @module
 */
import { spawn } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { InvalidParametersError, type AbortOptions } from '@phalanx/core'

/** Tunables of {@link renderSbatch}. */
export interface SlurmLaunchInit {
  /** Workers: one Slurm task (and one `srun` step) each. */
  workers: number
  /** Run directory (shared between nodes): script, logs, worker results, status URL. */
  runDir: string
  /** Path of the `phalanx` entry script. */
  bin: string
  /** Config flags given to every process (`--steps 100 --global-batch 64 …`). */
  configArgs: string[]
  /** Job flags of the workers (`--job linear --job-opt k=v`). */
  jobArgs: string[]
  /**
   * Coordinator port on the first node.
   * @default 7100
   */
  port?: number
  /** @default 1500 */
  lastCallMs?: number
  /** Extra `#SBATCH` lines, e.g. `['--partition=gpu', '--time=01:00:00']`. */
  sbatchArgs?: string[]
  /** @default `process.execPath` */
  node?: string
}

const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`

/** The sbatch script of a Phalanx job. */
export function renderSbatch (init: SlurmLaunchInit): string {
  if (!Number.isInteger(init.workers) || init.workers < 1) throw new InvalidParametersError('--workers must be ≥ 1')
  const node = init.node ?? process.execPath
  const port = init.port ?? 7100
  const cfg = init.configArgs.map(q).join(' ')
  const run = q(init.runDir)
  return `#!/usr/bin/env bash
#SBATCH --job-name=phalanx
#SBATCH --ntasks=${init.workers}
#SBATCH --cpus-per-task=1
#SBATCH --output=${init.runDir}/slurm-%j.out
${(init.sbatchArgs ?? []).map((a) => `#SBATCH ${a}`).join('\n')}
# Rendered by \`phalanx launch --slurm\`; the template with comments is scripts/slurm/phalanx.sbatch.
set -u
RUN=${run}
NODE=${q(node)}
BIN=${q(init.bin)}
ip() { hostname -I 2>/dev/null | awk '{print $1}' | grep . || echo 127.0.0.1; }
COORD_ADDR="tcp://$(ip):${port}"
"$NODE" "$BIN" coordinator ${cfg} --listen "tcp://0.0.0.0:${port}" --wal "$RUN/coordinator.wal" \\
  --status-port 0 --last-call-ms ${init.lastCallMs ?? 1500} --log-file "$RUN/coordinator.log.jsonl" &
COORD=$!
STEPS=()
stop_all() {
  trap - TERM INT
  kill -TERM "\${STEPS[@]}" 2>/dev/null
  kill -TERM "$COORD" 2>/dev/null
  wait
  exit 143
}
trap stop_all TERM INT
for i in $(seq 1 "$SLURM_NTASKS"); do
  # One step per worker: \`scancel --signal=KILL <job>.<step>\` loses exactly one worker.
  srun --ntasks=1 --nodes=1 --exact --overlap --kill-on-bad-exit=0 --job-name="worker-$i" \\
    bash "$RUN/worker-task.sh" --coordinator "$COORD_ADDR" --id "worker-$i" \\
    --out "$RUN/worker-$i.json" --log-file "$RUN/worker-$i.log.jsonl" &
  STEPS+=($!)
done
wait "$COORD"
CODE=$?
# Workers end by themselves once the coordinator says the job is done; lost ones are already gone.
wait "\${STEPS[@]}" 2>/dev/null
exit $CODE
`
}

/** The per-task script `srun` runs: a worker listening on the task's own node. */
export function renderWorkerTask (init: SlurmLaunchInit): string {
  const node = init.node ?? process.execPath
  return `#!/usr/bin/env bash
# One Phalanx worker (a Slurm task); rendered by \`phalanx launch --slurm\`.
IP="$(hostname -I 2>/dev/null | awk '{print $1}')"
exec ${q(node)} ${q(init.bin)} worker ${init.configArgs.map(q).join(' ')} ${init.jobArgs.map(q).join(' ')} --listen "tcp://\${IP:-127.0.0.1}:0" "$@"
`
}

/** Writes the script into `runDir`, submits it with `sbatch --parsable --wait` and resolves when the job ended. */
export async function launchSlurm (
  init: SlurmLaunchInit,
  io: { stdout: (t: string) => void, stderr: (t: string) => void },
  options: AbortOptions = {}
): Promise<{ jobId: string | undefined, code: number }> {
  mkdirSync(init.runDir, { recursive: true })
  const script = join(init.runDir, 'phalanx.sbatch')
  writeFileSync(script, renderSbatch(init), { mode: 0o755 })
  writeFileSync(join(init.runDir, 'worker-task.sh'), renderWorkerTask(init), { mode: 0o755 })
  const child = spawn('sbatch', ['--parsable', '--wait', script], { stdio: ['ignore', 'pipe', 'pipe'] })
  let jobId: string | undefined
  let onAbort: (() => void) | undefined
  try {
    child.stdout.on('data', (d: Buffer) => {
      const text = d.toString()
      const m = /^(\d+)/m.exec(text)
      if (jobId === undefined && m !== null) {
        jobId = m[1]
        io.stdout(`submitted slurm job ${jobId} (${init.workers} workers); script ${script}; status: phalanx status ${init.runDir}\n`)
      }
    })
    child.stderr.on('data', (d: Buffer) => { io.stderr(d.toString()) })
    const code = await new Promise<number>((resolve, reject) => {
      onAbort = () => {
        // Interrupted: cancel the job (its batch script stops the steps and the coordinator).
        if (jobId !== undefined) spawn('scancel', [jobId], { stdio: 'ignore' })
      }
      options.signal?.addEventListener('abort', onAbort, { once: true })
      child.once('error', reject)
      child.once('exit', (c) => { resolve(c ?? 1) })
    })
    return { jobId, code }
  } finally {
    if (onAbort !== undefined) options.signal?.removeEventListener('abort', onAbort)
  }
}
