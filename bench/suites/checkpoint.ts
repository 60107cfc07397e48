/**
 * Checkpoint benchmark: trainer blocking per snapshot vs a plain synchronous save, step-time overhead
 * with a snapshot every step, and restore time from the L0 holder (a separate process over ZeroMQ
 * ipc) vs from the L2 disk store. Everything runs on the same state in one process run.
 *
 * Trainer blocking is watched from outside the snapshotter (loopObserver: a 1 ms timer plus the
 * thread's run-queue wait from /proc/thread-self/schedstat) during drains to the holder alone, to
 * the L2 store alone, and to both, and on an idle loop for its floor.
 *
 * Then the step-time overhead of a snapshot every step on real tfjs loops (transformer LM and MNIST
 * MLP on wasm, snapshots to a holder process): bench/lib/snapshot-overhead.ts.
 *
 * The L2 sink runs twice, alternated in CKPT_L2_ROUNDS rounds: written and committed by the
 * snapshotter's worker thread (the default, `l2_*`) and by the trainer's thread (`l2Thread: false`,
 * `l2_main_*`), so the two are compared under the same load.
 *
 * Env: CKPT_STATE_MIB (default 64), CKPT_ITER (default 5), CKPT_STEPS (default 12),
 * CKPT_L2_ROUNDS (default 2), CKPT_TF_OVERHEAD (default 1; 0 skips the tfjs loops).
 */
import { spawn } from 'node:child_process'
import { closeSync, existsSync, fsyncSync, mkdtempSync, openSync, readSync, renameSync, rmSync, writeSync } from 'node:fs'
import { PerformanceObserver } from 'node:perf_hooks'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createStateDict, type NamedTensor, type PinnedState, type StateDict } from '@phalanx/core'
import { zmqTransport } from '@phalanx/transport/zmq'
import {
  DEFAULT_CHUNK_BYTES, buildShardFile, createChecksumWorker, createCheckpointStore, createHolderClient, createSnapshotter, layoutOf, pinStateDict, planShard,
  type CheckpointStore, type HolderClient, type SnapshotSink, type SnapshotterInit
} from '@phalanx/checkpoint'
import { pino } from 'pino'
import { median, progress, writeBenchResult, type Metric } from '../report.js'

const STATE_MIB = Number(process.env.CKPT_STATE_MIB ?? 64)
const ITER = Number(process.env.CKPT_ITER ?? 5)
const STEPS = Number(process.env.CKPT_STEPS ?? 12)
/** Rounds of the L2 comparison (writer thread vs trainer thread, alternated). */
const L2_ROUNDS = Number(process.env.CKPT_L2_ROUNDS ?? 2)
const root = fileURLToPath(new URL('../../', import.meta.url))
const scratch = mkdtempSync(join(tmpdir(), 'phx-bench-ckpt-'))
const shmBase = existsSync('/dev/shm') ? '/dev/shm' : tmpdir()
const slotDir = mkdtempSync(join(shmBase, 'phx-bench-holder-'))
/** Stops whatever the run started, even when it fails half-way (the holder is a child process). */
const cleanups: Array<() => Promise<void>> = []

/** A state of `mib` MiB in 32 tensors of mixed sizes (a transformer-like spread). */
function makeState (mib: number, step: number): StateDict {
  const total = Math.floor((mib * 2 ** 20) / 4)
  const weights = Array.from({ length: 32 }, (_, i) => 1 + (i % 4) * 3)
  const sum = weights.reduce((a, b) => a + b, 0)
  const tensors: NamedTensor[] = weights.map((w, i) => {
    const n = Math.floor((total * w) / sum)
    const data = new Float32Array(n)
    for (let j = 0; j < n; j += 97) data[j] = (j % 1013) * 1e-3 + step
    return { name: `block${i >> 2}/w${i & 3}`, shape: [n], dtype: 'float32', data }
  })
  return createStateDict(tensors, { step, epoch: 0 })
}

/**
 * The tf bridge's kind of pin: a reference to immutable arrays, copied only when the drain reads,
 * whole (`read`) or in ranges straight from the storage (`readRange`, as `pinState` does on cpu and wasm).
 */
