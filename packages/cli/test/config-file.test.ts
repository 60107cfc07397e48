import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { loadConfig, parseOverrides } from '../src/config-file.js'

describe('config files and overrides', () => {
  let dir: string | undefined
  afterEach(async () => { if (dir !== undefined) await rm(dir, { recursive: true, force: true }) })

  it('parses --set overrides as JSON where possible', () => {
    expect(parseOverrides(['job.steps=20', 'job.id=demo', 'job.deterministic=false', 'log.level=debug']))
      .toEqual({ job: { steps: 20, id: 'demo', deterministic: false }, log: { level: 'debug' } })
    expect(() => parseOverrides(['nokey'])).toThrow(expect.objectContaining({ name: 'InvalidConfigError' }))
  })

  it('layers file, flags and overrides over the preset', async () => {
    dir = await mkdtemp(join(tmpdir(), 'phalanx-cfg-'))
    const file = join(dir, 'job.yaml')
    await writeFile(file, 'preset: lan\njob:\n  id: mnist\n  steps: 5\n')
    const c = await loadConfig({ file, extra: { job: { minWorkers: 2 } }, sets: ['job.steps=9'] })
    expect(c.preset).toBe('lan')
    expect(c.job).toMatchObject({ id: 'mnist', steps: 9, minWorkers: 2 })
  })

  it('names the file and problem for bad files', async () => {
    dir = await mkdtemp(join(tmpdir(), 'phalanx-cfg-'))
    const file = join(dir, 'bad.json')
    await writeFile(file, '{ "job": ')
    await expect(loadConfig({ file })).rejects.toMatchObject({ name: 'InvalidConfigError', message: expect.stringContaining('bad.json is not valid JSON') })
    await expect(loadConfig({ file: join(dir, 'missing.yaml') })).rejects.toMatchObject({ name: 'InvalidConfigError', message: expect.stringContaining('Cannot read config file') })
    const yaml = join(dir, 'bad.yaml')
    await writeFile(yaml, 'timeouts:\n  heartbeatIntervalMs: 1000\n')
    await expect(loadConfig({ file: yaml })).rejects.toMatchObject({ name: 'InvalidConfigError', message: expect.stringContaining('suspectAfterMs') })
  })
})
