import { open, mkdir, readdir, rename, rm, stat } from 'node:fs/promises'
import { join, dirname } from 'node:path'
import { randomBytes } from 'node:crypto'
import { throwIfAborted, type AbortOptions } from '@phalanx/core'

/**
 * The file operations a checkpoint store needs, relative to a root directory. Implementations decide
 * what durability means on their medium; the store relies on exactly these promises:
 * - {@link writeFile} returns only when the bytes are durable (written and fsynced);
 * - {@link rename} is atomic and durable (the parent directory is synced after it);
 * - {@link writeAtomic} is all-or-nothing: readers see the old content or the new, never a mix.
 */
export interface CheckpointStorage {
  /** Absolute root directory. */
  readonly root: string
  /** True when several hosts share the root (ranks write their own files, rank 0 commits). */
  readonly shared: boolean
  /** Creates a directory (and parents); idempotent. */
  mkdir(path: string): Promise<void>
  /** Names in a directory; empty when it does not exist. */
  list(path: string): Promise<string[]>
  /** Writes `parts` in order to a new file, then fsyncs it. Replaces an existing file (not atomically). */
  writeFile(path: string, parts: readonly Uint8Array[], options?: AbortOptions): Promise<void>
  /** Writes to a temporary sibling, fsyncs, renames over `path` and syncs the directory. */
  writeAtomic(path: string, data: Uint8Array, options?: AbortOptions): Promise<void>
  /** Atomic rename followed by a sync of the destination's directory. */
  rename(from: string, to: string): Promise<void>
  /** Reads up to `length` bytes at `position`; fewer at the end of the file. */
  read(path: string, position: number, length: number, options?: AbortOptions): Promise<Uint8Array>
  /** Size in bytes, or undefined when the file does not exist. */
  size(path: string): Promise<number | undefined>
  /** Removes a file or a directory tree; idempotent. */
  remove(path: string): Promise<void>
  /**
   * The options another thread can open exactly this storage with ({@link createLocalStorage}), so
   * the snapshotter's writer thread can write to it. Undefined for anything else, including a
   * decorator that inherits from or copies a local storage (disk-fault injection, a read counter):
   * its behaviour lives in this thread and must not be bypassed.
   */
  describe?(): LocalStorageInit | undefined
}

/** Options of {@link createLocalStorage}. */
export interface LocalStorageInit {
  /** Root directory (created on first write). */
  dir: string
  /**
   * Several hosts write into this directory (NFS, Lustre, a FUSE bucket): directory fsync errors that
   * such file systems raise (`EINVAL`, `EISDIR`, `EPERM`, `ENOTSUP`) are tolerated, because their
   * rename is made durable by the server.
   * @default false
   */
  shared?: boolean
  /**
   * Bytes per `write` call; bounds the time one libuv request holds a thread.
   * @default 8 MiB
   */
  writeSliceBytes?: number
}

const DIR_SYNC_TOLERATED = new Set(['EINVAL', 'EISDIR', 'EPERM', 'ENOTSUP', 'EBADF'])

/**
 * A {@link CheckpointStorage} over a local directory (the default), or over a directory shared by
 * several hosts with `shared: true`.
 */
export function createLocalStorage (init: LocalStorageInit): CheckpointStorage {
  const root = init.dir
  const shared = init.shared ?? false
  const slice = init.writeSliceBytes ?? 8 * 1024 * 1024
  const abs = (p: string): string => join(root, p)

  const syncDir = async (path: string): Promise<void> => {
    let fh
    try {
      fh = await open(path, 'r')
      await fh.sync()
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? ''
      if (!shared || !DIR_SYNC_TOLERATED.has(code)) throw err
    } finally {
      await fh?.close()
    }
  }

  const writeFile = async (path: string, parts: readonly Uint8Array[], options: AbortOptions = {}): Promise<void> => {
    throwIfAborted(options.signal)
    const fh = await open(abs(path), 'w')
    try {
      let position = 0
      for (const part of parts) {
        for (let off = 0; off < part.byteLength; off += slice) {
          throwIfAborted(options.signal)
          const piece = part.subarray(off, Math.min(off + slice, part.byteLength))
          let done = 0
          while (done < piece.byteLength) {
            const { bytesWritten } = await fh.write(piece, done, piece.byteLength - done, position + done)
            done += bytesWritten
          }
          position += piece.byteLength
        }
      }
      await fh.sync()
    } finally {
      await fh.close()
    }
  }

  const storage: CheckpointStorage = {
    root,
    shared,
    async mkdir (path) { await mkdir(abs(path), { recursive: true }) },
    async list (path) {
      try {
        return await readdir(abs(path))
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
        throw err
      }
    },
    writeFile,
    async writeAtomic (path, data, options = {}) {
      const tmp = `${path}.tmp-${randomBytes(4).toString('hex')}`
      try {
        await writeFile(tmp, [data], options)
        await rename(abs(tmp), abs(path))
      } catch (err) {
        await rm(abs(tmp), { force: true })
        throw err
      }
      await syncDir(dirname(abs(path)))
    },
    async rename (from, to) {
      await rename(abs(from), abs(to))
      await syncDir(dirname(abs(to)))
      if (dirname(abs(from)) !== dirname(abs(to))) await syncDir(dirname(abs(from)))
    },
    async read (path, position, length, options = {}) {
      const fh = await open(abs(path), 'r')
      try {
        const out = new Uint8Array(length)
        let done = 0
        while (done < length) {
          throwIfAborted(options.signal)
          const { bytesRead } = await fh.read(out, done, length - done, position + done)
          if (bytesRead === 0) break
          done += bytesRead
        }
        return done === length ? out : out.subarray(0, done)
      } finally {
        await fh.close()
      }
    },
    async size (path) {
      try {
        return (await stat(abs(path))).size
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
        throw err
      }
    },
    async remove (path) { await rm(abs(path), { recursive: true, force: true }) },
    // Compared with `this`: a decorator made by `Object.create(storage)` or `{ ...storage }` inherits
    // or copies this method, and calling it on the decorator must not claim the plain directory.
    describe (this: unknown) { return this === storage ? { dir: root, shared, writeSliceBytes: slice } : undefined }
  }
  return storage
}
