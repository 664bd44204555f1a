// The status page of a stordaemon FAT replica: polls status.json and draws it. Plain browser
// JavaScript, served as is (no build step); it shows no user's file names or keys (the JSON has none).
'use strict'

const POLL_MS = 2000
const $ = (id) => document.getElementById(id)

function el (tag, attrs = {}, ...children) {
  const e = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v
    else if (k === 'text') e.textContent = v
    else e.setAttribute(k, v)
  }
  for (const c of children) e.append(c)
  return e
}

function size (bytes) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']
  let n = bytes
  let u = 0
  while (Math.abs(n) >= 1024 && u < units.length - 1) { n /= 1024; u++ }
  return `${n.toFixed(n >= 100 || u === 0 ? 0 : 1)} ${units[u]}`
}

const shortId = (peer) => `…${peer.slice(-10)}`
const pct = (x) => `${(x * 100).toFixed(x >= 0.995 || x === 0 ? 0 : 1)}%`
const clock = (t) => new Date(t).toLocaleTimeString([], { hour12: false })

function bar (used, allocated, total, big) {
  const b = el('div', { class: big ? 'bar big' : 'bar', role: 'img', 'aria-label': `${size(used)} used, ${size(allocated)} allocated of ${size(total)}` })
  const u = el('span', { class: 'used' })
  const a = el('span', { class: 'allocated' })
  u.style.width = `${total > 0 ? Math.min(100, used / total * 100) : 0}%`
  a.style.width = `${total > 0 ? Math.min(100, allocated / total * 100) : 0}%`
  b.append(u, a)
  return b
}

function renderReplicas (s) {
  $('replication').textContent = s.leader != null
    ? `term ${s.term} · committed ${s.commit} · applied ${s.applied} here`
    : 'no replica orders writes right now: an election is under way, or a majority is unreachable'
  const list = $('replicas')
  list.replaceChildren(...s.replicas.map(r => el('li', { 'data-replica': r.peer, 'data-leader': String(r.leader) },
    el('span', { class: 'id', title: r.peer, text: shortId(r.peer) }), ' ',
    ...(r.leader ? [el('span', { class: 'badge leader', text: 'leader' }), ' '] : []),
    ...(r.self ? [el('span', { class: 'muted', text: '(this replica)' })] : []))))
}

function renderCapacity (s) {
  const c = s.capacity
  const old = $('capacity-bar')
  const b = bar(c.used, c.allocated, c.total, true)
  b.id = 'capacity-bar'
  old.replaceWith(b)
  $('capacity').textContent = `${size(c.used)} used · ${size(c.allocated)} allocated · ${size(c.free)} free of ${size(c.total)} on the vendors heard now · ${s.files} file${s.files === 1 ? '' : 's'}`
}

function renderChunks (s) {
  const tile = (label, value, cls = '') => el('div', { class: cls }, el('dt', { text: label }), el('dd', { text: String(value) }))
  const q = s.transfers
  $('chunks').replaceChildren(
    tile('healthy', s.chunks.healthy),
    tile('under-replicated', s.chunks.underReplicated, s.chunks.underReplicated > 0 ? 'warn' : ''),
    tile('lost', s.chunks.lost, s.chunks.lost > 0 ? 'bad' : ''),
    tile('repairs queued', q.repair.count, q.repair.count > 0 ? 'warn' : ''),
    tile('migrations', q.migrate.count + q.drain.count),
    tile('repaired', size(s.repairedBytes)))
}

function renderVendors (s) {
  const hasZone = s.vendors.some(v => v.zone != null)
  for (const c of document.querySelectorAll('#vendors .zone')) c.hidden = !hasZone
  $('no-vendors').hidden = s.vendors.length > 0
  const order = { silent: 0, draining: 1, full: 2, alive: 3 }
  const rows = [...s.vendors].sort((a, b) => order[a.state] - order[b.state] || (a.peer < b.peer ? -1 : 1)).map(v => {
    const capCell = el('td', { class: 'capacity' }, bar(v.used, v.allocated, v.capacity, false),
      el('div', { class: 'bar-label', text: `${size(v.used)} of ${size(v.capacity)}${v.failedDevices > 0 ? ` · ${v.failedDevices} device(s) failed` : ''}` }))
    const zone = el('td', { class: 'zone', text: v.zone ?? '' })
    zone.hidden = !hasZone
    return el('tr', { 'data-vendor': v.peer, 'data-state': v.state },
      el('td', {}, el('span', { class: 'id', title: v.peer, text: shortId(v.peer) })),
      el('td', {}, el('span', { class: `badge ${v.state}`, text: v.state })),
      zone,
      capCell,
      el('td', { text: pct(v.availability) }),
      el('td', { text: `${v.load}${v.transfers > 0 ? ` · ${v.transfers} moving` : ''}` }),
      el('td', { text: `${v.chunks}${v.damaged > 0 ? ` (${v.damaged} damaged)` : ''}` }))
  })
  $('vendors').tBodies[0].replaceChildren(...rows)
}

