import { describe, expect, it } from 'vitest'
import {
  ChecksumMismatchError, InvalidParametersError, PhalanxError, QueueFullError, RemoteError, TimeoutError,
  fromWire, isRetryable, toWire
} from '../src/index.js'

describe('errors', () => {
  it('sets name from the class so callers can check by name', () => {
    const err = new TimeoutError()
    expect(err.name).toBe('TimeoutError')
    expect(err.name).toBe(TimeoutError.name)
    expect(err.message).toBe('Operation timed out')
    expect(err).toBeInstanceOf(PhalanxError)
    expect(err).toBeInstanceOf(Error)
  })

  it('keeps cause and details', () => {
    const cause = new Error('disk')
    const err = new ChecksumMismatchError('chunk 3 bad', { cause, details: { chunk: 3 } })
    expect(err.cause).toBe(cause)
    expect(err.details).toEqual({ chunk: 3 })
  })

  it('round-trips through the wire form as the same class', () => {
    const wire = new InvalidParametersError('bad f', { details: { f: 9 } }).toWire()
    expect(wire).toEqual({ name: 'InvalidParametersError', message: 'bad f', retryable: false, details: { f: 9 } })
    const back = fromWire(JSON.parse(JSON.stringify(wire)))
    expect(back.name).toBe('InvalidParametersError')
    expect(back.message).toBe('bad f')
    expect(back.details).toEqual({ f: 9 })
  })

  it('turns unknown names into RemoteError that keeps the sender verdict', () => {
    const back = fromWire({ name: 'WeirdError', message: 'x', retryable: true })
    expect(back.name).toBe(RemoteError.name)
    expect(back.details.remoteName).toBe('WeirdError')
    expect(isRetryable(back)).toBe(true)
    expect(isRetryable(fromWire({ name: 'WeirdError', message: 'x', retryable: false }))).toBe(false)
  })

  it('never trusts the wire object', () => {
    for (const junk of [null, 42, 'str', [], { name: 5 }, { details: 'nope' }]) {
      const err = fromWire(junk)
      expect(err.name).toBe('RemoteError')
    }
  })

  it('has one retry policy', () => {
    expect(isRetryable(new TimeoutError())).toBe(true)
    expect(isRetryable(new QueueFullError())).toBe(true)
    expect(isRetryable(new InvalidParametersError())).toBe(false)
    expect(isRetryable(new ChecksumMismatchError())).toBe(false)
    expect(isRetryable('string')).toBe(false)
    expect(toWire('boom')).toEqual({ name: 'Error', message: 'boom', retryable: false })
  })
})
