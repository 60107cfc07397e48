/**
 * A stage worker: one replica of one pipeline stage. It owns the stage's variables and optimiser,
 * runs its part of every step (the op list {@link planSchedule} gives it), sends activations
 * forward and input gradients backward as tensor frames, and on commit all-reduces with its
 * replicas, clips and steps. It also serves its state to recovering peers and builds its own state
 * when it is a replacement.
 *
 * The step commit is two-phase: `pp-prepare` sums, all-reduces and clips the gradient without
 * touching the state; `pp-commit` (sent only once every replica of every stage prepared) keeps a
 * pre-step copy of the weights and optimiser slots (tensor clones: reference counts, no copy) and
 * applies. Should a member be lost while commits are being applied, `pp-revert` restores the
 * pre-step copy, so all stages are at the same step again and the step can be replayed. The copy is
 * dropped when the next step starts.
 *
 * Backward recomputes the hop's forward pass from the stashed input (activation
 * re-materialisation, as in GPipe): tf.js cannot keep a gradient tape open across the await that
 * separates a forward from its backward.
 *
 * @module
 */
import {
  InvalidParametersError, NotFoundError, StaleEpochError, StepAbortedError, componentLogger, decodeTensors, raceSignal, throwIfAborted,
  type AbortOptions, type Endpoint, type Envelope, type Logger, type NamedTensor, type StateDict, type Startable
} from '@phalanx/core'
import { extractState, loadState, optimizerSlots, tensorFrom, tf, type ModelParam, type SequenceBatch, type TransformerLmInit } from '@phalanx/tfjs'
import { createStageModel, lmCrossEntropy, type Segment, type StageModel } from './model.js'
import {
  PipelineMessage, abortBodySchema, commitBodySchema, dpGradBodySchema, edgeBodySchema, getBodySchema, getReplySchema, hopBodySchema,
  loadBodySchema, prepareBodySchema, recoverBodySchema, revertBodySchema, stepBodySchema, type Member
} from './protocol.js'
import { planSchedule, routeOf, routeReplicas, type Hop, type PipelineOp, type RoutingKind, type ScheduleKind } from './schedule.js'
import { weightedAverage } from './recovery.js'

/** Tunables of {@link createStageWorker}. Every stage of a pipeline must get the same values (except `stage`). */
export interface StageWorkerInit {
  /** The whole model (same seed on every stage, so initial weights agree). */
  lm: TransformerLmInit
  /** Number of stages. */
  stages: number
  /** This worker's stage. */
  stage: number
  /** Micro-batches per step. */
  microBatches: number
  /** @default '1f1b' */
  schedule?: ScheduleKind
  /** CheckFree+ out-of-order execution of odd micro-batches. @default false */
  outOfOrder?: boolean
  /** Keep copies of the embedding (head) on stage 1 (stage S-2), refreshed every commit. @default false */
  edgeReplicas?: boolean
  /** Adam learning rate (before the stage's lr scale). @default 1e-3 */
  lr?: number
  /** Per-stage gradient clipping threshold (L2 norm over the stage). @default 1 */
  maxGradNorm?: number
  /** Deadline of requests this worker makes (state fetches during recovery). @default 30000 */
  requestTimeoutMs?: number
  /** How micro-batches are spread over the replicas of each stage ({@link routeReplicas}). @default 'fixed' */
  routing?: RoutingKind
  /** Seed of random routing. @default 0 */
  routingSeed?: number
  /**
   * How data-parallel replicas of a stage combine gradients: `allreduce` sums them every step (the
   * replicas stay bit-identical); `local` lets every replica step on the mean gradient of the
   * micro-batches it ran (NoLoCo's inner loop: an outer optimiser such as `@phalanx/optim`'s
   * brings replicas together every H steps through {@link StageWorker.state} / {@link StageWorker.load}).
   * @default 'allreduce'
   */
  replicaSync?: 'allreduce' | 'local'
  /**
   * With `replicaSync: 'local'`: average the weights of the stage's replicas after every this many
   * committed steps (local SGD within the stage; optimiser state stays per replica). 0: never.
   * @default 0
   */
  averageEvery?: number
}

/** Collaborators of {@link createStageWorker}. */
export interface StageWorkerComponents {
  /** This worker's endpoint (the worker registers its handlers on it; the owner closes it). */
  endpoint: Endpoint
  /** The micro-batch `microBatch` of step `step`: the same on every stage (sample-indexed data). */
  batches: (step: number, microBatch: number) => SequenceBatch
  /** @default silent */
  logger?: Logger
}

