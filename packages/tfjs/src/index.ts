/**
 * @packageDocumentation
 * TensorFlow.js bridge: backend ladder, fast wasm matmul, model <-> StateDict, datasets, reference models.
 */
export {}