function pinByReference (state: StateDict): PinnedState {
  let tensors: readonly NamedTensor[] | undefined = state.tensors
  const tensor = (index: number): NamedTensor => {
    const t = tensors?.[index]
    if (t === undefined) throw new Error('released')
    return t
  }
  return {
    specs: state.tensors.map(({ name, shape, dtype }) => ({ name, shape, dtype })),
    meta: structuredClone(state.meta),
    async read (index, out) { out.set(tensor(index).data) },
    async readRange (index, offset, out) { out.set(tensor(index).data.subarray(offset, offset + out.length)) },
    release () { tensors = undefined }
  }
}

/** Plain synchronous save: serialise into a buffer, write, fsync, rename, fsync the directory. */
function syncSave (state: StateDict, buf: Buffer, file: string): void {
  let off = 0
  for (const t of state.tensors) {
    buf.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), off)
    off += t.data.byteLength
  }
  const fd = openSync(`${file}.tmp`, 'w')
  for (let p = 0; p < off; p += 8 * 2 ** 20) writeSync(fd, buf, p, Math.min(8 * 2 ** 20, off - p), p)
  fsyncSync(fd)
  closeSync(fd)
  renameSync(`${file}.tmp`, file)
  const dfd = openSync(scratch, 'r')
  fsyncSync(dfd)
  closeSync(dfd)
}

/** A simulated training step: 12 multiply-add passes over the state into new arrays (as tf assigns new buffers). */
function simulatedStep (state: StateDict): StateDict {
  const tensors = state.tensors.map((t) => {
    const out = new Float32Array(t.data.length)
    const src = t.data
    for (let pass = 0; pass < 12; pass++) {
      const from = pass === 0 ? src : out
      for (let i = 0; i < out.length; i++) out[i] = (from[i] as number) * 0.9999 + 1e-7
    }
    return { ...t, data: out }
  })
  return createStateDict(tensors, { ...state.meta, step: state.meta.step + 1 })
}

async function startHolder (address: string): Promise<{ stop: () => Promise<void> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'packages/checkpoint/test/fixtures/holder.ts'), slotDir, address], { stdio: ['ignore', 'pipe', 'inherit'], cwd: root })
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => { if (d.toString().includes('ready')) resolve() })
    child.once('exit', (code) => { reject(new Error(`holder exited with ${code}`)) })
  })
  return {
    stop: async () => {
      const exited = new Promise((resolve) => { child.once('exit', resolve) })
      child.kill('SIGTERM')
      await exited
    }
  }
}

