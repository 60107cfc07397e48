import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import type { CoordinatorEvents, CoordinatorStatus, RecoveryRecord } from './coordinator.js'

/** One committed step as the dashboard plots it. */
export interface DashboardStep {
  /** Wall time of the commit, ms since the epoch. */
  t: number
  step: number
  epoch: number
  loss?: number
}

/** One published quorum. */
export interface DashboardEpoch {
  t: number
  epoch: number
  members: number
  active: boolean
  reason: string
}

/** One suspicion (members removed). */
export interface DashboardSuspect {
  t: number
  epoch: number
  peers: string[]
  reason: string
}

/** What `GET /dashboard.json` returns. */
export interface DashboardData {
  job: string
  steps: number
  globalBatch: number
  now: number
  status: CoordinatorStatus
  history: DashboardStep[]
  epochs: DashboardEpoch[]
  suspects: DashboardSuspect[]
  recoveries: Array<RecoveryRecord & { t: number }>
}

/** The coordinator surface a feed needs. */
export interface DashboardSource {
  on<E extends keyof CoordinatorEvents>(event: E, listener: CoordinatorEvents[E]): () => void
  status(): CoordinatorStatus
}

/** A bounded in-memory history of a coordinator's events for the dashboard. */
export interface DashboardFeed {
  data(): DashboardData
  /** Unsubscribes. Idempotent. */
  close(): void
}

/** Tunables of {@link createDashboardFeed}. */
export interface DashboardFeedInit {
  jobId: string
  steps: number
  globalBatch: number
  /**
   * Most entries kept per series (oldest dropped first).
   * @default 5000
   */
  capacity?: number
}

/** Subscribes to `source` and keeps the last `capacity` commits, quorums, suspicions and recoveries. */
export function createDashboardFeed (source: DashboardSource, init: DashboardFeedInit): DashboardFeed {
  const capacity = init.capacity ?? 5000
  // Wall time on purpose (not the coordinator's Clock, which may be a fake one starting at 0): the charts' x axis is a date.
  const now = (): number => Date.now()
  const history: DashboardStep[] = []
  const epochs: DashboardEpoch[] = []
  const suspects: DashboardSuspect[] = []
  const recoveries: Array<RecoveryRecord & { t: number }> = []
  const push = <T>(list: T[], item: T): void => {
    list.push(item)
    if (list.length > capacity) list.splice(0, list.length - capacity)
  }
  const offs = [
    source.on('commit', (e) => { push(history, { t: now(), step: e.step, epoch: e.epoch, ...(e.loss === undefined ? {} : { loss: e.loss }) }) }),
    source.on('quorum', (e) => { push(epochs, { t: now(), epoch: e.epoch, members: e.active ? e.members.length : 0, active: e.active, reason: e.reason }) }),
    source.on('suspect', (e) => { push(suspects, { t: now(), epoch: e.epoch, peers: [...e.peers], reason: e.reason }) }),
    source.on('recovery', (r) => { push(recoveries, { ...r, peers: [...r.peers], t: now() }) })
  ]
  return {
    data: () => ({
      job: init.jobId, steps: init.steps, globalBatch: init.globalBatch, now: now(), status: source.status(),
      history: [...history], epochs: [...epochs], suspects: [...suspects], recoveries: [...recoveries]
    }),
    close () { for (const off of offs.splice(0)) off() }
  }
}

/** uPlot's script and stylesheet, read from the installed package (served at `/assets/…`). */
export function dashboardAssets (): { js: string, css: string } {
  const require = createRequire(import.meta.url)
  return {
    js: readFileSync(require.resolve('uplot/dist/uPlot.iife.min.js'), 'utf8'),
    css: readFileSync(require.resolve('uplot/dist/uPlot.min.css'), 'utf8')
  }
}

