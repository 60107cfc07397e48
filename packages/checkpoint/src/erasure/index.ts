/**
 * @packageDocumentation
 * L1 erasure-coded in-memory snapshots (`@phalanx/checkpoint/erasure`): codecs, placement, shard
 * exchange with a two-phase commit of snapshot versions, and recovery of lost hosts' state.
 *
 * - **Codecs** behind one {@link ErasureCodec} interface: {@link createXorCodec} (m = 1, also
 *   replication with k = 1), {@link createWasmRsCodec} (Reed-Solomon in WebAssembly) and
 *   {@link createNativeRsCodec} (Reed-Solomon, N-API addon `@ronomon/reed-solomon`, an optional
 *   dependency); {@link createRsCodec} picks native and falls back to wasm with a log line.
 * - **Stripes** ({@link encodeStripe}, {@link decodeStripe}) record the codec id, k, m, lengths and a
 *   CRC-32C per shard; a corrupt shard is treated as missing, another codec's stripe is refused.
 * - **Placement** ({@link planGroups}, {@link pieceHolder}): groups of k + m hosts; each host
 *   encodes its own snapshot into k data + m parity pieces ({@link encodeOwnPieces}) and stores
 *   n − 1 of them on the other members, one each.
 * - **Exchange and recovery** ({@link createErasureMember}, {@link createErasureL1Source}): members
 *   send their pieces, vote, and commit a version once all members prepared it (the last two
 *   committed versions are kept); a replacement rebuilds a lost member's snapshot from k of its
 *   pieces (1× its size; data pieces are copied, only lost ones are decoded), or fails with
 *   `InsufficientShardsError` so `restoreBest` falls back to L2.
 *
 * @example
 * ```ts
 * import { createRsCodec, encodeStripe, decodeStripe } from '@phalanx/checkpoint/erasure'
 *
 * const codec = createRsCodec({ k: 4, m: 2 })
 * const { header, shards } = await encodeStripe(codec, bytes)
 * const kept = shards.map((bytes, index) => ({ index, bytes })).slice(2) // two shards lost
 * const { pieces } = await decodeStripe(codec, header, kept)
 * ```
 */
export * from './codec.js'
export * from './xor.js'
export * from './wasm-rs.js'
export * from './native-rs.js'
export * from './stripe.js'
export * from './layout.js'
export * from './placement.js'
export * from './snapshot-format.js'
export * from './exchange.js'
export * from './recovery.js'
