import { crc32c, bytesOf } from '@phalanx/core'
const n = 1_190_000
const g = new Float32Array(n).map((_, i) => Math.sin(i))
const t = (label: string, fn: () => unknown, k = 20) => { fn(); const t0 = performance.now(); for (let i = 0; i < k; i++) fn(); console.log(label, ((performance.now() - t0) / k).toFixed(2), 'ms') }
t('crc32c 4.8MB', () => crc32c(bytesOf(g)))
t('slice', () => g.slice(0, n))
t('f64 sum + div', () => { const acc = new Float64Array(n); for (let j = 0; j < n; j++) acc[j] = acc[j]! + g[j]!; const out = new Float32Array(n); for (let j = 0; j < n; j++) out[j] = acc[j]! / 1; return out })