function renderTraffic (s) {
  const canvas = $('traffic')
  const ratio = window.devicePixelRatio || 1
  const w = canvas.clientWidth
  const h = canvas.clientHeight
  canvas.width = Math.round(w * ratio)
  canvas.height = Math.round(h * ratio)
  const g = canvas.getContext('2d')
  g.scale(ratio, ratio)
  g.clearRect(0, 0, w, h)
  const css = getComputedStyle(document.documentElement)
  const color = (name) => css.getPropertyValue(name).trim()
  const samples = s.samples
  const span = 150 * s.sampleMs
  const now = s.time
  const x = (t) => w - (now - t) / span * w
  const maxBytes = Math.max(1, ...samples.map(p => Math.max(p.written, p.copied)))
  const maxReq = Math.max(1, ...samples.map(p => p.requests))
  g.strokeStyle = color('--line')
  g.lineWidth = 1
  g.beginPath(); g.moveTo(0, h - 0.5); g.lineTo(w, h - 0.5); g.stroke()
  const line = (key, max, c) => {
    g.strokeStyle = c
    g.lineWidth = 2
    g.beginPath()
    samples.forEach((p, i) => {
      const y = h - 4 - p[key] / max * (h - 24)
      if (i === 0) g.moveTo(x(p.t), y)
      else g.lineTo(x(p.t), y)
    })
    g.stroke()
  }
  line('written', maxBytes, color('--info'))
  line('copied', maxBytes, color('--copy'))
  line('requests', maxReq, color('--ok'))
  g.fillStyle = color('--muted')
  g.font = '12px system-ui, sans-serif'
  g.fillText(`peak ${size(maxBytes)}/s · ${maxReq.toFixed(1)} requests/s`, 4, 14)
  g.fillText(`last ${Math.round(span / 60000)} min`, w - 70, 14)
  const last = samples[samples.length - 1]
  $('traffic-now').textContent = last != null ? ` · now ${size(last.written)}/s written, ${size(last.copied)}/s copied, ${last.requests.toFixed(1)} requests/s` : ' · no samples yet'
}

function renderEvents (s) {
  $('no-events').hidden = s.events.length > 0
  $('events').replaceChildren(...s.events.slice(0, 30).map(e => el('li', { class: e.kind },
    el('time', { datetime: new Date(e.t).toISOString(), text: clock(e.t) }), e.text)))
}

let shown = null

function render (s) {
  shown = s
  const alive = s.vendors.filter(v => v.state !== 'silent').length
  $('summary').textContent = `${s.replicas.length} FAT replica${s.replicas.length === 1 ? '' : 's'}, ${alive} of ${s.vendors.length} vendors heard · updated ${clock(s.time)}`
  renderReplicas(s)
  renderCapacity(s)
  renderChunks(s)
  renderVendors(s)
  renderTraffic(s)
  renderEvents(s)
  document.body.dataset.updated = String(s.time)
}

let failingSince = null
async function poll () {
  try {
    const res = await fetch('status.json', { cache: 'no-store' })
    if (!res.ok) throw new Error(`${res.status} ${res.statusText}`)
    render(await res.json())
    failingSince = null
    $('stale').hidden = true
  } catch (err) {
    failingSince ??= Date.now()
    $('stale').hidden = false
    $('stale').textContent = `This replica has not answered since ${clock(failingSince)} (${err.message}); showing what it said last.`
  } finally {
    setTimeout(poll, POLL_MS)
  }
}

// the chart is drawn for the canvas's size: draw it again when that changes (a phone turned)
window.addEventListener('resize', () => { if (shown != null) renderTraffic(shown) })

poll()
