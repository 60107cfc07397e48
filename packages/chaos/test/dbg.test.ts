import { it } from 'vitest'
import { formatReport, loadScenario, runScenario } from '../src/index.js'
import { createInProcessDriver } from './in-process-driver.js'
it('dbg', async () => {
  const s = await loadScenario('/work/main/packages/chaos/scenarios/' + process.env.SC)
  const driver = createInProcessDriver()
  const orig = driver.stop
  const t0 = Date.now()
  driver.stop = async () => { console.log('stop begin', Date.now() - t0); await orig(); console.log('stop end', Date.now() - t0) }
  const r = await runScenario(s, { driver })
  console.log(formatReport(r), Date.now() - t0)
}, 30000)
