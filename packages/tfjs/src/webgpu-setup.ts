/**
 * WebGPU globals for Node. `@tensorflow/tfjs-backend-webgpu` registers itself when its module is
 * evaluated and reads `navigator.gpu` then, but Node 20 has no `navigator`: this module must run
 * (and be awaited) before the backend module is imported. It lives apart from `backend.ts` so the
 * Dawn addon (21 MB) is only loaded when the ladder actually tries WebGPU.
 *
 * @module
 */

/** The slice of the WebGPU `GPUAdapterInfo` Phalanx reads. */
export interface GpuAdapterInfo {
  vendor: string
  architecture: string
  device: string
  description: string
  /** True for a CPU (software) implementation: Mesa llvmpipe/lavapipe, SwiftShader. */
  software: boolean
}

/** Options of {@link installWebGpuGlobals}. */
export interface WebGpuSetupOptions {
  /** Dawn toggles such as `backend=vulkan` or `backend=opengles`. */
  dawnOptions: readonly string[]
  /** Ask for a `compatibility` feature-level adapter (needed on Dawn's GL backends / llvmpipe). */
  compatibility: boolean
}

/** The result of {@link installWebGpuGlobals}: the adapter tfjs will get, or why there is none. */
export type WebGpuSetupResult =
  | { ok: true, adapter: GpuAdapterInfo }
  | { ok: false, reason: string }

interface DawnAdapter {
  info?: Partial<Record<'vendor' | 'architecture' | 'device' | 'description', string>> & { isFallbackAdapter?: boolean }
  isFallbackAdapter?: boolean
}

interface DawnGpu {
  requestAdapter(options?: Record<string, unknown>): Promise<DawnAdapter | null>
  wgslLanguageFeatures?: unknown
}

interface DawnModule {
  create(options: string[]): DawnGpu
  globals: Record<string, unknown>
}

const SOFTWARE = /llvmpipe|lavapipe|swiftshader|software|softpipe/i

/**
 * Loads Dawn (`webgpu` npm package), asks it for an adapter and, when there is one, installs
 * `navigator.gpu` and the WebGPU constants (`GPUBufferUsage`, ...) on `globalThis`.
 * Returns the adapter's description, or the reason there is none (never throws for a missing GPU).
 */
export async function installWebGpuGlobals (options: WebGpuSetupOptions): Promise<WebGpuSetupResult> {
  let dawn: DawnModule
  try {
    const specifier = 'webgpu'
    dawn = await import(specifier) as DawnModule
  } catch (err) {
    return { ok: false, reason: `the webgpu package (Dawn) did not load: ${(err as Error).message}` }
  }
  const gpu = dawn.create([...options.dawnOptions])
  const request = async (o: Record<string, unknown> = {}): Promise<DawnAdapter | null> =>
    await gpu.requestAdapter(options.compatibility ? { ...o, featureLevel: 'compatibility' } : o)
  let adapter: DawnAdapter | null
  try {
    adapter = await request()
  } catch (err) {
    return { ok: false, reason: `Dawn requestAdapter failed: ${(err as Error).message}` }
  }
  if (adapter === null) return { ok: false, reason: `Dawn found no adapter (options: ${options.dawnOptions.join(' ') || 'default'})` }
  const raw = adapter.info ?? {}
  const info: GpuAdapterInfo = {
    vendor: raw.vendor ?? '',
    architecture: raw.architecture ?? '',
    device: raw.device ?? '',
    description: raw.description ?? '',
    software: false
  }
  info.software = adapter.isFallbackAdapter === true || raw.isFallbackAdapter === true ||
    SOFTWARE.test(`${info.vendor} ${info.architecture} ${info.device} ${info.description}`)
  Object.assign(globalThis, dawn.globals)
  // tfjs passes no featureLevel, so the wrapper adds it; defineProperty because Node 21+ has a
  // read-only `navigator` getter.
  Object.defineProperty(globalThis, 'navigator', {
    configurable: true,
    writable: true,
    value: {
      gpu: {
        requestAdapter: request,
        getPreferredCanvasFormat: () => 'rgba8unorm',
        wgslLanguageFeatures: gpu.wgslLanguageFeatures
      }
    }
  })
  return { ok: true, adapter: info }
}
