/**
 * The `phalanx checkpoint ls | verify | inspect | restore` commands as functions returning printable
 * text and plain objects; the CLI package wires them to argv.
 *
 * @module
 */
import { open, rename } from 'node:fs/promises'
import { dirname, basename, join } from 'node:path'
import { shapeSize, type AbortOptions } from '@phalanx/core'
import { buildShardFile, layoutOf, layoutSize } from './format.js'
import { piecesOfRange } from './reshard.js'
import { createCheckpointStore, checkpointId, type CheckpointInfo, type VerifyReport } from './store.js'

/** One row of {@link listCheckpoints}. */
export interface CheckpointRow {
  readonly id: string
  readonly latest: boolean
  /** `ok`, or why the manifest cannot be read. Data files are not read: use verify for that. */
  readonly status: string
  readonly info?: CheckpointInfo
}

const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`
const errorText = (err: unknown): string => `${(err as Error).name}: ${(err as Error).message}`

async function resolveId (dir: string, id: string | undefined): Promise<string> {
  if (id === undefined || id === 'latest') {
    const store = createCheckpointStore({ dir })
    return (await store.latestId()) ?? (await store.list())[0]?.id ?? checkpointId(0)
  }
  return /^\d+$/.test(id) ? checkpointId(Number(id)) : id
}

/** `phalanx checkpoint ls <dir>`: every checkpoint directory, newest first, with its manifest status. */
export async function listCheckpoints (dir: string, options: AbortOptions = {}): Promise<{ rows: CheckpointRow[], text: string }> {
  const store = createCheckpointStore({ dir })
  const latest = await store.latestId()
  const ids = (await store.storage.list('.')).filter((n) => /^step-\d{12}$/.test(n)).sort().reverse()
  const infos = new Map((await store.list(options)).map((i) => [i.id, i]))
  const rows: CheckpointRow[] = []
  for (const id of ids) {
    const info = infos.get(id)
    if (info !== undefined) {
      rows.push({ id, latest: id === latest, status: 'ok', info })
      continue
    }
    try {
      await store.manifest(id, options)
      rows.push({ id, latest: id === latest, status: 'unreadable manifest' })
    } catch (err) {
      rows.push({ id, latest: id === latest, status: errorText(err) })
    }
  }
  const lines = ['ID                 STEP      EPOCH  WORLD  SIZE        CREATED                   STATUS']
  for (const r of rows) {
    const i = r.info
    lines.push([
      `${r.id}${r.latest ? '*' : ' '}`.padEnd(19),
      String(i?.step ?? '-').padEnd(10), String(i?.epoch ?? '-').padEnd(7), String(i?.worldSize ?? '-').padEnd(7),
      (i === undefined ? '-' : mib(i.bytes)).padEnd(12), (i === undefined ? '-' : new Date(i.createdAt).toISOString()).padEnd(26), r.status
    ].join(''))
  }
  if (rows.length === 0) lines.push(`(no checkpoints in ${dir})`)
  return { rows, text: lines.join('\n') }
}

/** `phalanx checkpoint verify <dir> [id]`: reads every chunk; on failure names the file and chunk. */
export async function verifyCheckpoint (dir: string, id?: string, options: AbortOptions = {}): Promise<{ ok: boolean, id: string, report?: VerifyReport, error?: { name: string, message: string, details?: Record<string, unknown> }, text: string }> {
  const target = await resolveId(dir, id)
  const store = createCheckpointStore({ dir })
  try {
    const report = await store.verify(target, options)
    return { ok: true, id: target, report, text: `${target}: OK (${report.files} files, ${report.chunks} chunks, ${mib(report.bytes)} verified)` }
  } catch (err) {
    const e = err as Error & { details?: Record<string, unknown> }
    const error = { name: e.name, message: e.message, ...(e.details !== undefined ? { details: e.details } : {}) }
    const where = e.details?.chunk !== undefined ? ` [file ${String(e.details.file)}, chunk ${String(e.details.chunk)}, offset ${String(e.details.offset)}]` : ''
    return { ok: false, id: target, error, text: `${target}: FAILED ${e.name}: ${e.message}${where}` }
  }
}

/** `phalanx checkpoint inspect <dir> [id]`: the manifest summary and the tensor table. */
export async function inspectCheckpoint (dir: string, id?: string, options: AbortOptions = {}): Promise<{ id: string, manifest: Awaited<ReturnType<ReturnType<typeof createCheckpointStore>['manifest']>>, text: string }> {
  const target = await resolveId(dir, id)
  const m = await createCheckpointStore({ dir }).manifest(target, options)
  const lines = [
    `id:         ${m.id}`,
    `step:       ${m.step}  epoch: ${m.epoch}  world size: ${m.worldSize}`,
    `created:    ${new Date(m.createdAt).toISOString()}`,
    `meta:       ${JSON.stringify(m.meta)}`,
    `files:      ${m.files.map((f) => `${f.file} (${mib(f.bytes)}, ${f.crcs.length} chunks of ${m.chunkBytes} B)`).join(', ')}`,
    `tensors:    ${m.layout.length} (${layoutSize(m.layout)} values)`,
    '',
    'NAME                                SHAPE              GLOBAL OFFSET  PIECES'
  ]
  for (const l of m.layout) {
    const pieces = m.tensors.filter((t) => t.name === l.name).map((t) => `${t.file}@${t.offset}+${t.length}`)
    lines.push(`${l.name.padEnd(36)}${`[${l.shape.join(', ')}]`.padEnd(19)}${String(l.globalOffset).padEnd(15)}${pieces.join(' ')}`)
  }
  return { id: target, manifest: m, text: lines.join('\n') }
}

/**
 * `phalanx checkpoint restore <dir> [id] [--out file]`: restores (verified) the checkpoint, or the
 * newest that verifies, and with `outFile` writes it as one single-rank shard file (atomically).
 */
export async function restoreCheckpoint (dir: string, id?: string, outFile?: string, options: AbortOptions = {}): Promise<{ info: CheckpointInfo, skipped: string[], outFile?: string, text: string }> {
  const store = createCheckpointStore({ dir })
  const r = await store.restore(id === undefined || id === 'latest' ? options : { ...options, id: await resolveId(dir, id) })
  const lines = r.skipped.map((s) => `skipped ${s.id}: ${s.error.name}: ${s.error.message}`)
  lines.push(`restored ${r.info.id} (step ${r.info.step}, ${r.state.tensors.length} tensors, ${r.state.tensors.reduce((a, t) => a + shapeSize(t.shape), 0)} values)`)
  if (outFile !== undefined) {
    const layout = layoutOf(r.state.tensors)
    const { bytes } = buildShardFile({ rank: 0, worldSize: 1, meta: r.state.meta, layout, pieces: piecesOfRange(layout, { offset: 0, length: layoutSize(layout) }, { tensors: r.state.tensors }) })
    const tmp = join(dirname(outFile), `.${basename(outFile)}.tmp`)
    const fh = await open(tmp, 'w')
    try {
      await fh.writeFile(bytes)
      await fh.sync()
    } finally {
      await fh.close()
    }
    await rename(tmp, outFile)
    lines.push(`wrote ${outFile} (${mib(bytes.byteLength)})`)
  }
  return { info: r.info, skipped: r.skipped.map((s) => s.id), ...(outFile !== undefined ? { outFile } : {}), text: lines.join('\n') }
}
