import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { transportComplianceSuite } from '@phalanx/testing/transport'
import { zmqTransport } from '@phalanx/transport/zmq'
import { afterAll } from 'vitest'

const ipcDir = mkdtempSync(join(tmpdir(), 'phx-zmq-'))
let ipcCount = 0
afterAll(() => { rmSync(ipcDir, { recursive: true, force: true }) })

transportComplianceSuite('zmq over tcp', {
  create: ({ clock }) => zmqTransport({}, { clock }),
  listen: () => 'tcp://127.0.0.1:0'
})

transportComplianceSuite('zmq over ipc', {
  create: ({ clock }) => zmqTransport({}, { clock }),
  listen: (id) => `ipc://${ipcDir}/${id}-${ipcCount++}.sock`
})