async function main (): Promise<void> {
  progress(`state ${STATE_MIB} MiB, ${ITER} iterations, ${STEPS} steps; scratch ${scratch}, slots ${slotDir}`)
  const state = makeState(STATE_MIB, 1)
  const bytes = state.tensors.reduce((a, t) => a + t.data.byteLength, 0)
  const buf = Buffer.alloc(bytes)

  // 1. Baseline: plain synchronous save.
  const syncMs: number[] = []
  for (let i = 0; i < ITER + 1; i++) {
    const t0 = performance.now()
    syncSave(state, buf, join(scratch, 'sync.bin'))
    if (i > 0) syncMs.push(performance.now() - t0)
  }
  const sync = median(syncMs)
  progress(`sync save median ${sync.toFixed(1)} ms`)

  // 2. Lazy snapshots to the holder (another process, ZeroMQ ipc) and L2 every 2nd.
  const address = `ipc://${join(scratch, 'holder.sock')}`
  const holderProc = await startHolder(address)
  cleanups.push(holderProc.stop)
  const endpoint = await zmqTransport().open({ id: 'bench-trainer', job: 'fixture' })
  const client: HolderClient = createHolderClient({ owner: 'rank-0', address, requestTimeoutMs: 60_000 }, { endpoint })
  const store = createCheckpointStore({ dir: join(scratch, 'l2'), keep: 2 })
  const snap = createSnapshotter({ l2Every: 2 }, { holder: client, store, logger: pino({ level: process.env.CKPT_LOG ?? 'warn' }, pino.destination(2)) })
  snap.start()
  const captureMs: number[] = []
  const sliceMs: number[] = []
  const drainMs: number[] = []
  const mainMs: number[] = []
  const pinCopyMs: number[] = []
  const gapMs: number[] = []
  const bothBlockMs: number[] = []
  for (let i = 0; i < ITER + 1; i++) {
    const before = snap.stats()
    const s = makeStateView(state, i + 2)
    const gaps = loopObserver()
    const t0 = performance.now()
    snap.capture(pinByReference(s))
    const t1 = performance.now()
    await snap.flush()
    const gap = gaps.stop()
    const after = snap.stats()
    if (i > 0) {
      gapMs.push(gap.delay)
      bothBlockMs.push(gap.block)
      captureMs.push(t1 - t0)
      sliceMs.push(after.lastMaxSliceMs)
      drainMs.push(after.lastDrainMs)
      mainMs.push(after.mainThreadMs - before.mainThreadMs)
      const p0 = performance.now()
      pinStateDict(s).release()
      pinCopyMs.push(performance.now() - p0)
    }
  }
  const stats = snap.stats()
  progress(`capture ${median(captureMs).toFixed(3)} ms, max slice ${Math.max(...sliceMs).toFixed(2)} ms (median ${median(sliceMs).toFixed(2)}), observed loop delay median ${median(gapMs).toFixed(2)} ms worst ${Math.max(...gapMs).toFixed(2)} ms (block without run-queue wait: median ${median(bothBlockMs).toFixed(2)} ms), drain ${median(drainMs).toFixed(0)} ms, main-thread ${median(mainMs).toFixed(1)} ms; l0 ${stats.l0} l2 ${stats.l2}`)

  // 2b. Each sink alone, seen from outside the snapshotter: the holder (ipc to the other process)
  // and the L2 store (write + fsync + commit every drain), and the same observer on an idle loop.
  const holderOnly = await observeDrains(state, ITER, { holder: client }, 0, 1000)
  // L2 written and committed by the worker thread (the default) and, for comparison in the same run,
  // by the trainer's thread (l2Thread: false), alternated in rounds so load drifts hit both alike.
  const l2Only: DrainRun = { windows: [], drainMs: [], sliceMs: [], inThread: 0 }
  const l2Main: DrainRun = { windows: [], drainMs: [], sliceMs: [], inThread: 0 }
  for (let r = 0; r < L2_ROUNDS; r++) {
    const order = r % 2 === 0 ? [true, false] : [false, true]
    for (const thread of order) {
      const run = await observeDrains(state, ITER, { store }, 1, 2000 + 100 * (2 * r + (thread ? 0 : 1)), { l2Thread: thread })
      const into = thread ? l2Only : l2Main
      into.first ??= run.first
      into.windows.push(...run.windows)
      into.drainMs.push(...run.drainMs)
      into.sliceMs.push(...run.sliceMs)
      into.inThread += run.inThread
    }
  }
  const idle = await observeIdle(ITER, Math.max(50, Math.round(median([...holderOnly.drainMs, ...l2Only.drainMs]))))
  const summary = (name: string, ws: LoopWindow[]): string => `${name}: delay median ${median(ws.map((w) => w.delay)).toFixed(2)} ms (worst ${Math.max(...ws.map((w) => w.delay)).toFixed(1)}), block median ${median(ws.map((w) => w.block)).toFixed(2)} ms (worst ${Math.max(...ws.map((w) => w.block)).toFixed(2)}), GCs ${ws.reduce((a, w) => a + w.gcs, 0)} (longest ${Math.max(0, ...ws.map((w) => w.gcMax)).toFixed(1)} ms)`
  progress(summary('holder sink', holderOnly.windows) + `; drain ${median(holderOnly.drainMs).toFixed(0)} ms; first drain block ${holderOnly.first.block.toFixed(1)} ms`)
  progress(summary('L2 sink, writer thread', l2Only.windows) + `; drain ${median(l2Only.drainMs).toFixed(0)} ms; first drain block ${(l2Only.first?.block ?? 0).toFixed(1)} ms; ${l2Only.inThread} of ${l2Only.windows.length + L2_ROUNDS} in the thread`)
  progress(summary('L2 sink, trainer thread', l2Main.windows) + `; drain ${median(l2Main.drainMs).toFixed(0)} ms; first drain block ${(l2Main.first?.block ?? 0).toFixed(1)} ms; ${l2Main.inThread} in the thread`)
  // The commit alone (no copy slices, which bound the per-drain block above at ~1 ms): the same
  // staged image written and committed by the worker thread vs through the store on this thread.
  const commits = await observeCommits(state, store, ITER, L2_ROUNDS)
  progress(summary('L2 commit alone, writer thread', commits.thread.windows) + `; ${median(commits.thread.ms).toFixed(0)} ms per commit`)
  progress(summary('L2 commit alone, trainer thread', commits.main.windows) + `; ${median(commits.main.ms).toFixed(0)} ms per commit`)
  // Control: the same bytes written + fsynced by ANOTHER process while this loop idles. Whatever
  // block this shows is the machine's (interrupts, page-cache and writeback work of the kernel, the
  // hypervisor), which no placement of the writes inside the trainer's process can remove.
  const otherIo = await observeOtherProcessWrites(bytes, ITER * L2_ROUNDS)
  progress(summary('64 MiB write + fsync by another process', otherIo.windows) + `; ${median(otherIo.ms).toFixed(0)} ms per write`)
  progress(summary('idle loop', idle))

  // 3. Restore: holder vs disk.
  const holderRestore: number[] = []
  const diskRestore: number[] = []
  for (let i = 0; i < 3; i++) {
    let t0 = performance.now()
    await client.restore()
    holderRestore.push(performance.now() - t0)
    t0 = performance.now()
    await store.restore()
    diskRestore.push(performance.now() - t0)
  }
  progress(`restore holder ${median(holderRestore).toFixed(0)} ms, disk ${median(diskRestore).toFixed(0)} ms`)

  // 4. Step-time overhead: a snapshot every step (skipped while one drains), and with a 3.5% budget.
  const budgeted = createSnapshotter({ l2Every: 10, overheadBudget: 0.035 }, { holder: client, store })
  budgeted.start()
  const runSteps = async (s0: StateDict, snapshotter: typeof snap | undefined): Promise<number> => {
    let s = s0
    const t0 = performance.now()
    for (let i = 0; i < STEPS; i++) {
      s = simulatedStep(s)
      snapshotter?.capture(pinByReference(s))
      // Yield once per step, as an async training loop does (data loading, awaits on the backend).
      await new Promise<void>((resolve) => { setImmediate(resolve) })
    }
    const ms = (performance.now() - t0) / STEPS
    await snapshotter?.flush()
    return ms
  }
  await runSteps(state, undefined)
  const baseStep: number[] = []
  const snapStep: number[] = []
  const budgetStep: number[] = []
  const beforeSteps = snap.stats()
  for (let r = 0; r < 2; r++) {
    baseStep.push(await runSteps(state, undefined))
    snapStep.push(await runSteps(state, snap))
    budgetStep.push(await runSteps(state, budgeted))
  }
  const afterSteps = snap.stats()
  const budgetStats = budgeted.stats()
  await budgeted.stop()
  const stepBase = median(baseStep)
  const stepSnap = median(snapStep)
  const stepBudget = median(budgetStep)
  progress(`step ${stepBase.toFixed(1)} ms → ${stepSnap.toFixed(1)} ms every step (${afterSteps.captured - beforeSteps.captured} taken, ${afterSteps.skipped - beforeSteps.skipped} skipped) → ${stepBudget.toFixed(1)} ms with a 3.5% budget (${budgetStats.captured} taken, ${budgetStats.skipped} skipped)`)

  await snap.stop()
  await endpoint.close({ lingerMs: 0 })

  // Per checkpoint: the capture call plus the longest block of the trainer's loop a drain causes,
  // seen from outside (median over drains, run-queue waits taken out), whichever sink it feeds: the
  // holder alone, L2 alone, or both. The copy slices are part of what the observer sees; the
  // snapshotter's own slice timing (event_loop_block_ms) is wall time and includes preemption.
  const blockOf = (ws: LoopWindow[]): number => median(ws.map((w) => w.block))
  const holderBlock = blockOf(holderOnly.windows)
  const l2Block = blockOf(l2Only.windows)
  const l2MainBlock = blockOf(l2Main.windows)
  const longestBlock = Math.max(holderBlock, l2Block, median(bothBlockMs))
  const blocking = median(captureMs) + longestBlock
  const delayOf = (ws: LoopWindow[]): number => median(ws.map((w) => w.delay))
  const metrics: Record<string, Metric> = {
    sync_save_ms: { value: sync, unit: 'ms', target: null, better: 'lower' },
    capture_ms: { value: median(captureMs), unit: 'ms', target: null, better: 'lower' },
    event_loop_block_ms: { value: median(sliceMs), unit: 'ms', target: null, better: 'lower' },
    event_loop_block_worst_ms: { value: Math.max(...sliceMs), unit: 'ms', target: null, better: 'lower' },
    event_loop_gap_observed_ms: { value: median(gapMs), unit: 'ms', target: null, better: 'lower' },
    event_loop_gap_observed_worst_ms: { value: Math.max(...gapMs), unit: 'ms', target: null, better: 'lower' },
    event_loop_block_observed_ms: { value: median(bothBlockMs), unit: 'ms', target: null, better: 'lower' },
    holder_loop_gap_ms: { value: delayOf(holderOnly.windows), unit: 'ms', target: null, better: 'lower' },
    holder_loop_gap_ratio: { value: delayOf(holderOnly.windows) / sync, unit: 'x sync save', target: null, better: 'lower' },
    holder_loop_block_ms: { value: holderBlock, unit: 'ms', target: null, better: 'lower' },
    holder_loop_block_ratio: { value: holderBlock / sync, unit: 'x sync save', target: 0.02, better: 'lower' },
    holder_loop_block_worst_ms: { value: Math.max(...holderOnly.windows.map((w) => w.block)), unit: 'ms', target: null, better: 'lower' },
    holder_first_drain_block_ms: { value: holderOnly.first.block, unit: 'ms', target: null, better: 'lower' },
    l2_loop_gap_ms: { value: delayOf(l2Only.windows), unit: 'ms', target: null, better: 'lower' },
    l2_loop_gap_ratio: { value: delayOf(l2Only.windows) / sync, unit: 'x sync save', target: null, better: 'lower' },
    l2_loop_block_ms: { value: l2Block, unit: 'ms', target: null, better: 'lower' },
    l2_loop_block_ratio: { value: l2Block / sync, unit: 'x sync save', target: 0.02, better: 'lower' },
    l2_loop_block_worst_ms: { value: Math.max(...l2Only.windows.map((w) => w.block)), unit: 'ms', target: null, better: 'lower' },
    l2_first_drain_block_ms: { value: l2Only.first?.block ?? 0, unit: 'ms', target: null, better: 'lower' },
    l2_drain_wall_ms: { value: median(l2Only.drainMs), unit: 'ms', target: null, better: 'lower' },
    l2_main_loop_gap_ms: { value: delayOf(l2Main.windows), unit: 'ms', target: null, better: 'lower' },
    l2_main_loop_block_ms: { value: l2MainBlock, unit: 'ms', target: null, better: 'lower' },
    l2_main_loop_block_ratio: { value: l2MainBlock / sync, unit: 'x sync save', target: null, better: 'lower' },
    l2_main_loop_block_worst_ms: { value: Math.max(...l2Main.windows.map((w) => w.block)), unit: 'ms', target: null, better: 'lower' },
    l2_main_drain_wall_ms: { value: median(l2Main.drainMs), unit: 'ms', target: null, better: 'lower' },
    l2_thread_vs_main_block: { value: l2Block / l2MainBlock, unit: 'x trainer-thread L2', target: null, better: 'lower' },
    l2_commit_loop_block_ms: { value: blockOf(commits.thread.windows), unit: 'ms', target: null, better: 'lower' },
    l2_commit_loop_block_worst_ms: { value: Math.max(...commits.thread.windows.map((w) => w.block)), unit: 'ms', target: null, better: 'lower' },
    l2_commit_main_loop_block_ms: { value: blockOf(commits.main.windows), unit: 'ms', target: null, better: 'lower' },
    l2_commit_main_loop_block_worst_ms: { value: Math.max(...commits.main.windows.map((w) => w.block)), unit: 'ms', target: null, better: 'lower' },
    l2_commit_ms: { value: median(commits.thread.ms), unit: 'ms', target: null, better: 'lower' },
    l2_commit_main_ms: { value: median(commits.main.ms), unit: 'ms', target: null, better: 'lower' },
    other_process_io_loop_gap_ms: { value: delayOf(otherIo.windows), unit: 'ms', target: null, better: 'lower' },
    other_process_io_loop_block_ms: { value: blockOf(otherIo.windows), unit: 'ms', target: null, better: 'lower' },
    idle_loop_gap_ms: { value: delayOf(idle), unit: 'ms', target: null, better: 'lower' },
    idle_loop_block_ms: { value: blockOf(idle), unit: 'ms', target: null, better: 'lower' },
    drain_gc_count: { value: median([...holderOnly.windows, ...l2Only.windows].map((w) => w.gcs)), unit: 'count', target: null, better: 'lower' },
    blocking_ratio: { value: blocking / sync, unit: 'x sync save', target: 0.02, better: 'lower' },
    drain_main_thread_ratio: { value: median(mainMs) / sync, unit: 'x sync save', target: null, better: 'lower' },
    drain_wall_ms: { value: median(drainMs), unit: 'ms', target: null, better: 'lower' },
    pin_state_dict_copy_ms: { value: median(pinCopyMs), unit: 'ms', target: null, better: 'lower' },
    restore_holder_ms: { value: median(holderRestore), unit: 'ms', target: 1000, better: 'lower' },
    restore_disk_ms: { value: median(diskRestore), unit: 'ms', target: null, better: 'lower' },
    step_ms_baseline: { value: stepBase, unit: 'ms', target: null, better: 'lower' },
    step_overhead_every_step_pct: { value: ((stepSnap - stepBase) / stepBase) * 100, unit: '%', target: null, better: 'lower' },
    snapshots_skipped_every_step: { value: (afterSteps.skipped - beforeSteps.skipped) / (2 * STEPS), unit: 'fraction', target: null, better: 'lower' },
    step_overhead_budgeted_pct: { value: ((stepBudget - stepBase) / stepBase) * 100, unit: '%', target: 3.5, better: 'lower' },
    steps_per_snapshot_budgeted: { value: (2 * STEPS) / Math.max(1, budgetStats.captured), unit: 'steps', target: null, better: 'lower' }
  }
  // 5. A snapshot every step on real training loops (pinState of the tf bridge), same run.
  let tfLoops: Record<string, string> = {}
  if (process.env.CKPT_TF_OVERHEAD !== '0') {
    const { measureSnapshotOverhead } = await import('../lib/snapshot-overhead.js')
    Object.assign(metrics, await measureSnapshotOverhead())
    tfLoops = {
      tfLoops: 'wasm + BatchMatMul override, Adam; computeGradients + applyGradients + one event-loop turn per step; lazy = capture(pinState(...)) at every boundary, awaited = also waits for the drain; holder process over ZeroMQ ipc, slots in tmpfs; 3 rounds x 3 modes x 12 timed steps, order rotated',
      transformer: 'createTransformerLm d 128, 4 layers, 4 heads, FFN 512, T 64 on charCorpus, batch calibrated to a ~200 ms step',
      mnist: 'createMnistMlp 784-H-10, batch 1024, H calibrated to a ~200 ms step'
    }
  }
  writeBenchResult('checkpoint', metrics, { stateMiB: STATE_MIB, iterations: ITER, steps: STEPS, step: 'simulated: 12 multiply-add passes over the state into new arrays (tf bridge not used)', ...tfLoops })
}