/** This replica applied step `step`, computed from the hops of `microBatches` it ran. */
export interface AppliedEvent {
  step: number
  microBatches: number[]
}

/** Events of a {@link StageWorker}. */
export interface StageWorkerEvents {
  applied: (event: AppliedEvent) => void
  /** An applied step was undone (`pp-revert`): the replica is back at `step` committed steps. */
  reverted: (event: { step: number }) => void
}

/** One replica of one stage. */
export interface StageWorker extends Startable, AsyncDisposable {
  readonly stage: number
  /** The endpoint id. */
  readonly id: string
  /** Committed optimiser steps. */
  readonly committed: number
  /** The learning-rate multiplier (1 until the stage is recovered non-exactly). */
  readonly lrScale: number
  /** The stage model (its variables are the worker's state). */
  readonly model: StageModel
  /**
   * The gradient of the last prepared step before clipping (after the data-parallel all-reduce),
   * flat in `model.params` order; undefined before the first prepare.
   */
  lastGradient(): Float32Array | undefined
  /** Weights and optimiser slots, with `meta.step` = committed steps and `meta.lrScale`. */
  state(options?: AbortOptions): Promise<StateDict>
  /** Loads what {@link state} returned (weights, optimiser, committed step, lr scale). */
  load(state: StateDict): void
  /** Subscribes to an event; returns the unsubscribe function. */
  on<E extends keyof StageWorkerEvents>(event: E, listener: StageWorkerEvents[E]): () => void
}

interface Run {
  epoch: number
  step: number
  ctrl: AbortController
  done: boolean
  /** `owners[s][m]`: the replica of stage s that runs micro-batch m in this step. */
  owners: number[][]
  stash: Map<string, { data: Float32Array | Int32Array, shape: number[] }>
  slots: Map<string, Float32Array>
  losses: Array<[number, number]>
  /** The clipped gradient, once prepared. */
  prepared?: Float32Array
}

/** The state before the last applied step: clones share the buffers the optimiser replaced. */
interface PreStep {
  step: number
  vars: tf.Tensor[]
  /** Per optimiser slot: a clone, a JS scalar (iteration counter), or undefined (slot not created yet). */
  slots: Array<tf.Tensor | number | undefined>
}

interface EdgeCopy { step: number, tensors: NamedTensor[] }

interface Waiter { resolve: (t: NamedTensor) => void }

