/**
 * The backend ladder: picks the fastest TensorFlow.js backend that works on this machine and says
 * why, and installs the wasm `BatchMatMul` override that makes dense-layer gradients 3–4× faster.
 *
 * @module
 */
import * as tf from '@tensorflow/tfjs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { BackendUnavailableError, componentLogger, raceSignal, type AbortOptions, type Logger } from '@phalanx/core'

/** A compute backend Phalanx can run on, fastest first. */
export type BackendName = 'tensorflow' | 'webgpu' | 'wasm' | 'cpu'

/** The ladder in the order `auto` tries it. */
export const BACKEND_LADDER: readonly BackendName[] = ['tensorflow', 'webgpu', 'wasm', 'cpu']

/** Tunables of {@link selectBackend}. */
export interface SelectBackendInit {
  /**
   * `auto` walks {@link BACKEND_LADDER} and takes the first backend that works; a name forces that
   * backend and throws `BackendUnavailableError` when it does not work.
   * @default 'auto'
   */
  prefer?: 'auto' | BackendName
  /**
   * Install the transposed-input `BatchMatMul` override on wasm (2–4× faster dense gradients;
   * results equal the stock kernel's up to float summation order, see `setWasmMatMulOverride`).
   * Only turn it off to measure the stock kernel.
   * @default true
   */
  wasmMatMulOverride?: boolean
  /**
   * Dawn toggles for WebGPU, e.g. `['backend=vulkan']` or `['backend=opengles']`.
   * @default []
   */
  dawnOptions?: readonly string[]
  /**
   * Request a `compatibility` feature-level WebGPU adapter (Dawn's GL backends, Mesa llvmpipe).
   * @default false
   */
  webgpuCompatibility?: boolean
  /**
   * Let `auto` take a software (CPU-emulated) WebGPU adapter such as llvmpipe. Such adapters are
   * slower than wasm, so `auto` skips them unless this is set; forcing `webgpu` always accepts them.
   * @default false
   */
  allowSoftwareGpu?: boolean
}

/** Collaborators of {@link selectBackend}. */
export interface SelectBackendComponents {
  /** Receives one `info` line naming the backend and the reason. @default silent */
  logger?: Logger
}

/** The outcome of {@link selectBackend}. */
export interface BackendSelection {
  /** The backend tf now runs on. */
  name: BackendName
  /** Why this backend (and why the faster ones were skipped). */
  reason: string
  /** Whether the wasm `BatchMatMul` override is active (always false off wasm). */
  matMulOverride: boolean
  /** Backends tried before this one, with the reason each was skipped. */
  skipped: ReadonlyArray<{ name: BackendName, reason: string }>
}

type Attempt = { ok: true, reason: string } | { ok: false, reason: string }

/**
 * Selects and initialises the tf backend. Logs one line: which backend and why.
 *
 * @throws BackendUnavailableError when `prefer` names a backend that cannot run here.
 */
export async function selectBackend (init: SelectBackendInit = {}, components: SelectBackendComponents = {}, options: AbortOptions = {}): Promise<BackendSelection> {
  const log = componentLogger(components.logger, 'tfjs-backend')
  const prefer = init.prefer ?? 'auto'
  const forced = prefer !== 'auto'
  const candidates = forced ? [prefer] : BACKEND_LADDER
  const skipped: Array<{ name: BackendName, reason: string }> = []
  for (const name of candidates) {
    const attempt = await raceSignal(tryBackend(name, init, forced), options.signal)
    if (attempt.ok) {
      const matMulOverride = name === 'wasm' && isWasmMatMulOverridden()
      const reason = forced ? `forced by prefer=${name}; ${attempt.reason}` : attempt.reason
      log.info({ backend: name, reason, matMulOverride, skipped }, `compute backend: ${name}`)
      return { name, reason, matMulOverride, skipped }
    }
    if (forced) {
      throw new BackendUnavailableError(`Backend "${name}" is unavailable: ${attempt.reason}`, { details: { backend: name, reason: attempt.reason } })
    }
    log.debug({ backend: name, reason: attempt.reason }, 'backend skipped')
    skipped.push({ name, reason: attempt.reason })
  }
  // cpu is always registered by @tensorflow/tfjs, so reaching this line means tf itself is broken.
  throw new BackendUnavailableError('No TensorFlow.js backend could be initialised', { details: { skipped } })
}