/** What {@link loopObserver} saw over one window. */
interface LoopWindow {
  /** Longest delay of a 1 ms timer beyond its due time, ms: everything that held the loop, preemption included. */
  delay: number
  /** The same delay minus the time the thread waited in the kernel's run queue meanwhile (preempted), ms. */
  block: number
  /** GC pauses that began in the window: count and longest, ms. */
  gcs: number
  gcMax: number
}

/**
 * Watches the trainer's event loop from outside whatever runs on it: a 1 ms interval timer notes
 * how late each tick fires (`delay`), and how much of that lateness the thread spent runnable but
 * not running (`run_delay` of `/proc/thread-self/schedstat`, exact in ns; 0 where unavailable),
 * so `block` is what code on the thread (JS, GC, a blocking syscall or lock) held it for, with the
 * OS's preemption taken out. A setImmediate chain (the earlier observer) allocates an Immediate per
 * turn: 100-170 scavenges per second of its own on an idle loop, whose pauses it then reported as
 * stalls. This one allocates nothing per tick (timer reused, schedstat parsed from a reused buffer).
 */
function loopObserver (): { stop: () => LoopWindow } {
  let fd: number | undefined
  try { fd = openSync('/proc/thread-self/schedstat', 'r') } catch { fd = undefined }
  const buf = Buffer.alloc(64)
  const runDelayMs = (): number => {
    if (fd === undefined) return 0
    const n = readSync(fd, buf, 0, buf.length, 0)
    let i = 0
    while (i < n && buf[i] !== 32) i++
    let ns = 0
    for (i++; i < n && buf[i] !== 32; i++) ns = ns * 10 + (buf[i] as number) - 48
    return ns / 1e6
  }
  const w: LoopWindow = { delay: 0, block: 0, gcs: 0, gcMax: 0 }
  const gcObs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) { w.gcs++; if (e.duration > w.gcMax) w.gcMax = e.duration }
  })
  gcObs.observe({ entryTypes: ['gc'] })
  let last = performance.now()
  let wait0 = runDelayMs()
  const timer = setInterval(() => {
    const t = performance.now()
    const wait = runDelayMs()
    const late = t - last - 1
    if (late > w.delay) w.delay = late
    if (late - (wait - wait0) > w.block) w.block = late - (wait - wait0)
    last = t
    wait0 = wait
  }, 1)
  return {
    stop: () => {
      clearInterval(timer)
      gcObs.disconnect()
      if (fd !== undefined) closeSync(fd)
      return w
    }
  }
}

