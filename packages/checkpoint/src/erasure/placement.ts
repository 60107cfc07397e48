import { InvalidParametersError, type Logger } from '@phalanx/core'
import type { ErasureCodec } from './codec.js'
import { createRsCodec, type NativeLoader, type RsImplementation } from './native-rs.js'
import { createXorCodec } from './xor.js'

/** How a group protects its members' snapshots. */
export interface ErasureScheme {
  /** `replication`: one remote copy (k = m = 1); `xor`: single parity; `rs`: Reed-Solomon; `none`: a lone host. */
  readonly kind: 'none' | 'replication' | 'xor' | 'rs'
  /** Data shards per stripe (members that are data holders of a stripe). */
  readonly k: number
  /** Parity shards per stripe: the number of member losses the group survives. */
  readonly m: number
}

/**
 * The default scheme for a group of `size` hosts: 1 none; 2 replication; 3–5 XOR (k = size − 1);
 * 6–9 RS(4,2); 10 or more RS(8,2).
 */
export function chooseScheme (size: number): ErasureScheme {
  if (!Number.isInteger(size) || size < 1) throw new InvalidParametersError(`Group size must be a positive integer, got ${size}`)
  if (size === 1) return { kind: 'none', k: 1, m: 0 }
  if (size === 2) return { kind: 'replication', k: 1, m: 1 }
  if (size <= 5) return { kind: 'xor', k: size - 1, m: 1 }
  if (size < 10) return { kind: 'rs', k: 4, m: 2 }
  return { kind: 'rs', k: 8, m: 2 }
}

/** A host to place: its id and, when known, its failure domain (rack, power feed, switch). */
export interface PlacementHost {
  readonly id: string
  /** Hosts sharing a domain can fail together; groups take at most one per domain when possible. @default its id */
  readonly domain?: string
}

/** One protection group of k + m hosts. */
export interface ErasureGroup {
  /** Index of the group. */
  readonly index: number
  /** Member host ids; a member's position is its index in stripes. */
  readonly members: readonly string[]
  readonly scheme: ErasureScheme
}

/** The sizes the default policy splits `n` hosts into (never leaves a lone host when n ≥ 2). */
export function groupSizes (n: number): number[] {
  if (n <= 0) return []
  if (n <= 5) return [n]
  const g = n >= 10 ? 10 : 6
  if (n - g === 1) return g === 10 ? [6, 5] : [5, 2]
  return [g, ...groupSizes(n - g)]
}

/**
 * Orders hosts so that consecutive runs span as many failure domains as possible: round-robin over
 * the domains (each in first-seen order), so a group of k + m consecutive hosts avoids sharing one.
 */
export function spreadByDomain (hosts: readonly PlacementHost[]): PlacementHost[] {
  const byDomain = new Map<string, PlacementHost[]>()
  for (const h of hosts) {
    const d = h.domain ?? h.id
    const list = byDomain.get(d)
    if (list === undefined) byDomain.set(d, [h])
    else list.push(h)
  }
  const queues = [...byDomain.values()]
  const out: PlacementHost[] = []
  for (let round = 0; out.length < hosts.length; round++) {
    for (const q of queues) { const h = q[round]; if (h !== undefined) out.push(h) }
  }
  return out
}

/**
 * Groups hosts into failure domains of k + m: with `scheme` every full group uses it and a remainder
 * gets the default scheme of its size; without, {@link groupSizes} and {@link chooseScheme} decide.
 * Host ids must be unique. Pure: the same input gives the same groups.
 */
export function planGroups (hosts: readonly PlacementHost[], options: { scheme?: Pick<ErasureScheme, 'k' | 'm'> } = {}): ErasureGroup[] {
  const ids = new Set<string>()
  for (const h of hosts) {
    if (ids.has(h.id)) throw new InvalidParametersError(`Host "${h.id}" is listed twice`)
    ids.add(h.id)
  }
  const ordered = spreadByDomain(hosts)
  let sizes: number[]
  let fixed: ErasureScheme | undefined
  if (options.scheme !== undefined) {
    const { k, m } = options.scheme
    if (!Number.isInteger(k) || !Number.isInteger(m) || k < 1 || m < 1) throw new InvalidParametersError(`Invalid scheme ${k}+${m}`)
    fixed = { kind: m === 1 ? (k === 1 ? 'replication' : 'xor') : 'rs', k, m }
    const g = k + m
    const full = Math.floor(ordered.length / g)
    sizes = [...new Array<number>(full).fill(g), ...groupSizes(ordered.length - full * g)]
  } else {
    sizes = groupSizes(ordered.length)
  }
  const groups: ErasureGroup[] = []
  let at = 0
  for (const size of sizes) {
    const members = ordered.slice(at, at + size).map((h) => h.id)
    at += size
    const scheme = fixed !== undefined && size === fixed.k + fixed.m ? fixed : chooseScheme(size)
    groups.push({ index: groups.length, members, scheme })
  }
  return groups
}