async function tryBackend (name: BackendName, init: SelectBackendInit, forced: boolean): Promise<Attempt> {
  switch (name) {
    case 'tensorflow': return await tryTensorflow()
    case 'webgpu': return await tryWebgpu(init, forced)
    case 'wasm': return await tryWasm(init)
    case 'cpu': return await trySetBackend('cpu', 'pure-JS reference backend, always available')
  }
}

async function trySetBackend (name: string, reason: string): Promise<Attempt> {
  try {
    if (await tf.setBackend(name)) {
      await tf.ready()
      return { ok: true, reason }
    }
    return { ok: false, reason: `tf.setBackend('${name}') returned false (initialisation failed)` }
  } catch (err) {
    return { ok: false, reason: `tf.setBackend('${name}') threw: ${(err as Error).message}` }
  }
}

async function tryTensorflow (): Promise<Attempt> {
  const missing: string[] = []
  for (const specifier of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
    try {
      await import(specifier)
    } catch (err) {
      missing.push(`${specifier} (${(err as { code?: string }).code ?? (err as Error).message})`)
      continue
    }
    return await trySetBackend('tensorflow', `native libtensorflow through ${specifier}`)
  }
  return { ok: false, reason: `not installed: ${missing.join(', ')}` }
}

async function tryWebgpu (init: SelectBackendInit, forced: boolean): Promise<Attempt> {
  if (tf.findBackendFactory('webgpu') == null) {
    const { installWebGpuGlobals } = await import('./webgpu-setup.js')
    const setup = await installWebGpuGlobals({ dawnOptions: init.dawnOptions ?? [], compatibility: init.webgpuCompatibility ?? false })
    if (!setup.ok) return { ok: false, reason: setup.reason }
    const { adapter } = setup
    const label = adapter.description || `${adapter.vendor} ${adapter.device}`.trim() || 'unnamed adapter'
    if (adapter.software && !forced && init.allowSoftwareGpu !== true) {
      return { ok: false, reason: `only a software adapter (${label}) is available, slower than wasm` }
    }
    try {
      // Imported only after navigator.gpu exists: the module registers the backend at evaluation.
      const specifier = '@tensorflow/tfjs-backend-webgpu'
      await import(specifier)
    } catch (err) {
      return { ok: false, reason: `@tensorflow/tfjs-backend-webgpu did not load: ${(err as Error).message}` }
    }
    return await trySetBackend('webgpu', `WebGPU adapter ${label}${adapter.software ? ' (software)' : ''}`)
  }
  return await trySetBackend('webgpu', 'WebGPU backend already registered')
}