/**
 * Drains `iterations + 1` snapshots (the first is a warm-up: staging allocation, JIT) through a
 * snapshotter with only the given sinks, watching the loop during each drain.
 */
/** Loop windows and timings of the drains of {@link observeDrains}. */
interface DrainRun { windows: LoopWindow[], first?: LoopWindow, drainMs: number[], sliceMs: number[], inThread: number }

async function observeDrains (state: StateDict, iterations: number, sinks: { holder?: SnapshotSink, store?: CheckpointStore }, l2Every: number, firstStep: number, init: SnapshotterInit = {}): Promise<DrainRun & { first: LoopWindow }> {
  const snap = createSnapshotter({ ...init, l2Every }, sinks)
  snap.start()
  const windows: LoopWindow[] = []
  const drainMs: number[] = []
  const sliceMs: number[] = []
  let first: LoopWindow | undefined
  try {
    for (let i = 0; i < iterations + 1; i++) {
      const obs = loopObserver()
      snap.capture(pinByReference(makeStateView(state, firstStep + i)))
      await snap.flush()
      const w = obs.stop()
      const st = snap.stats()
      if (i === 0) { first = w; continue }
      windows.push(w)
      drainMs.push(st.lastDrainMs)
      sliceMs.push(st.lastMaxSliceMs)
    }
    return { windows, first: first as LoopWindow, drainMs, sliceMs, inThread: snap.stats().l2InThread }
  } finally {
    await snap.stop()
  }
}

