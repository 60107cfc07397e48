/**
 * @packageDocumentation
 * Byzantine-robust aggregators and attack generators over Float32Array inputs.
 */
export {}
