/**
 * CURVE key helpers: Z85 codec and key files. Kept apart from the socket code so tests and the CLI
 * can read and write keys; generating a key pair needs the zeromq addon and lives in `./zmq`.
 *
 * @module
 */
import { chmod, readFile, stat, writeFile } from 'node:fs/promises'
import { InvalidConfigError, InvalidParametersError, NotFoundError, throwIfAborted, type AbortOptions } from '@phalanx/core'

/** A CURVE key pair in Z85 text form (40 characters each). */
export interface CurveKeyPair {
  publicKey: string
  secretKey: string
}

const Z85 = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#'

/** Encodes bytes (length a multiple of 4) as Z85 (ZeroMQ RFC 32). */
export function z85Encode (bytes: Uint8Array): string {
  if (bytes.length % 4 !== 0) throw new InvalidParametersError('Z85 input length must be a multiple of 4')
  let out = ''
  for (let i = 0; i < bytes.length; i += 4) {
    let value = (((bytes[i] as number) << 24) | ((bytes[i + 1] as number) << 16) | ((bytes[i + 2] as number) << 8) | (bytes[i + 3] as number)) >>> 0
    const chunk: string[] = []
    for (let k = 0; k < 5; k++) {
      chunk.push(Z85[value % 85] as string)
      value = Math.floor(value / 85)
    }
    out += chunk.reverse().join('')
  }
  return out
}

/** Decodes Z85 text (length a multiple of 5); throws `InvalidParametersError` on a bad character. */
export function z85Decode (text: string): Uint8Array {
  if (text.length % 5 !== 0) throw new InvalidParametersError('Z85 text length must be a multiple of 5')
  const out = new Uint8Array((text.length / 5) * 4)
  for (let i = 0, o = 0; i < text.length; i += 5, o += 4) {
    let value = 0
    for (let k = 0; k < 5; k++) {
      const digit = Z85.indexOf(text[i + k] as string)
      if (digit < 0) throw new InvalidParametersError('Z85 text contains an invalid character')
      value = value * 85 + digit
    }
    if (value > 0xffffffff) throw new InvalidParametersError('Z85 group out of range')
    out[o] = value >>> 24
    out[o + 1] = (value >>> 16) & 0xff
    out[o + 2] = (value >>> 8) & 0xff
    out[o + 3] = value & 0xff
  }
  return out
}

/** True when `key` is a 40-character Z85 CURVE key. */
export function isCurveKey (key: unknown): key is string {
  if (typeof key !== 'string' || key.length !== 40) return false
  try {
    z85Decode(key)
    return true
  } catch {
    return false
  }
}

/** Throws `InvalidParametersError` naming `what` unless `key` is a Z85 CURVE key. */
export function assertCurveKey (key: unknown, what: string): asserts key is string {
  if (!isCurveKey(key)) throw new InvalidParametersError(`${what} must be a 40-character Z85 CURVE key`)
}

/**
 * Writes a key file (JSON `{ publicKey, secretKey? }`) readable by its owner only (mode 0600).
 * Pass only `publicKey` to write a shareable public key file.
 */
export async function writeKeyFile (path: string, keys: CurveKeyPair | Pick<CurveKeyPair, 'publicKey'>, options: AbortOptions = {}): Promise<void> {
  throwIfAborted(options.signal)
  assertCurveKey(keys.publicKey, 'publicKey')
  const secretKey = (keys as Partial<CurveKeyPair>).secretKey
  if (secretKey !== undefined) assertCurveKey(secretKey, 'secretKey')
  const body = JSON.stringify(secretKey === undefined ? { publicKey: keys.publicKey } : { publicKey: keys.publicKey, secretKey }, null, 2) + '\n'
  await writeFile(path, body, { mode: 0o600, signal: options.signal })
  // `mode` applies only when the file is created: tighten an existing file too.
  await chmod(path, 0o600)
}

/**
 * Reads a key file written by {@link writeKeyFile}. A file holding a secret key must not be
 * readable or writable by group or others: such a file is refused with `InvalidConfigError`.
 */
export async function readKeyFile (path: string, options: AbortOptions = {}): Promise<CurveKeyPair | Pick<CurveKeyPair, 'publicKey'>> {
  throwIfAborted(options.signal)
  let text: string
  let mode: number
  try {
    mode = (await stat(path)).mode
    text = await readFile(path, { encoding: 'utf8', signal: options.signal })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`Key file ${path} does not exist`, { cause: err, details: { path } })
    throw err
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (cause) {
    throw new InvalidConfigError(`Key file ${path} is not valid JSON`, { cause, details: { path } })
  }
  const { publicKey, secretKey } = (typeof parsed === 'object' && parsed !== null ? parsed : {}) as Partial<CurveKeyPair>
  if (!isCurveKey(publicKey)) throw new InvalidConfigError(`Key file ${path} has no valid publicKey`, { details: { path } })
  if (secretKey === undefined) return { publicKey }
  if ((mode & 0o077) !== 0) {
    throw new InvalidConfigError(
      `Key file ${path} holds a secret key but is accessible by group or others (mode ${(mode & 0o777).toString(8)}); run: chmod 600 ${path}`,
      { details: { path, mode: (mode & 0o777).toString(8) } })
  }
  if (!isCurveKey(secretKey)) throw new InvalidConfigError(`Key file ${path} has an invalid secretKey`, { details: { path } })
  return { publicKey, secretKey }
}
