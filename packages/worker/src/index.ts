/**
 * @packageDocumentation
 * The training-loop API users wrap their loop with.
 */
export {}
