import { measureOverhead } from './lib/elastic-overhead.js'
const m = await measureOverhead({ zmq: false, rounds: 1, steps: 30 })
console.log(m.step_overhead_ratio, m.plain_step_ms.value, m.phalanx_step_ms.value)
