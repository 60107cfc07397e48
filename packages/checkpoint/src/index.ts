/**
 * @packageDocumentation
 * Lazy asynchronous multi-level checkpoints and the snapshot holder process.
 */
export {}
