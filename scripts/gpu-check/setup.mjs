// WebGPU globals for Node, evaluated before @tensorflow/tfjs-backend-webgpu (which reads
// navigator.gpu when its module is evaluated). In the bundle dawn.node sits next to check.mjs;
// unbundled it comes from the webgpu npm package. DAWN_OPTS: e.g. "backend=vulkan" or
// "backend=opengles"; COMPAT=1 asks for a compatibility feature-level adapter (GL / llvmpipe).
import { createRequire } from 'node:module'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
const here = dirname(fileURLToPath(import.meta.url))
const local = join(here, 'dawn.node')
const dawnPath = process.env.DAWN_NODE ?? (existsSync(local) ? local : join(dirname(require.resolve('webgpu')), 'dist', `${process.platform}-${process.arch}`, 'dawn.node'))
const { create, globals } = require(dawnPath)
Object.assign(globalThis, globals)
const options = (process.env.DAWN_OPTS ?? '').split(/\s+/).filter(Boolean)
const gpu = create(options)
const compat = process.env.COMPAT === '1'
const requestAdapter = (o = {}) => gpu.requestAdapter(compat ? { ...o, featureLevel: 'compatibility' } : o)
Object.defineProperty(globalThis, 'navigator', {
  configurable: true,
  writable: true,
  value: { gpu: { requestAdapter, getPreferredCanvasFormat: () => 'rgba8unorm', wgslLanguageFeatures: gpu.wgslLanguageFeatures } }
})
export const dawn = { path: dawnPath, options, compat, requestAdapter }