/**
 * Writes and commits one staged image (in a SharedArrayBuffer, checksummed, as a drain leaves it)
 * `iterations + 1` times per round and path, the first a warm-up: by the worker thread
 * (`commitL2`) and by the store on this thread (`writeShardImage` + `commit`), alternated per round.
 */
async function observeCommits (state: StateDict, store: CheckpointStore, iterations: number, rounds: number): Promise<Record<'thread' | 'main', { windows: LoopWindow[], ms: number[] }>> {
  const portable = store.portable?.()
  if (portable === undefined) throw new Error('the bench store must be portable')
  const layout = layoutOf(state.tensors)
  const pieces = state.tensors.map((t) => ({ name: t.name, tensorOffset: 0, length: t.data.length, data: t.data }))
  const total = planShard({ rank: 0, worldSize: 1, meta: state.meta, layout, pieces }).totalBytes
  const memory = new Uint8Array(new SharedArrayBuffer(total))
  const worker = createChecksumWorker()
  const out = { thread: { windows: [] as LoopWindow[], ms: [] as number[] }, main: { windows: [] as LoopWindow[], ms: [] as number[] } }
  let step = 5000
  try {
    for (let r = 0; r < rounds; r++) {
      for (const path of r % 2 === 0 ? ['thread', 'main'] as const : ['main', 'thread'] as const) {
        for (let i = 0; i < iterations + 1; i++) {
          step++
          const { plan, bytes } = buildShardFile({ rank: 0, worldSize: 1, meta: { ...state.meta, step }, layout, pieces }, memory)
          const image = { header: plan.header, dataStart: plan.dataStart, bytes, chunkBytes: DEFAULT_CHUNK_BYTES, crcs: await worker.crcs(bytes, DEFAULT_CHUNK_BYTES) }
          const obs = loopObserver()
          const t0 = performance.now()
          if (path === 'thread') {
            await worker.commitL2(portable, step, image)
          } else {
            const record = await store.writeShardImage(step, image)
            await store.commit(step, { worldSize: 1, records: [record] })
          }
          const ms = performance.now() - t0
          const w = obs.stop()
          if (i > 0) { out[path].windows.push(w); out[path].ms.push(ms) }
        }
      }
    }
  } finally {
    await worker.close()
  }
  return out
}