/**
 * Where piece `piece` of member `owner`'s snapshot lives. Each member encodes its own snapshot into
 * k data pieces (0..k−1, consecutive byte ranges of the snapshot) and m parity pieces (k..k+m−1);
 * pieces 0..n−2 go to the next n − 1 members, (owner + 1 + piece) mod n, and the last parity piece
 * is never stored: the owner keeps its whole snapshot, so while it lives nothing is needed, and once
 * it is lost its n − 1 scattered pieces still tolerate m − 1 further losses (m in all).
 * @throws `InvalidParametersError` for an owner or piece out of range, or the unstored last piece
 */
export function pieceHolder (scheme: Pick<ErasureScheme, 'k' | 'm'>, owner: number, piece: number): number {
  const n = scheme.k + scheme.m
  if (!Number.isInteger(owner) || owner < 0 || owner >= n) throw new InvalidParametersError(`Member ${owner} is outside 0..${n - 1}`)
  if (!Number.isInteger(piece) || piece < 0 || piece >= n - 1) throw new InvalidParametersError(`Piece ${piece} is outside 0..${n - 2} (the stored pieces)`)
  return (owner + 1 + piece) % n
}

/** The pieces member `member` holds for the others: one piece of each other member's snapshot. */
export function piecesHeldBy (scheme: Pick<ErasureScheme, 'k' | 'm'>, member: number): Array<{ owner: number, piece: number }> {
  const n = scheme.k + scheme.m
  if (!Number.isInteger(member) || member < 0 || member >= n) throw new InvalidParametersError(`Member ${member} is outside 0..${n - 1}`)
  const out: Array<{ owner: number, piece: number }> = []
  for (let d = 1; d < n; d++) out.push({ owner: (member - d + n) % n, piece: d - 1 })
  return out
}

/**
 * Per-host cost of a scheme for a snapshot of `bytes`: memory held (own snapshot plus one piece of
 * each other member's), the parity part of that, and bytes sent per snapshot (n − 1 pieces).
 */
export function schemeCost (scheme: Pick<ErasureScheme, 'k' | 'm'>, bytes: number): { memoryBytes: number, parityBytes: number, networkBytes: number } {
  const piece = Math.ceil(bytes / scheme.k)
  const held = (scheme.k + scheme.m - 1) * piece
  return { memoryBytes: bytes + held, parityBytes: (scheme.m - 1) * piece, networkBytes: held }
}

/** Collaborators of {@link createSchemeCodec}. */
export interface SchemeCodecComponents {
  /** Loads the native addon (tests inject a failing one). @default require('@ronomon/reed-solomon') */
  loader?: NativeLoader
  logger?: Logger
}

/**
 * The codec of a scheme: XOR for `replication` and `xor`; Reed-Solomon (native, else wasm) for `rs`.
 * @throws `InvalidParametersError` for `none`
 */
export function createSchemeCodec (scheme: ErasureScheme, components: SchemeCodecComponents & { prefer?: RsImplementation } = {}): ErasureCodec {
  switch (scheme.kind) {
    case 'replication':
    case 'xor':
      if (scheme.m !== 1) throw new InvalidParametersError(`${scheme.kind} needs m = 1, got ${scheme.m}`)
      return createXorCodec({ k: scheme.k })
    case 'rs':
      return createRsCodec({ k: scheme.k, m: scheme.m, ...(components.prefer === undefined ? {} : { prefer: components.prefer }) }, components)
    default:
      throw new InvalidParametersError('A group of one host has no erasure code: its snapshots are unprotected')
  }
}
