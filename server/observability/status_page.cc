#include "server/observability/status_page.h"

namespace linesign::observability {
namespace {

constexpr const char kPage[] = R"html(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>linesign status</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1.5em; background: #f7f7f5; color: #222; }
  h1 { font-size: 1.3em; margin: 0 0 .6em 0; }
  .tiles { display: flex; gap: 1em; flex-wrap: wrap; margin-bottom: 1em; }
  .tile { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .6em 1em; min-width: 9em; }
  .tile .v { font-size: 1.6em; font-weight: 600; }
  .ok { color: #1a7f37; } .bad { color: #c62828; }
  canvas { background: #fff; border: 1px solid #ddd; border-radius: 6px; width: 100%; max-width: 900px; height: 260px; }
  table { border-collapse: collapse; background: #fff; margin-top: 1em; min-width: 30em; }
  th, td { border: 1px solid #ddd; padding: .3em .8em; text-align: right; }
  th:first-child, td:first-child { text-align: left; }
  .small { color: #666; font-size: .85em; }
</style>
</head>
<body>
<h1>linesign — line status</h1>
<div class="tiles">
  <div class="tile"><div>health</div><div class="v" id="health">…</div><div class="small" id="reason"></div></div>
  <div class="tile"><div>certificates/s</div><div class="v" id="rate">…</div></div>
  <div class="tile"><div>issued</div><div class="v" id="issued">…</div></div>
  <div class="tile"><div>latency p50 / p95 / p99 (last minute)</div><div class="v" id="latency">…</div></div>
  <div class="tile"><div>queue depth</div><div class="v" id="queue">…</div></div>
  <div class="tile"><div>HSM signatures in progress</div><div class="v" id="hsm">…</div></div>
  <div class="tile"><div>outbox (renewal: renewals waiting)</div><div class="v" id="outbox">…</div></div>
  <div class="tile"><div>CRL age / next update in</div><div class="v" id="crl">…</div></div>
</div>
<canvas id="chart" width="900" height="260"></canvas>
<div class="small">certificates per second, last 5 minutes (one point a second)</div>
<table id="stations"><thead><tr><th>station</th><th>issued</th><th>refused</th></tr></thead><tbody></tbody></table>
<table id="reasons"><thead><tr><th>refusal reason</th><th>count</th></tr></thead><tbody></tbody></table>
<script>
"use strict";
const history = [];  // {t, issued, counts}
const state = { polls: 0, points: 0, lastRate: 0, maxRate: 0, error: "" };
window.linesignStatus = state;

function quantile(q, bounds, counts) {
  const total = counts.reduce((a, b) => a + b, 0);
  if (total === 0) return NaN;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    if (seen + counts[i] >= rank) {
      if (i >= bounds.length) return bounds[bounds.length - 1];
      const lo = i === 0 ? 0 : bounds[i - 1], hi = bounds[i];
      return lo + (hi - lo) * (counts[i] === 0 ? 0 : (rank - seen) / counts[i]);
    }
    seen += counts[i];
  }
  return bounds[bounds.length - 1];
}

function ms(s) { return isNaN(s) ? "–" : (s * 1000 < 10 ? (s * 1000).toFixed(2) : (s * 1000).toFixed(0)); }

function cell(row, text) { const td = document.createElement("td"); td.textContent = text; row.appendChild(td); }

function fill(id, rows) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  for (const r of rows) { const tr = document.createElement("tr"); r.forEach(v => cell(tr, v)); body.appendChild(tr); }
}

function draw() {
  const c = document.getElementById("chart"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const rates = [];
  for (let i = 1; i < history.length; i++) {
    const dt = history[i].t - history[i - 1].t;
    rates.push({ t: history[i].t, r: dt > 0 ? Math.max(0, history[i].issued - history[i - 1].issued) / dt : 0 });
  }
  state.points = rates.length;
  if (rates.length === 0) return;
  const max = Math.max(1, ...rates.map(p => p.r)) * 1.1, now = rates[rates.length - 1].t, span = 300;
  g.strokeStyle = "#ccc"; g.fillStyle = "#666"; g.font = "12px sans-serif";
  for (let k = 0; k <= 4; k++) {
    const y = c.height - 20 - (c.height - 30) * k / 4;
    g.beginPath(); g.moveTo(40, y); g.lineTo(c.width - 5, y); g.stroke();
    g.fillText(Math.round(max * k / 4), 2, y + 4);
  }
  g.strokeStyle = "#1565c0"; g.lineWidth = 2; g.beginPath();
  rates.forEach((p, i) => {
    const x = 40 + (c.width - 45) * (1 - (now - p.t) / span), y = c.height - 20 - (c.height - 30) * p.r / max;
    if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
  });
  g.stroke();
}

async function poll() {
  try {
    const r = await fetch("status.json", { cache: "no-store" });
    const s = await r.json();
    state.polls++;
    history.push({ t: s.time, issued: s.issued, counts: s.latency_counts });
    while (history.length > 0 && s.time - history[0].t > 300) history.shift();
    const h = document.getElementById("health");
    h.textContent = s.serving ? "SERVING" : "NOT SERVING";
    h.className = "v " + (s.serving ? "ok" : "bad");
    document.getElementById("reason").textContent = s.reason;
    document.getElementById("issued").textContent = s.issued;
    document.getElementById("queue").textContent = s.queue_depth;
    document.getElementById("hsm").textContent = s.hsm_in_progress;
    const outbox = Object.entries(s.outbox);
    document.getElementById("outbox").textContent =
        outbox.length === 0 ? "0" : outbox.map(([k, v]) => k + " " + v).join(", ");
    const age = s.values.crl_age_seconds, next = s.values.crl_next_update_seconds;
    const dur = x => x === null || x === undefined ? "–" : Math.abs(x) < 120 ? x.toFixed(0) + " s"
        : Math.abs(x) < 7200 ? (x / 60).toFixed(0) + " min" : (x / 3600).toFixed(1) + " h";
    const crl = document.getElementById("crl");
    crl.textContent = dur(age) + " / " + dur(next);
    crl.className = "v " + (next !== null && next !== undefined && next < 86400 ? "bad" : "");
    if (history.length >= 2) {
      const a = history[history.length - 2], b = history[history.length - 1];
      state.lastRate = b.t > a.t ? (b.issued - a.issued) / (b.t - a.t) : 0;
      state.maxRate = Math.max(state.maxRate, state.lastRate);
      document.getElementById("rate").textContent = state.lastRate.toFixed(0);
      const old = history.find(p => s.time - p.t <= 60) || history[0];
      const window = s.latency_counts.map((n, i) => n - old.counts[i]);
      document.getElementById("latency").textContent = [0.5, 0.95, 0.99]
          .map(q => ms(quantile(q, s.latency_bounds, window))).join(" / ") + " ms";
    }
    fill("stations", Object.entries(s.stations).sort().map(([name, v]) => [name, v.issued, v.refused]));
    fill("reasons", Object.entries(s.refusals_by_reason).sort().map(([k, v]) => [k, v]));
    draw();
    state.error = "";
  } catch (e) {
    state.error = String(e);
  }
}
poll();
setInterval(poll, 1000);
</script>
</body>
</html>
)html";

}  // namespace

void MountStatusPage(HttpServer* http, ServerMetrics* metrics, const HealthMonitor* health) {
  auto page = [](const HttpRequest&) {
    return HttpResponse{.content_type = "text/html; charset=utf-8", .body = kPage};
  };
  http->Handle("/", page);
  http->Handle("/status", page);
  http->Handle("/status.json", [metrics, health](const HttpRequest&) {
    return HttpResponse{.content_type = "application/json", .body = metrics->StatusJson(health)};
  });
}

}  // namespace linesign::observability