/** Creates a stage worker; {@link StageWorker.start} registers its handlers on the endpoint. */
export function createStageWorker (init: StageWorkerInit, components: StageWorkerComponents): StageWorker {
  const { stages, stage, microBatches } = init
  const kind = init.schedule ?? '1f1b'
  const outOfOrder = init.outOfOrder ?? false
  const edgeReplicas = init.edgeReplicas ?? false
  const lr = init.lr ?? 1e-3
  const maxGradNorm = init.maxGradNorm ?? 1
  const requestTimeoutMs = init.requestTimeoutMs ?? 30_000
  const routing = init.routing ?? 'fixed'
  const routingSeed = init.routingSeed ?? 0
  const replicaSync = init.replicaSync ?? 'allreduce'
  const averageEvery = init.averageEvery ?? 0
  const endpoint = components.endpoint
  const log = componentLogger(components.logger, 'pipeline-stage')
  const model = createStageModel({ lm: init.lm, stages, stage })
  const offsets = new Map<string, number>()
  let total = 0
  for (const p of model.params) { offsets.set(p.variable.name, total); total += p.variable.size }
  const firstBlock = model.blockIds[0] ?? 0

  let optimizer: tf.Optimizer = tf.train.adam(lr)
  let lrScale = 1
  let committed = 0
  let epoch = 0
  let members: Member[][] = []
  let run: Run | undefined
  let lastGrad: Float32Array | undefined
  let pre: PreStep | undefined
  let started = false
  let stopped = false
  const inbox = new Map<string, NamedTensor>()
  const waiters = new Map<string, Waiter>()
  const edges = new Map<'embed' | 'head', EdgeCopy>()
  const previousEdges = new Map<'embed' | 'head', EdgeCopy>()
  const unregister: Array<() => void> = []
  const plans = new Map<string, PipelineOp[][][]>()
  const listeners: { [E in keyof StageWorkerEvents]: Set<StageWorkerEvents[E]> } = { applied: new Set(), reverted: new Set() }

  const emit = <E extends keyof StageWorkerEvents>(event: E, payload: Parameters<StageWorkerEvents[E]>[0]): void => {
    for (const l of listeners[event]) {
      try { (l as (p: typeof payload) => void)(payload) } catch (err) { log.warn({ err, event }, 'listener failed') }
    }
  }

  const planFor = (replicas: number[], owners: number[][]): PipelineOp[][][] => {
    const key = `${replicas.join(',')}|${owners.map((o) => o.join(',')).join(';')}`
    let plan = plans.get(key)
    if (plan === undefined) {
      // Random routing makes many distinct assignments: bound the cache.
      if (plans.size >= 64) plans.clear()
      plan = planSchedule({ kind, stages, microBatches, replicas, owners, outOfOrder })
      plans.set(key, plan)
    }
    return plan
  }

  const dropPre = (): void => {
    if (pre === undefined) return
    for (const t of pre.vars) t.dispose()
    for (const t of pre.slots) if (typeof t === 'object') t.dispose()
    pre = undefined
  }

  const keepPre = (step: number): void => {
    dropPre()
    const slots = optimizerSlots(optimizer, model.params).map((s) => {
      const t = s.tensor()
      return t === undefined ? s.scalar() : tf.clone(t)
    })
    pre = { step, vars: model.params.map((p) => tf.clone(p.variable)), slots }
  }

  const restorePre = async (p: PreStep): Promise<void> => {
    model.params.forEach((q, i) => { q.variable.assign(p.vars[i] as tf.Tensor) })
    const slots = optimizerSlots(optimizer, model.params)
    for (let i = 0; i < slots.length; i++) {
      const slot = slots[i] as (typeof slots)[number]
      const v = p.slots[i]
      if (typeof v === 'number') slot.write(Float32Array.of(v))
      else if (v === undefined) slot.write(new Float32Array(slot.shape.reduce((a, b) => a * b, 1)).fill(slot.initial))
      else slot.write(await readFloat(v))
    }
  }

  const deliver = (key: string, tensor: NamedTensor): void => {
    const w = waiters.get(key)
    if (w !== undefined) { waiters.delete(key); w.resolve(tensor) } else inbox.set(key, tensor)
  }

  const take = async (key: string, signal: AbortSignal): Promise<NamedTensor> => {
    const ready = inbox.get(key)
    if (ready !== undefined) { inbox.delete(key); return ready }
    try {
      return await raceSignal(new Promise<NamedTensor>((resolve) => { waiters.set(key, { resolve }) }), signal)
    } finally {
      waiters.delete(key)
    }
  }

  const dropOlder = (): void => {
    for (const key of inbox.keys()) if (Number(key.split(':')[0]) < epoch) inbox.delete(key)
  }

  const advanceEpoch = (next: number): void => {
    if (next <= epoch) return
    epoch = next
    if (endpoint.epoch < next) endpoint.epoch = next
    if (run !== undefined && run.epoch < next) { run.ctrl.abort(new StepAbortedError('Epoch moved on')); run = undefined }
    dropOlder()
  }

  const connectMembers = (list: Member[][]): void => {
    for (const row of list) for (const m of row) if (m.id !== endpoint.id) endpoint.connect(m.id, m.address)
  }

  const memberAt = (r: Run, s: number, microBatch: number): Member => {
    const m = members[s]?.[r.owners[s]?.[microBatch] ?? -1]
    if (m === undefined) throw new InvalidParametersError(`No member for stage ${s}`)
    return m
  }

  const paramsOf = (parts: readonly Segment[]): ModelParam[] => parts.flatMap((p) => [...model.groups[p]])

  const readFloat = async (t: tf.Tensor): Promise<Float32Array> => {
    // On cpu data() aliases the tensor's storage; a copy is what may be sent and kept.
    const d = await t.data() as Float32Array
    return tf.getBackend() === 'cpu' ? d.slice() : d
  }

  const tensor = (name: string, shape: readonly number[], data: Float32Array): NamedTensor => ({ name, shape: [...shape], dtype: 'float32', data })

  const forward = async (r: Run, route: Hop[], op: PipelineOp, signal: AbortSignal): Promise<void> => {
    const hop = route[op.hop] as Hop
    const last = op.hop === route.length - 1
    const key = `${op.microBatch}:${op.hop}`
    let x: tf.Tensor
    if (hop.parts[0] === 'embed') {
      const batch = components.batches(r.step, op.microBatch)
      r.stash.set(key, { data: batch.inputs, shape: [batch.size, batch.seqLen] })
      x = tf.tensor2d(batch.inputs, [batch.size, batch.seqLen], 'int32')
    } else {
      const input = await take(`${r.epoch}:act:${r.step}:${op.microBatch}:${op.hop}`, signal)
      r.stash.set(key, { data: input.data, shape: [...input.shape] })
      x = tensorFrom(input.data, input.shape)
    }
    try {
      const y = model.run(hop.parts, x)
      try {
        if (last) {
          const batch = components.batches(r.step, op.microBatch)
          const loss = tf.tidy(() => lmCrossEntropy(y, tf.tensor2d(batch.targets, [batch.size, batch.seqLen], 'int32')))
          r.losses.push([op.microBatch, (await loss.data())[0] ?? Number.NaN])
          loss.dispose()
        } else {
          const data = await readFloat(y)
          throwIfAborted(signal)
          const to = memberAt(r, (route[op.hop + 1] as Hop).stage, op.microBatch)
          await endpoint.send(to.id, {
            type: PipelineMessage.act, epoch: r.epoch, step: r.step,
            body: { step: r.step, microBatch: op.microBatch, hop: op.hop + 1 }, tensors: [tensor('x', y.shape, data)]
          }, { signal })
        }
      } finally {
        y.dispose()
      }
    } finally {
      x.dispose()
    }
  }

  const backward = async (r: Run, route: Hop[], op: PipelineOp, signal: AbortSignal): Promise<void> => {
    const hop = route[op.hop] as Hop
    const last = op.hop === route.length - 1
    const key = `${op.microBatch}:${op.hop}`
    const stashed = r.stash.get(key)
    if (stashed === undefined) throw new InvalidParametersError(`Backward of ${key} before its forward`)
    const dy = last ? undefined : await take(`${r.epoch}:grad:${r.step}:${op.microBatch}:${op.hop}`, signal)
    const isIds = hop.parts[0] === 'embed'
    const vars = paramsOf(hop.parts).map((p) => p.variable)
    const xVar = isIds ? undefined : tf.variable(tensorFrom(stashed.data as Float32Array, stashed.shape), true)
    const batch = last ? components.batches(r.step, op.microBatch) : undefined
    const dyT = dy === undefined ? undefined : tensorFrom(dy.data, dy.shape)
    let result: { value: tf.Scalar, grads: tf.NamedTensorMap } | undefined
    try {
      result = tf.variableGrads(() => tf.tidy(() => {
        const x = xVar ?? tf.tensor2d(stashed.data as Int32Array, stashed.shape as [number, number], 'int32')
        const y = model.run(hop.parts, x)
        if (batch !== undefined) {
          // Each micro-batch's loss is divided by M: the step's gradient is that of the mean loss.
          return tf.div(lmCrossEntropy(y, tf.tensor2d(batch.targets, [batch.size, batch.seqLen], 'int32')), microBatches) as tf.Scalar
        }
        return tf.sum(tf.mul(y, dyT as tf.Tensor)) as tf.Scalar
      }), xVar === undefined ? vars : [...vars, xVar])
      const slot = new Float32Array(total)
      for (const v of vars) {
        const g = result.grads[v.name]
        if (g !== undefined) slot.set(await g.data() as Float32Array, offsets.get(v.name) ?? 0)
      }
      r.slots.set(key, slot)
      r.stash.delete(key)
      if (op.hop > 0 && xVar !== undefined) {
        const gx = result.grads[xVar.name]
        if (gx === undefined) throw new InvalidParametersError('No gradient reached the stage input')
        const data = await readFloat(gx)
        throwIfAborted(signal)
        const to = memberAt(r, (route[op.hop - 1] as Hop).stage, op.microBatch)
        await endpoint.send(to.id, {
          type: PipelineMessage.grad, epoch: r.epoch, step: r.step,
          body: { step: r.step, microBatch: op.microBatch, hop: op.hop - 1 }, tensors: [tensor('dx', gx.shape, data)]
        }, { signal })
      }
    } finally {
      if (result !== undefined) { result.value.dispose(); for (const g of Object.values(result.grads)) g.dispose() }
      xVar?.dispose()
      dyT?.dispose()
    }
  }

  const onStep = async (env: Envelope, options: Required<AbortOptions>): Promise<{ type: string, body: unknown }> => {
    const body = stepBodySchema.parse(env.header.body)
    if (body.epoch < epoch) throw new StaleEpochError(`Step of epoch ${body.epoch} arrived in epoch ${epoch}`)
    advanceEpoch(body.epoch)
    members = body.members
    connectMembers(members)
    const replica = members[stage]?.findIndex((m) => m.id === endpoint.id) ?? -1
    if (replica < 0) throw new InvalidParametersError(`${endpoint.id} is not a member of stage ${stage}`)
    if (members.length !== stages) throw new InvalidParametersError(`Expected ${stages} stages, got ${members.length}`)
    run?.ctrl.abort(new StepAbortedError('Superseded by a new step'))
    // Every stage committed the pre-step copy's step once the controller starts a later one.
    if (pre !== undefined && body.step > pre.step) dropPre()
    const replicas = members.map((row) => row.length)
    const owners = routeReplicas({ routing, seed: routingSeed, step: body.step, replicas, microBatches })
    const r: Run = { epoch: body.epoch, step: body.step, ctrl: new AbortController(), done: false, owners, stash: new Map(), slots: new Map(), losses: [] }
    run = r
    const ops = planFor(replicas, owners)[stage]?.[replica] ?? []
    const signal = AbortSignal.any([options.signal, r.ctrl.signal])
    const routes = new Map<number, Hop[]>()
    for (const op of ops) {
      throwIfAborted(signal)
      let route = routes.get(op.microBatch)
      if (route === undefined) { route = routeOf({ stages, outOfOrder }, op.microBatch); routes.set(op.microBatch, route) }
      if (op.kind === 'F') await forward(r, route, op, signal)
      else await backward(r, route, op, signal)
    }
    r.done = true
    return { type: 'pp-step-ok', body: { losses: r.losses } }
  }

  const flatOf = (params: readonly ModelParam[]): Promise<Float32Array[]> => Promise.all(params.map(async (p) => await readFloat(p.variable)))

  const assign = (params: readonly ModelParam[], values: readonly Float32Array[]): void => {
    params.forEach((p, i) => {
      const t = tensorFrom(values[i] as Float32Array, p.variable.shape)
      p.variable.assign(t)
      t.dispose()
    })
  }

  const onPrepare = async (env: Envelope, options: Required<AbortOptions>): Promise<{ type: string, body: unknown }> => {
    const { step } = prepareBodySchema.parse(env.header.body)
    if (env.header.epoch > epoch) throw new StaleEpochError(`Prepare of epoch ${env.header.epoch} for a step run in epoch ${epoch}`)
    const r = run
    if (r === undefined || r.step !== step || !r.done) throw new StepAbortedError(`Step ${step} did not complete on ${endpoint.id}`)
    const signal = AbortSignal.any([options.signal, r.ctrl.signal])
    // Sum per-hop gradients in (micro-batch, hop) order so the result never depends on timing.
    const keys = [...r.slots.keys()].sort((a, b) => {
      const [am, ah] = a.split(':').map(Number) as [number, number]
      const [bm, bh] = b.split(':').map(Number) as [number, number]
      return am - bm || ah - bh
    })
    const acc = new Float64Array(total)
    for (const k of keys) { const s = r.slots.get(k) as Float32Array; for (let i = 0; i < total; i++) acc[i] = (acc[i] as number) + (s[i] as number) }
    const partial = Float32Array.from(acc)
    const replicas = members[stage] ?? []
    let grad: Float32Array = partial
    if (replicas.length > 1 && replicaSync === 'allreduce') {
      grad = await replicaSum(r, 'grad', partial, signal)
    } else if (replicas.length > 1) {
      // Each micro-batch's loss was divided by M: rescale to the mean over this replica's own micro-batches.
      const mine = new Set(keys.map((k) => k.split(':')[0])).size
      const scale = mine > 0 ? microBatches / mine : 1
      for (let i = 0; i < total; i++) grad[i] = (grad[i] as number) * scale
    }
    lastGrad = grad.slice()
    let sq = 0
    for (let i = 0; i < total; i++) sq += (grad[i] as number) * (grad[i] as number)
    const norm = Math.sqrt(sq)
    const scale = norm > maxGradNorm ? maxGradNorm / norm : 1
    if (scale !== 1) for (let i = 0; i < total; i++) grad[i] = (grad[i] as number) * scale
    throwIfAborted(signal)
    r.prepared = grad
    return { type: 'pp-prepare-ok', body: { norm, clipped: norm * scale } }
  }

  /** Sums `data` over the stage's replicas in replica order (float64), so every replica gets the same bits. */
  const replicaSum = async (r: Run, kind: 'grad' | 'weights', data: Float32Array, signal: AbortSignal): Promise<Float32Array> => {
    const replicas = members[stage] ?? []
    const me = replicas.findIndex((m) => m.id === endpoint.id)
    await Promise.all(replicas.map(async (m, i) => {
      if (i === me) return
      await endpoint.send(m.id, { type: PipelineMessage.dpGrad, epoch: r.epoch, step: r.step, body: { step: r.step, replica: me, kind }, tensors: [tensor('g', [total], data)] }, { signal })
    }))
    const parts = await Promise.all(replicas.map(async (_m, i) => i === me ? data : (await take(`${r.epoch}:dp-${kind}:${r.step}:${i}`, signal)).data))
    const sum = new Float64Array(total)
    for (const p of parts) for (let i = 0; i < total; i++) sum[i] = (sum[i] as number) + (p[i] as number)
    return Float32Array.from(sum)
  }

  const averageReplicas = async (r: Run, signal: AbortSignal): Promise<void> => {
    const flat = new Float32Array(total)
    const values = await flatOf(model.params)
    model.params.forEach((p, i) => { flat.set(values[i] as Float32Array, offsets.get(p.variable.name) ?? 0) })
    const sum = await replicaSum(r, 'weights', flat, signal)
    const n = (members[stage] ?? []).length
    for (let i = 0; i < total; i++) sum[i] = (sum[i] as number) / n
    assign(model.params, model.params.map((p) => {
      const off = offsets.get(p.variable.name) ?? 0
      return sum.subarray(off, off + p.variable.size)
    }))
  }

  const onCommit = async (env: Envelope, options: Required<AbortOptions>): Promise<{ type: string, body: unknown }> => {
    const { step } = commitBodySchema.parse(env.header.body)
    if (env.header.epoch > epoch) throw new StaleEpochError(`Commit of epoch ${env.header.epoch} for a step run in epoch ${epoch}`)
    const r = run
    if (r === undefined || r.step !== step || r.prepared === undefined) throw new StepAbortedError(`Step ${step} was not prepared on ${endpoint.id}`)
    const grad = r.prepared
    keepPre(step)
    const map: tf.NamedTensorMap = {}
    for (const p of model.params) {
      const off = offsets.get(p.variable.name) ?? 0
      map[p.variable.name] = tensorFrom(grad.slice(off, off + p.variable.size), p.variable.shape)
    }
    try {
      optimizer.applyGradients(map)
    } finally {
      for (const t of Object.values(map)) t.dispose()
    }
    committed = step + 1
    const signal = AbortSignal.any([options.signal, r.ctrl.signal])
    // An abort here leaves the step applied but not averaged: the controller reverts it (pre-step copy).
    if (replicaSync === 'local' && averageEvery > 0 && committed % averageEvery === 0 && (members[stage]?.length ?? 1) > 1) await averageReplicas(r, signal)
    run = undefined
    emit('applied', { step, microBatches: [...new Set([...r.slots.keys()].map((k) => Number(k.split(':')[0])))].sort((a, b) => a - b) })
    if (edgeReplicas) await pushEdges(step, signal)
    return { type: 'pp-commit-ok', body: { committed } }
  }

  const onRevert = async (env: Envelope): Promise<{ type: string, body: unknown }> => {
    const { step } = revertBodySchema.parse(env.header.body)
    advanceEpoch(env.header.epoch)
    run?.ctrl.abort(new StepAbortedError('Reverting'))
    run = undefined
    // Edge copies pushed by a neighbour that applied `step` go back with it.
    for (const part of ['embed', 'head'] as const) {
      if ((edges.get(part)?.step ?? -1) < step) continue
      const prev = previousEdges.get(part)
      if (prev !== undefined && prev.step < step) edges.set(part, prev)
      else edges.delete(part)
      previousEdges.delete(part)
    }
    if (committed === step) return { type: 'pp-revert-ok', body: { committed, reverted: false } }
    const p = pre
    if (committed !== step + 1 || p === undefined || p.step !== step) {
      throw new InvalidParametersError(`${endpoint.id} is at ${committed} committed steps and cannot go back to ${step}`)
    }
    await restorePre(p)
    dropPre()
    committed = step
    log.info({ stage, step }, 'applied step reverted')
    emit('reverted', { step })
    return { type: 'pp-revert-ok', body: { committed, reverted: true } }
  }

  const pushEdges = async (step: number, signal: AbortSignal): Promise<void> => {
    const targets: Array<['embed' | 'head', number]> = []
    if (stage === 0 && stages > 1) targets.push(['embed', 1])
    if (stage === stages - 1 && stages > 1) targets.push(['head', stages - 2])
    for (const [part, to] of targets) {
      const params = model.groups[part]
      const values = await flatOf(params)
      const tensors = params.map((p, i) => tensor(p.name, p.variable.shape, values[i] as Float32Array))
      for (const m of members[to] ?? []) {
        await endpoint.send(m.id, { type: PipelineMessage.edge, step, body: { step, part }, tensors }, { signal })
      }
    }
  }

  const relName = (name: string): string => name.replace(/^block(\d+)\//, (_s, i: string) => `b${Number(i) - firstBlock}/`)

  const onGet = async (env: Envelope): Promise<{ type: string, body: unknown, tensors: NamedTensor[] }> => {
    const { part } = getBodySchema.parse(env.header.body)
    advanceEpoch(env.header.epoch)
    const body = { step: committed, lrScale }
    if (part === 'full') {
      const s = await extractState(model, optimizer)
      return { type: 'pp-get-ok', body, tensors: [...s.tensors] }
    }
    if (part === 'embed-copy' || part === 'head-copy') {
      const stored = edges.get(part === 'embed-copy' ? 'embed' : 'head')
      if (stored === undefined) throw new NotFoundError(`Stage ${stage} holds no ${part}`)
      return { type: 'pp-get-ok', body, tensors: stored.tensors }
    }
    const params = model.groups.blocks
    const values = await flatOf(params)
    return { type: 'pp-get-ok', body, tensors: params.map((p, i) => tensor(relName(p.name), p.variable.shape, values[i] as Float32Array)) }
  }

  const freshOptimizer = (scale: number): void => {
    optimizer.dispose()
    lrScale = scale
    optimizer = tf.train.adam(lr * scale)
  }

  const reinit = async (params: readonly ModelParam[], seed: number): Promise<void> => {
    const other = createStageModel({ lm: { ...init.lm, seed }, stages, stage })
    try {
      const byName = new Map(other.params.map((p) => [p.name, p.variable]))
      const values = await Promise.all(params.map(async (p) => await readFloat(byName.get(p.name) as tf.Variable)))
      assign(params, values)
    } finally {
      other.dispose()
    }
  }

  const fetchPart = async (member: Member, part: 'blocks' | 'full' | 'embed-copy' | 'head-copy', signal: AbortSignal): Promise<{ tensors: NamedTensor[], step: number, lrScale: number }> => {
    if (member.id !== endpoint.id) endpoint.connect(member.id, member.address)
    const reply = await endpoint.request(member.id, { type: PipelineMessage.get, body: { part } }, { signal, timeoutMs: requestTimeoutMs })
    const meta = getReplySchema.parse(reply.header.body)
    return { tensors: decodeTensors(reply).map((t) => ({ ...t, data: t.data.slice() })), ...meta }
  }

  const checkBlocks = (tensors: readonly NamedTensor[]): Float32Array[] => {
    const params = model.groups.blocks
    if (tensors.length !== params.length) throw new InvalidParametersError(`Source has ${tensors.length} block tensors, stage ${stage} needs ${params.length} (stages must hold equally many blocks)`)
    return params.map((p, i) => {
      const t = tensors[i] as NamedTensor
      if (t.name !== relName(p.name) || t.data.length !== p.variable.size) throw new InvalidParametersError(`Block tensor ${t.name} does not fit ${p.name}`)
      return t.data
    })
  }

  const onRecover = async (env: Envelope, options: Required<AbortOptions>): Promise<{ type: string, body: unknown }> => {
    const body = recoverBodySchema.parse(env.header.body)
    advanceEpoch(env.header.epoch)
    const started = performance.now()
    run?.ctrl.abort(new StepAbortedError('Recovering'))
    run = undefined
    dropPre()
    const signal = options.signal
    if (body.kind === 'replica-copy') {
      const src = body.sources[0]
      if (src === undefined) throw new InvalidParametersError('replica-copy needs a source')
      const got = await fetchPart(src.member, 'full', signal)
      freshOptimizer(got.lrScale)
      loadState(model, optimizer, { tensors: got.tensors })
      committed = got.step
    } else {
      if (body.kind === 'random') {
        await reinit(model.params, body.seed)
      } else {
        const blocks = body.sources.filter((s) => s.part === 'blocks')
        const fetched = await Promise.all(blocks.map(async (s) => checkBlocks((await fetchPart(s.member, 'blocks', signal)).tensors)))
        const weights = blocks.map((s) => s.weight)
        const values = model.groups.blocks.map((_p, i) => weightedAverage(fetched.map((f) => f[i] as Float32Array), weights))
        assign(model.groups.blocks, values)
        const edgeParams = [...model.groups.embed, ...model.groups.head]
        if (edgeParams.length > 0) {
          const edgeSource = body.sources.find((s) => s.part === 'edge')
          let copy: NamedTensor[] | undefined
          try {
            if (edgeSource !== undefined) copy = (await fetchPart(edgeSource.member, stage === 0 ? 'embed-copy' : 'head-copy', signal)).tensors
          } catch (err) {
            if ((err as Error).name !== NotFoundError.name) throw err
          }
          if (copy !== undefined && copy.length === edgeParams.length && copy.every((t, i) => t.name === edgeParams[i]?.name)) {
            assign(edgeParams, copy.map((t) => t.data))
          } else {
            // Nobody kept the embedding/head: it is lost and starts over (plain CheckFree cannot do better).
            await reinit(edgeParams, body.seed)
          }
        }
      }
      freshOptimizer(body.lrScale)
      committed = body.step
    }
    log.info({ kind: body.kind, stage, ms: performance.now() - started }, 'stage state rebuilt')
    return { type: 'pp-recover-ok', body: { ms: performance.now() - started } }
  }

  const onLoad = async (env: Envelope): Promise<{ type: string, body: unknown }> => {
    const body = loadBodySchema.parse(env.header.body)
    advanceEpoch(env.header.epoch)
    run?.ctrl.abort(new StepAbortedError('Loading a snapshot'))
    run = undefined
    dropPre()
    freshOptimizer(body.lrScale)
    loadState(model, optimizer, { tensors: decodeTensors(env) })
    committed = body.step
    return { type: 'pp-load-ok', body: {} }
  }

  const onHopMessage = (type: 'act' | 'grad') => (env: Envelope): void => {
    const body = hopBodySchema.parse(env.header.body)
    if (env.header.epoch < epoch) return
    const [t] = decodeTensors(env)
    if (t === undefined) throw new InvalidParametersError(`${type} message without a tensor`)
    deliver(`${env.header.epoch}:${type}:${body.step}:${body.microBatch}:${body.hop}`, t)
  }

  return {
    stage,
    get id () { return endpoint.id },
    get committed () { return committed },
    get lrScale () { return lrScale },
    model,
    lastGradient: () => lastGrad?.slice(),
    on (event, listener) {
      const set = listeners[event] as Set<typeof listener>
      set.add(listener)
      return () => { set.delete(listener) }
    },
    async state (options = {}) {
      throwIfAborted(options.signal)
      const s = await extractState(model, optimizer)
      return { tensors: s.tensors, meta: { step: committed, epoch, lrScale } }
    },
    load (state) {
      run?.ctrl.abort(new StepAbortedError('Loading a state'))
      run = undefined
      dropPre()
      const scale = typeof state.meta.lrScale === 'number' ? state.meta.lrScale : 1
      freshOptimizer(scale)
      loadState(model, optimizer, state)
      committed = state.meta.step
    },
    start () {
      if (started || stopped) return
      started = true
      unregister.push(
        endpoint.handle(PipelineMessage.step, onStep),
        endpoint.handle(PipelineMessage.prepare, onPrepare),
        endpoint.handle(PipelineMessage.commit, onCommit),
        endpoint.handle(PipelineMessage.revert, onRevert),
        endpoint.handle(PipelineMessage.abort, (env) => {
          advanceEpoch(abortBodySchema.parse(env.header.body).epoch)
          return { type: 'pp-abort-ok', body: { epoch } }
        }),
        endpoint.handle(PipelineMessage.act, onHopMessage('act')),
        endpoint.handle(PipelineMessage.grad, onHopMessage('grad')),
        endpoint.handle(PipelineMessage.dpGrad, (env) => {
          const body = dpGradBodySchema.parse(env.header.body)
          const [t] = decodeTensors(env)
          if (t === undefined || env.header.epoch < epoch) return
          deliver(`${env.header.epoch}:dp-${body.kind ?? 'grad'}:${body.step}:${body.replica}`, t)
        }),
        endpoint.handle(PipelineMessage.edge, (env) => {
          const body = edgeBodySchema.parse(env.header.body)
          if (env.header.epoch < epoch) return
          const current = edges.get(body.part)
          if (current !== undefined && current.step < body.step) previousEdges.set(body.part, current)
          edges.set(body.part, { step: body.step, tensors: decodeTensors(env).map((t) => ({ ...t, data: t.data.slice() })) })
        }),
        endpoint.handle(PipelineMessage.get, onGet),
        endpoint.handle(PipelineMessage.recover, onRecover),
        endpoint.handle(PipelineMessage.load, onLoad)
      )
    },
    stop () {
      if (stopped) return
      stopped = true
      for (const u of unregister.splice(0)) u()
      run?.ctrl.abort(new StepAbortedError('Stage worker stopped'))
      run = undefined
      dropPre()
      for (const set of Object.values(listeners)) set.clear()
      inbox.clear()
      waiters.clear()
      optimizer.dispose()
      model.dispose()
    },
    async [Symbol.asyncDispose] () { this.stop() }
  }
}
