/**
 * @packageDocumentation
 * Outer / low-communication optimisers: DiLoCo, NoLoCo, gossip, local SGD.
 */
export {}
