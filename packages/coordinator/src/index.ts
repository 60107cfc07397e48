/**
 * @packageDocumentation
 * Membership, failure detection, epochs, per-step two-phase commit, elastic rescheduling, WAL state store.
 */
export {}
