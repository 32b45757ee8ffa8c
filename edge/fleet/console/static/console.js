// The nightear console: the state from /api/state, live lines from /api/stream (server-sent
// events), and the operator's marks posted with the session's CSRF token. No framework, no CDN.
"use strict";

const CSRF = document.querySelector('meta[name="csrf"]').content;
const $ = (id) => document.getElementById(id);
let state = { alerts: [], units: [], plan: null, link: null };
let selected = null;
let soundOn = false;
let audio = null;

function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function clock(iso) { return iso ? new Date(iso).toLocaleTimeString([], { hour12: false }) : ""; }
function age(seconds) {
  const s = Math.abs(seconds);
  return s < 90 ? `${s.toFixed(0)} s` : s < 5400 ? `${(s / 60).toFixed(0)} min` : `${(s / 3600).toFixed(1)} h`;
}
function bytes(n) { return n == null ? "?" : n > 1e9 ? `${(n / 1e9).toFixed(1)} GB` : `${(n / 1e6).toFixed(0)} MB`; }

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: { "X-CSRF-Token": CSRF, "Content-Type": "application/json" }, body: JSON.stringify(body || {}),
  });
  if (response.status === 401) { location.href = "/login"; }
  if (!response.ok) { throw new Error(`${response.status} ${await response.text()}`); }
  return response.json();
}

async function refresh() {
  const response = await fetch("/api/state", { credentials: "same-origin" });
  if (response.status === 401) { location.href = "/login"; return; }
  state = await response.json();
  renderLink(); renderAlerts(); renderUnits(); renderPlan();
  if (selected) { renderEvidence(); }
}

function renderLink() {
  const link = $("link");
  link.className = "link " + (state.link === true ? "up" : state.link === false ? "down" : "unknown");
  link.textContent = state.link === true ? "broker: connected" :
    state.link === false ? "BROKER LOST: units' state unknown" : "broker: connecting";
}

function alertRow(a) {
  const bearing = a.bearing_deg == null ? "" : `${a.bearing_deg.toFixed(0)}°±${(a.bearing_spread_deg || 0).toFixed(0)}`;
  const verdict = a.verdict ? (a.verdict.verdict === "drone" ? "drone" : "not a drone") : "";
  return `<td>${esc(clock(a.start))}</td><td>${esc(a.node)}</td><td class="state">${a.state === "open" ? "DRONE" : "ended"}</td>` +
    `<td>${a.peak_confidence.toFixed(2)}</td><td>${bearing}</td>` +
    `<td class="late">${a.late ? esc(age(a.late_s)) + " late" : ""}</td>` +
    `<td>${a.ack ? esc(a.ack.by) : ""}</td><td>${esc(verdict)}${a.clip ? " ♪" : ""}</td>`;
}

function renderAlerts() {
  const body = $("alerts").tBodies[0];
  const shownAt = {};
  for (const row of body.rows) { shownAt[row.dataset.id] = row.dataset.shownAt; }
  body.innerHTML = "";
  for (const a of state.alerts) { body.appendChild(makeRow(a, shownAt[a.id])); }
}

function makeRow(a, shownAt) {
  const row = document.createElement("tr");
  row.dataset.id = a.id;
  row.dataset.shownAt = shownAt || String(Date.now());
  row.className = `${a.state}${a.ack ? "" : " unacked"}${a.id === selected ? " selected" : ""}`;
  row.innerHTML = alertRow(a);
  row.addEventListener("click", () => select(a.id));
  return row;
}

function liveAlert(line) {
  // shown at once from the stream (no round trip), then the state is fetched again
  const a = { ...line, ack: null, verdict: null, clip: false };
  const known = state.alerts.findIndex((x) => x.id === a.id);
  if (known >= 0) { Object.assign(a, { ack: state.alerts[known].ack, verdict: state.alerts[known].verdict, clip: state.alerts[known].clip }); state.alerts.splice(known, 1); }
  state.alerts.unshift(a);
  const body = $("alerts").tBodies[0];
  const old = body.querySelector(`tr[data-id="${CSS.escape(a.id)}"]`);
  if (old) { old.remove(); }
  body.insertBefore(makeRow(a), body.firstChild);
  if (a.state === "open") {
    $("newest").textContent = `DRONE at ${a.node} ${clock(a.start)}`;
    cue();
  }
}

function cue() {
  if (!soundOn) { return; }
  audio = audio || new AudioContext();
  const now = audio.currentTime;
  for (const [at, hz] of [[0, 880], [0.25, 660], [0.5, 880]]) {
    const tone = audio.createOscillator();
    const gain = audio.createGain();
    tone.frequency.value = hz;
    gain.gain.setValueAtTime(0.2, now + at);
    gain.gain.exponentialRampToValueAtTime(0.001, now + at + 0.2);
    tone.connect(gain).connect(audio.destination);
    tone.start(now + at); tone.stop(now + at + 0.22);
  }
}