/** The dashboard page: polls `dashboard.json` and draws it with uPlot. Read-only. */
export function dashboardHtml (): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Phalanx dashboard</title>
<link rel="stylesheet" href="assets/uplot.min.css">
<style>
body{font:14px system-ui,sans-serif;margin:16px;background:#fafafa;color:#222}
h1{font-size:20px;margin:0 0 4px}
#summary{margin-bottom:12px;color:#444}
.grid{display:grid;grid-template-columns:repeat(2,minmax(420px,1fr));gap:12px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px}
.card h2{font-size:14px;margin:0 0 6px}
table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #eee;padding:3px 6px;text-align:left;font-variant-numeric:tabular-nums}
.ok{color:#17803d}.bad{color:#c62828}.warn{color:#b26a00}
</style></head>
<body>
<h1>Phalanx <span id="job"></span></h1>
<div id="summary">loading…</div>
<div class="grid">
<div class="card"><h2>Loss per step</h2><div id="loss"></div></div>
<div class="card"><h2>Throughput (steps/s, samples/s)</h2><div id="tput"></div></div>
<div class="card"><h2>Membership and epoch over time</h2><div id="members"></div></div>
<div class="card"><h2>Workers</h2><table id="workers"><thead><tr><th>id</th><th>rank</th><th>phase</th><th>committed</th><th>micro-batches</th><th>health</th></tr></thead><tbody></tbody></table></div>
<div class="card" style="grid-column:1/3"><h2>Recoveries (phase timings, ms)</h2><table id="recoveries"><thead><tr><th>time</th><th>reason</th><th>peers</th><th>epoch</th><th>step</th><th>detect</th><th>quorum</th><th>reconfigure</th><th>heal</th><th>first commit</th><th>total</th></tr></thead><tbody></tbody></table></div>
</div>
<script src="assets/uplot.iife.min.js"></script>
<script>
const q = new URLSearchParams(location.search); const token = q.get('token');
const url = 'dashboard.json' + (token ? '?token=' + encodeURIComponent(token) : '');
const W = () => Math.max(380, Math.floor((document.body.clientWidth - 60) / 2));
const charts = {};
function chart(id, series, data, scales) {
  if (!charts[id]) charts[id] = new uPlot({ width: W(), height: 220, series, scales: scales || { x: { time: true } }, axes: [{}, {}, ...(series.some((x) => x.scale === 'y2') ? [{ side: 1, scale: 'y2', grid: { show: false } }] : [])] }, data, document.getElementById(id));
  else charts[id].setData(data);
}
const fmt = (v) => v === undefined || v === null ? '–' : Math.round(v);
function render(d) {
  document.getElementById('job').textContent = d.job;
  const s = d.status;
  document.getElementById('summary').innerHTML = 'phase <b id="phase">' + s.phase + '</b> · epoch <b id="epoch">' + s.epoch + '</b> · committed <b id="committed">' + s.committed + '</b> / ' + d.steps + ' · members ' + s.members.length + ' · waiting ' + s.waiting.length + ' · recoveries <b id="nrec">' + d.recoveries.length + '</b>' + (s.loss === undefined ? '' : ' · loss ' + s.loss.toPrecision(4));
  const h = d.history.filter((x) => x.loss !== undefined);
  chart('loss', [{}, { label: 'loss', stroke: '#1565c0' }], [h.map((x) => x.t / 1000), h.map((x) => x.loss)]);
  const t = [], sps = [], samples = [];
  for (let i = 1; i < d.history.length; i++) { const dt = (d.history[i].t - d.history[i - 1].t) / 1000; if (dt <= 0) continue; t.push(d.history[i].t / 1000); sps.push(1 / dt); samples.push(d.globalBatch / dt); }
  chart('tput', [{}, { label: 'steps/s', stroke: '#2e7d32' }, { label: 'samples/s', stroke: '#8e24aa', scale: 'y2' }], [t, sps, samples]);
  const e = d.epochs.concat([{ t: d.now, epoch: s.epoch, members: s.members.length }]);
  chart('members', [{}, { label: 'members', stroke: '#ef6c00', paths: uPlot.paths.stepped({ align: 1 }) }, { label: 'epoch', stroke: '#546e7a', paths: uPlot.paths.stepped({ align: 1 }) }], [e.map((x) => x.t / 1000), e.map((x) => x.members), e.map((x) => x.epoch)]);
  const wb = document.querySelector('#workers tbody'); wb.innerHTML = '';
  for (const m of s.members) { const behind = s.committed - m.committed; const cls = behind <= 1 ? 'ok' : 'warn'; wb.insertAdjacentHTML('beforeend', '<tr data-worker="' + m.id + '"><td>' + m.id + '</td><td>' + m.rank + '</td><td>' + m.phase + '</td><td>' + m.committed + '</td><td>' + m.microBatches + '</td><td class="' + cls + '">' + (behind <= 1 ? 'healthy' : 'behind ' + behind) + '</td></tr>'); }
  for (const w of s.waiting) wb.insertAdjacentHTML('beforeend', '<tr data-worker="' + w + '"><td>' + w + '</td><td>–</td><td>waiting</td><td></td><td></td><td class="warn">spare</td></tr>');
  for (const x of d.suspects.slice(-5)) for (const p of x.peers) if (!s.members.some((m) => m.id === p) && !s.waiting.includes(p)) wb.insertAdjacentHTML('beforeend', '<tr data-worker="' + p + '"><td>' + p + '</td><td>–</td><td>gone</td><td></td><td></td><td class="bad">' + x.reason + ' (epoch ' + x.epoch + ')</td></tr>');
  const rb = document.querySelector('#recoveries tbody'); rb.innerHTML = '';
  for (const r of d.recoveries.slice(-12).reverse()) rb.insertAdjacentHTML('beforeend', '<tr class="recovery"><td>' + new Date(r.t).toLocaleTimeString() + '</td><td>' + r.reason + '</td><td>' + r.peers.join(', ') + '</td><td>' + r.epoch + '</td><td>' + r.step + '</td><td>' + fmt(r.detectMs) + '</td><td>' + fmt(r.quorumMs) + '</td><td>' + fmt(r.reconfigureMs) + '</td><td>' + fmt(r.healMs) + '</td><td>' + fmt(r.firstCommitMs) + '</td><td>' + fmt(r.totalMs) + '</td></tr>');
  document.body.dataset.updated = String(d.now);
}
async function poll() {
  try { const r = await fetch(url, { cache: 'no-store' }); if (r.ok) render(await r.json()); else document.getElementById('summary').textContent = 'HTTP ' + r.status; }
  catch (err) { document.getElementById('summary').textContent = 'coordinator unreachable'; }
  setTimeout(poll, 500);
}
poll();
</script></body></html>
`
}