/** Watches this loop while a child process writes `bytes` bytes (8 MiB writes) and fsyncs them, `count` times. */
async function observeOtherProcessWrites (bytes: number, count: number): Promise<{ windows: LoopWindow[], ms: number[] }> {
  const file = join(scratch, 'other-process.bin')
  const script = `const fs = require('node:fs'); const b = Buffer.alloc(${bytes}, 7)
process.stdin.on('data', () => { const fd = fs.openSync(${JSON.stringify(file)}, 'w'); for (let p = 0; p < b.length; p += 8 * 2 ** 20) fs.writeSync(fd, b, p, Math.min(8 * 2 ** 20, b.length - p), p); fs.fsyncSync(fd); fs.closeSync(fd); process.stdout.write('k') })
process.stdin.on('end', () => { process.exit(0) })`
  const child = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'inherit'] })
  let failed: ((err: Error) => void) | undefined
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code) => { failed?.(new Error(`writer process exited with ${code}`)); resolve() })
  })
  const out = { windows: [] as LoopWindow[], ms: [] as number[] }
  try {
    for (let i = 0; i < count + 1; i++) {
      const done = new Promise<void>((resolve, reject) => {
        failed = reject
        child.stdout.once('data', () => { resolve() })
      })
      const obs = loopObserver()
      const t0 = performance.now()
      child.stdin.write('x')
      await done
      const ms = performance.now() - t0
      const w = obs.stop()
      if (i > 0) { out.windows.push(w); out.ms.push(ms) }
    }
  } finally {
    failed = undefined
    child.stdin.end()
    await exited
  }
  return out
}

/** The same observer on an idle loop, for as long as a drain takes: the floor of what it can see. */
async function observeIdle (windows: number, ms: number): Promise<LoopWindow[]> {
  const out: LoopWindow[] = []
  for (let i = 0; i < windows; i++) {
    const obs = loopObserver()
    await new Promise<void>((resolve) => { setTimeout(resolve, ms) })
    out.push(obs.stop())
  }
  return out
}

/** Same arrays, new step number: a pin of an unchanged state. */
function makeStateView (state: StateDict, step: number): StateDict {
  return createStateDict(state.tensors, { ...state.meta, step })
}

try {
  await main()
} finally {
  for (const c of cleanups) await c()
  rmSync(scratch, { recursive: true, force: true })
  rmSync(slotDir, { recursive: true, force: true })
}