function select(id) {
  selected = id;
  for (const row of $("alerts").tBodies[0].rows) { row.classList.toggle("selected", row.dataset.id === id); }
  renderEvidence(true);
}

function renderEvidence(fresh) {
  const a = state.alerts.find((x) => x.id === selected);
  if (!a) { return; }
  $("ev-none").hidden = true; $("evidence").hidden = false;
  $("ev-summary").textContent = `${a.node}, ${clock(a.start)} to ${clock(a.end)}, confidence ${a.peak_confidence.toFixed(2)}` +
    (a.bearing_deg == null ? "" : `, bearing ${a.bearing_deg.toFixed(0)}°`) + ` [${a.id.slice(0, 8)}]`;
  const clipUrl = `/api/clips/${encodeURIComponent(a.id)}.flac`;
  const clip = $("clip");
  if (a.clip && (fresh || clip.dataset.src !== clipUrl)) {
    clip.src = clipUrl; clip.dataset.src = clipUrl;
    $("spectrogram").src = `/api/clips/${encodeURIComponent(a.id)}.jpg`;
  } else if (!a.clip) { clip.removeAttribute("src"); delete clip.dataset.src; clip.load(); }
  clip.hidden = !a.clip; $("spectrogram").hidden = !a.clip; $("ev-noclip").hidden = a.clip;
  const marks = [];
  if (a.ack) { marks.push(`acknowledged by ${a.ack.by} at ${clock(a.ack.at)}`); }
  if (a.verdict) { marks.push(`judged "${a.verdict.verdict === "drone" ? "drone" : "not a drone"}" by ${a.verdict.by} at ${clock(a.verdict.at)}`); }
  $("ev-marks").textContent = marks.join("; ");
}

function renderUnits() {
  const body = $("units").tBodies[0];
  body.innerHTML = "";
  for (const u of state.units) {
    const row = document.createElement("tr");
    row.dataset.node = u.node;
    const clockText = u.clock_off ? `OFF ${u.clock_offset_s > 0 ? "+" : ""}${u.clock_offset_s} s` : "ok";
    row.innerHTML = `<td>${esc(u.node)}</td><td class="state-${u.state}">${u.state}</td>` +
      `<td>${u.heartbeat_age_s == null ? "none live" : esc(age(u.heartbeat_age_s)) + " ago"}</td>` +
      `<td class="backlog">${u.pending_events ?? "?"}</td><td>${u.input_overflows ?? "?"} / ${u.dropped_frames ?? "?"}</td>` +
      `<td>${bytes(u.disk_free_bytes)}</td><td>${u.clips_quota_bytes ? `${bytes(u.clips_bytes)} of ${bytes(u.clips_quota_bytes)}` : "none"}</td>` +
      `<td>${u.soc_temp_c == null ? "?" : u.soc_temp_c + " °C"}</td><td>${u.low_freq_dbfs == null ? "?" : u.low_freq_dbfs + " dBFS"}</td>` +
      `<td>${esc(clockText)}</td><td>${esc(u.model || "?")}</td>`;
    body.appendChild(row);
  }
}

function niceStep(span) {
  const raw = span / 6, power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
}

