/**
 * A snapshot holder as its own process (as `phalanx launch` runs it), for benchmarks: listens on
 * `ipc://<dir>/holder.sock`, keeps slots in `<dir>`, tells the parent its address over IPC, and
 * runs until the parent disconnects or sends SIGTERM.
 *
 * Usage: `node --import tsx bench/lib/holder-process.ts <job> <dir>`
 */
import { join } from 'node:path'
import { runHolder } from '@phalanx/checkpoint'
import { zmqTransport } from '@phalanx/transport/zmq'

const [job, dir] = process.argv.slice(2) as [string, string]
const holder = await runHolder({ job, listen: `ipc://${join(dir, 'holder.sock')}`, transport: zmqTransport(), dir })
const stop = (): void => { void holder.close().then(() => { if (process.connected) process.disconnect() }) }
process.on('SIGTERM', stop)
process.on('disconnect', stop)
process.send?.({ address: holder.endpoint.address })
