/**
 * @packageDocumentation
 * The phalanx command: launch, coordinator, worker, status, checkpoint.
 */
export {}