function renderPlan() {
  const svg = $("plan"), plan = state.plan;
  if (!plan || !plan.origin) { svg.innerHTML = '<text x="20" y="30">No unit has told its position yet.</text>'; return; }
  const points = [...plan.units, ...plan.fixes, ...plan.fixes.flatMap((f) => f.track)];
  const xs = points.map((p) => p.east), ys = points.map((p) => p.north);
  let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const span = Math.max(x1 - x0, y1 - y0, 400) * 1.3;
  const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
  [x0, x1, y0, y1] = [cx - span / 2, cx + span / 2, cy - span / 2, cy + span / 2];
  const size = 600, pad = 40, scale = (size - 2 * pad) / span;
  const X = (e) => pad + (e - x0) * scale, Y = (n) => size - pad - (n - y0) * scale;
  const parts = [];
  const step = niceStep(span);
  for (let v = Math.ceil(x0 / step) * step; v <= x1; v += step) {
    parts.push(`<line class="axis" x1="${X(v)}" y1="${pad}" x2="${X(v)}" y2="${size - pad}"/><text x="${X(v) - 12}" y="${size - pad + 14}">${v.toFixed(0)}</text>`);
  }
  for (let v = Math.ceil(y0 / step) * step; v <= y1; v += step) {
    parts.push(`<line class="axis" x1="${pad}" y1="${Y(v)}" x2="${size - pad}" y2="${Y(v)}"/><text x="2" y="${Y(v) + 4}">${v.toFixed(0)}</text>`);
  }
  parts.push(`<text x="${size - pad - 60}" y="${size - 6}">east, m</text><text x="4" y="${pad - 8}">north, m</text>`);
  parts.push(`<defs><clipPath id="plot"><rect x="${pad}" y="${pad}" width="${size - 2 * pad}" height="${size - 2 * pad}"/></clipPath></defs><g clip-path="url(#plot)">`);
  const rad = (deg) => (deg * Math.PI) / 180;
  for (const r of plan.rays) {
    for (const b of [r.bearing_deg, r.mirror_deg].filter((v) => v != null)) {
      const e = r.east + r.length_m * Math.sin(rad(b)), n = r.north + r.length_m * Math.cos(rad(b));
      parts.push(`<line class="ray ${r.state}" data-event="${esc(r.id)}" x1="${X(r.east)}" y1="${Y(r.north)}" x2="${X(e)}" y2="${Y(n)}"/>`);
    }
  }
  for (const f of plan.fixes) {
    if (f.track.length > 1) {
      parts.push(`<polyline class="track" points="${f.track.map((p) => `${X(p.east)},${Y(p.north)}`).join(" ")}"/>`);
    }
    parts.push(`<ellipse class="ellipse" cx="${X(f.east)}" cy="${Y(f.north)}" rx="${Math.max(2, f.major_m * scale)}" ry="${Math.max(2, f.minor_m * scale)}" transform="rotate(${f.major_bearing_deg - 90} ${X(f.east)} ${Y(f.north)})"/>`);
    parts.push(`<circle class="fix" data-t="${esc(f.t)}" cx="${X(f.east)}" cy="${Y(f.north)}" r="4"><title>fix ${esc(clock(f.t))}: ${f.lat_deg.toFixed(5)}, ${f.lon_deg.toFixed(5)}, ±${f.major_m.toFixed(0)} m (95%) by ${esc(f.units.join(", "))}</title></circle>`);
  }
  parts.push("</g>");
  for (const u of plan.units) {
    const heading = u.heading_deg == null ? "" :
      `<line class="ray" x1="${X(u.east)}" y1="${Y(u.north)}" x2="${X(u.east) + 14 * Math.sin(rad(u.heading_deg))}" y2="${Y(u.north) - 14 * Math.cos(rad(u.heading_deg))}" stroke="#58a6ff"/>`;
    parts.push(`${heading}<circle class="unit" data-node="${esc(u.node)}" cx="${X(u.east)}" cy="${Y(u.north)}" r="6"/><text class="unit-label" x="${X(u.east) + 9}" y="${Y(u.north) - 8}">${esc(u.node)}</text>`);
  }
  svg.innerHTML = parts.join("");
}

let refreshing = null;
function refreshSoon() { clearTimeout(refreshing); refreshing = setTimeout(refresh, 200); }

function connect() {
  const stream = new EventSource("/api/stream");
  stream.addEventListener("alert", (e) => { liveAlert(JSON.parse(e.data)); refreshSoon(); });
  for (const kind of ["fix", "clip", "unit", "clock", "link", "ack", "verdict"]) {
    stream.addEventListener(kind, refreshSoon);
  }
  stream.onerror = () => { $("link").className = "link down"; $("link").textContent = "console: reconnecting"; };
  stream.onopen = refreshSoon;
}

$("sound").addEventListener("click", () => {
  soundOn = !soundOn;
  $("sound").textContent = soundOn ? "Sound on" : "Sound off";
  if (soundOn) { audio = audio || new AudioContext(); audio.resume(); cue(); }
});
$("ack").addEventListener("click", async () => { await post(`/api/events/${encodeURIComponent(selected)}/ack`); await refresh(); });
for (const button of document.querySelectorAll("button.verdict")) {
  button.addEventListener("click", async () => {
    await post(`/api/events/${encodeURIComponent(selected)}/verdict`, { verdict: button.dataset.verdict });
    await refresh();
  });
}
$("export").addEventListener("click", async () => {
  const done = await post("/api/export");
  const counts = Object.entries(done.written).map(([label, n]) => `${n} ${label}`).join(", ") || "nothing";
  $("export-result").textContent = `Exported ${counts} to ${done.folder}` + (done.skipped.length ? `; skipped ${done.skipped.length}` : "");
});
setInterval(refresh, 5000);
refresh().then(connect);