/** Directory holding the tfjs wasm binaries, with a trailing slash as `setWasmPaths` wants. */
export function wasmBinaryDirectory (): string {
  const require = createRequire(import.meta.url)
  return join(dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist') + '/'
}

async function tryWasm (init: SelectBackendInit): Promise<Attempt> {
  if (!isInitialised('wasm')) {
    try {
      const wasm = await import('@tensorflow/tfjs-backend-wasm')
      // Must precede the first initialisation; harmless again before it.
      wasm.setWasmPaths(wasmBinaryDirectory())
    } catch (err) {
      return { ok: false, reason: `@tensorflow/tfjs-backend-wasm did not load: ${(err as Error).message}` }
    }
  }
  const attempt = await trySetBackend('wasm', 'WebAssembly SIMD (XNNPACK), single thread')
  if (!attempt.ok) return attempt
  setWasmMatMulOverride(init.wasmMatMulOverride ?? true)
  return attempt
}

/**
 * Whether tf has already initialised backend `name`. `tf.findBackend` would *start* an
 * initialisation as a side effect (before wasm paths are set), so read the engine's registry.
 */
function isInitialised (name: string): boolean {
  return Object.hasOwn((tf.engine() as unknown as { registry: Record<string, unknown> }).registry, name)
}

/** Marks our kernel config in tf's (global) kernel registry; also holds the stock kernel to restore. */
const OVERRIDE_MARK = Symbol.for('@phalanx/tfjs.wasmBatchMatMul')

interface OverrideConfig extends tf.KernelConfig {
  [OVERRIDE_MARK]: tf.KernelConfig
}

interface WasmBackendLike {
  disposeData(dataId: tf.DataId): boolean
}

/** True when the wasm `BatchMatMul` kernel currently registered is the Phalanx override. */
export function isWasmMatMulOverridden (): boolean {
  const current = tf.getKernel('BatchMatMul', 'wasm') as Partial<OverrideConfig> | undefined
  return current?.[OVERRIDE_MARK] !== undefined
}

/**
 * Installs (`true`) or removes (`false`) the wasm `BatchMatMul` override. Idempotent: tf's kernel
 * registry is process-global, so the state lives there (marked by a registry symbol), never in
 * this module. Stock wasm runs `matMul` with `transposeA`/`transposeB` 8–13× slower than plain
 * `matMul`, and every dense-layer gradient uses them; the override transposes explicitly (a fast
 * XNNPACK kernel) and calls the stock kernel untransposed. Deterministic either way, but not
 * bit-identical to the stock kernel for `transposeA` with an inner dimension above ~64: the stock
 * slow path sums in another order (measured max relative difference ~1e-6, see docs/tfjs.md).
 *
 * @throws BackendUnavailableError when the wasm backend has not been initialised yet (its stock
 *   kernel must have run its setup first).
 */
export function setWasmMatMulOverride (enabled: boolean): void {
  if (!isInitialised('wasm')) throw new BackendUnavailableError('The wasm backend is not initialised; call selectBackend({ prefer: "wasm" }) first')
  const current = tf.getKernel('BatchMatMul', 'wasm') as Partial<OverrideConfig> | undefined
  if (current === undefined) throw new BackendUnavailableError('The wasm backend has no BatchMatMul kernel')
  const installed = current[OVERRIDE_MARK]
  if (enabled === (installed !== undefined)) return
  tf.unregisterKernel('BatchMatMul', 'wasm')
  if (installed !== undefined) {
    tf.registerKernel(installed)
    return
  }
  const stock = current as tf.KernelConfig
  const transpose = tf.getKernel('Transpose', 'wasm')
  if (transpose === undefined) {
    tf.registerKernel(stock)
    throw new BackendUnavailableError('The wasm backend has no Transpose kernel')
  }
  const swapLast = (x: tf.TensorInfo, backend: object): tf.TensorInfo => {
    const r = x.shape.length
    const perm = [...Array(r).keys()]
    perm[r - 2] = r - 1
    perm[r - 1] = r - 2
    return transpose.kernelFunc({ inputs: { x }, backend, attrs: { perm } }) as tf.TensorInfo
  }
  const override: OverrideConfig = {
    kernelName: 'BatchMatMul',
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      let a = inputs.a as tf.TensorInfo
      let b = inputs.b as tf.TensorInfo
      const temporaries: tf.TensorInfo[] = []
      try {
        if (attrs?.transposeA === true) { a = swapLast(a, backend); temporaries.push(a) }
        if (attrs?.transposeB === true) { b = swapLast(b, backend); temporaries.push(b) }
        return stock.kernelFunc({ inputs: { a, b }, backend, attrs: { ...attrs, transposeA: false, transposeB: false } })
      } finally {
        for (const t of temporaries) (backend as WasmBackendLike).disposeData(t.dataId)
      }
    },
    [OVERRIDE_MARK]: stock
  }
  tf.registerKernel(override)
}
