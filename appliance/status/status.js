// The status page: polls /v2/status and draws everything itself (no libraries, no network but
// its own origin). Charts are plain <canvas> drawing, sized for the device pixel ratio.
"use strict";

const KEY_STORAGE = "appliance.status.key";
// Marks the one request sent before a key is known: the server leaves its 401 out of the error
// metrics (appliance/protocol/probe.py), so opening the page does not read as "100 % errors".
const PROBE_HEADER = "X-Status-Probe";
let timer = null;
let lastDoc = null;

const $ = (id) => document.getElementById(id);
const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
};

// ---- formatting -------------------------------------------------------------------------------
const num = (v, digits = 1) => (v === null || v === undefined || Number.isNaN(v)) ? "–"
  : Math.abs(v) >= 100 ? Math.round(v).toLocaleString() : v.toFixed(Math.abs(v) >= 10 ? Math.min(digits, 1) : digits);
const ms = (v) => v === null || v === undefined ? "–" : v === 0 ? "0" : v < 1 ? v.toFixed(2) : v < 10 ? v.toFixed(1) : Math.round(v).toString();
const pct = (v) => v === null || v === undefined ? "–" : (v * 100 >= 10 ? (v * 100).toFixed(0) : (v * 100).toFixed(1)) + "%";
const count = (v) => (v ?? 0).toLocaleString();
function bytes(v) {
  if (v === null || v === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(v >= 100 || i === 0 ? 0 : 1)} ${units[i]}`;
}
function duration(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
}
const last = (arr) => { for (let i = arr.length - 1; i >= 0; i--) if (arr[i] !== null) return arr[i]; return null; };

// ---- canvas charts -----------------------------------------------------------------------------
function surface(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  return { ctx, w, h };
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  const n = v / p;
  return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 2.5 ? 2.5 : n <= 5 ? 5 : 10) * p;
}

function legend(id, series) {
  const box = $(id);
  box.replaceChildren(...series.map((s) => {
    const swatch = el("i");
    swatch.style.background = s.color;
    return el("span", {}, swatch, s.name);
  }));
}

const axis = (v) => Number.isInteger(v) ? v.toLocaleString() : num(v, 2);

function lineChart(canvas, t, series, { format = axis, max = null } = {}) {
  const { ctx, w, h } = surface(canvas);
  const pad = { l: 54, r: 10, t: 8, b: 20 };
  const plotW = w - pad.l - pad.r, plotH = h - pad.t - pad.b;
  const muted = css("--muted"), line = css("--line");
  const values = series.flatMap((s) => s.values.filter((v) => v !== null));
  const yMax = max ?? niceMax(Math.max(0, ...values) * 1.1);
  const now = t.length ? t[t.length - 1] : Date.now() / 1000;
  const span = Math.max(60, t.length ? now - t[0] : 60);
  const x = (ts) => pad.l + plotW * (1 - (now - ts) / span);
  const y = (v) => pad.t + plotH * (1 - Math.min(v, yMax) / yMax);
  ctx.strokeStyle = line; ctx.fillStyle = muted; ctx.lineWidth = 1;
  ctx.textAlign = "right"; ctx.textBaseline = "middle";
  for (let i = 0; i <= 4; i++) {
    const v = yMax * i / 4, yy = Math.round(y(v)) + 0.5;
    ctx.beginPath(); ctx.moveTo(pad.l, yy); ctx.lineTo(w - pad.r, yy); ctx.stroke();
    ctx.fillText(format(v), pad.l - 6, yy);
  }
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  const minutes = Math.floor(span / 60);
  const step = Math.max(1, Math.ceil(minutes / 5));
  for (let m = 0; m <= minutes; m += step) ctx.fillText(m ? `-${m}m` : "now", x(now - m * 60), h - pad.b + 5);
  if (!values.length) {
    ctx.textBaseline = "middle";
    ctx.fillText("waiting for traffic…", pad.l + plotW / 2, pad.t + plotH / 2);
    return;
  }
  ctx.lineWidth = 2; ctx.lineJoin = "round";
  for (const s of series) {
    ctx.strokeStyle = s.color; ctx.fillStyle = s.color;
    ctx.beginPath();
    let drawing = false;
    s.values.forEach((v, i) => {
      if (v === null) { drawing = false; return; }
      if (drawing) ctx.lineTo(x(t[i]), y(v)); else { ctx.moveTo(x(t[i]), y(v)); drawing = true; }
    });
    ctx.stroke();
    const lastIndex = s.values.length - 1;
    if (lastIndex >= 0 && s.values[lastIndex] !== null) {
      ctx.beginPath(); ctx.arc(x(t[lastIndex]), y(s.values[lastIndex]), 2.5, 0, 2 * Math.PI); ctx.fill();
    }
  }
}

function barChart(canvas, labels, groups, { format = (v) => pct(v) } = {}) {
  const { ctx, w, h } = surface(canvas);
  const pad = { l: 38, r: 6, t: 6, b: 18 };
  const plotW = w - pad.l - pad.r, plotH = h - pad.t - pad.b;
  const yMax = niceMax(Math.max(0.0001, ...groups.flatMap((g) => g.values)));
  ctx.fillStyle = css("--muted"); ctx.strokeStyle = css("--line");
  ctx.textAlign = "right"; ctx.textBaseline = "middle";
  for (let i = 0; i <= 2; i++) {
    const v = yMax * i / 2, yy = Math.round(pad.t + plotH * (1 - i / 2)) + 0.5;
    ctx.beginPath(); ctx.moveTo(pad.l, yy); ctx.lineTo(w - pad.r, yy); ctx.stroke();
    ctx.fillText(format(v), pad.l - 5, yy);
  }
  const slot = plotW / labels.length, barW = Math.max(1, (slot * 0.8) / groups.length);
  const every = Math.ceil(labels.length / Math.max(1, Math.floor(plotW / 34)));
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  labels.forEach((label, i) => {
    groups.forEach((g, j) => {
      const v = g.values[i] || 0, bh = plotH * v / yMax;
      ctx.fillStyle = g.color;
      ctx.fillRect(pad.l + slot * i + slot * 0.1 + barW * j, pad.t + plotH - bh, barW - 1, bh);
    });
    if (i % every === 0) { ctx.fillStyle = css("--muted"); ctx.fillText(label, pad.l + slot * (i + 0.5), h - pad.b + 4); }
  });
}

// ---- rendering ---------------------------------------------------------------------------------
function renderHeader(doc) {
  const s = doc.server;
  $("health").textContent = s.health;
  $("health").className = `pill ${s.health}`;
  $("health-dot").className = `dot ${s.health}`;
  $("version").textContent = s.version;
  $("uptime").textContent = duration(s.uptime_s);
  $("grpc").textContent = s.grpc_port ? `${s.host}:${s.grpc_port}` : "off";
  $("updated").textContent = new Date(s.now * 1000).toLocaleTimeString();
}

function setTile(id, text, level = "") {
  $(id).textContent = text;
  $(id).className = `value ${level}`;
}

// Rate tiles: [tile id, series, totals key, share above which the tile is coloured, colour].
const RATE_TILES = [
  ["k-errors", "error_rate", "errors", 0.01, "bad"],
  ["k-rejected", "rejection_rate", "rejected", 0.01, "warn"],
  ["k-client", "client_error_rate", "client_errors", 0.05, "warn"],
  ["k-auth", "auth_failure_rate", "auth_failures", 0.05, "warn"],
];

function renderTiles(doc) {
  const s = doc.series, totals = doc.totals;
  const all = totals.ok + totals.errors + totals.rejected + (totals.client_errors ?? 0) + (totals.auth_failures ?? 0);
  setTile("k-rps", num(last(s.rps)));
  setTile("k-p99", ms(last(s.p99_ms)));
  for (const [id, series, total, threshold, level] of RATE_TILES) {
    const rate = last(s[series] ?? []);
    setTile(id, pct(rate ?? 0), rate > threshold ? level : "");
    $(`${id}-n`).textContent = `${count(totals[total])} total`;
  }
  const lookups = doc.cache.hits + doc.cache.misses;
  setTile("k-cache", lookups ? pct(doc.cache.hits / lookups) : "–");
  $("k-cache-n").textContent = `${count(doc.cache.entries)} entries · ${bytes(doc.cache.bytes)}`;
  setTile("k-queue", `${last(s.queue_depth) ?? 0} / ${last(s.in_flight) ?? 0}`);
  setTile("k-batch", num(last(s.batch_mean)));
  setTile("k-total", count(all));
}

function renderCharts(doc) {
  const s = doc.series;
  const c = [css("--c1"), css("--c2"), css("--c3"), css("--c4")];
  const rps = [{ name: "requests/s", values: s.rps, color: c[0] }];
  const lat = [{ name: "p50", values: s.p50_ms, color: c[0] }, { name: "p95", values: s.p95_ms, color: c[1] },
    { name: "p99", values: s.p99_ms, color: c[2] }];
  const rates = [{ name: "server errors", values: s.error_rate, color: css("--bad") },
    { name: "rejected", values: s.rejection_rate, color: c[1] },
    { name: "client errors", values: s.client_error_rate, color: c[2] },
    { name: "auth refusals", values: s.auth_failure_rate, color: c[0] },
    { name: "cache hits", values: s.cache_hit_rate, color: c[3] }];
  const queue = [{ name: "queue depth", values: s.queue_depth, color: c[1] }, { name: "in flight", values: s.in_flight, color: c[0] },
    { name: "batch size (mean)", values: s.batch_mean, color: c[3] }];
  legend("lg-rps", rps); legend("lg-lat", lat); legend("lg-rates", rates); legend("lg-queue", queue);
  lineChart($("c-rps"), s.t, rps);
  lineChart($("c-lat"), s.t, lat, { format: (v) => `${ms(v)} ms` });
  lineChart($("c-rates"), s.t, rates, { format: pct, max: 1 });
  lineChart($("c-queue"), s.t, queue);
}

function renderModels(doc) {
  const rows = [];
  for (const model of doc.models) {
    if (!model.versions.length) {
      rows.push(el("tr", {}, el("td", {}, model.name), el("td", {}, "–"),
        el("td", {}, el("span", { class: "state UNAVAILABLE" }, "UNAVAILABLE"), el("span", { class: "reason" }, model.error)),
        el("td"), el("td"), el("td", { class: "num" }, "0"), el("td", { class: "num wide" }, "0"), el("td", { class: "num" }, "0"),
        el("td", { class: "num wide" })));
      continue;
    }
    for (const v of model.versions) {
      const state = el("td", {}, el("span", { class: `state ${v.state}` }, v.state));
      if (v.reason) state.append(el("span", { class: "reason" }, v.reason));
      rows.push(el("tr", { "data-model": model.name, "data-version": String(v.version) },
        el("td", {}, el("b", {}, model.name)), el("td", {}, v.version), state,
        el("td", {}, [v.precision, v.format].filter(Boolean).join(" · ") || "–"),
        el("td", {}, [v.runtime, v.device].filter(Boolean).join(" · ") || "–"),
        el("td", { class: "num requests" }, count(v.requests)), el("td", { class: "num wide" }, count(v.failed)),
        el("td", { class: "num" }, num(v.rps)), el("td", { class: "num wide" }, v.load_seconds ? `${v.load_seconds.toFixed(2)} s` : "–")));
    }
  }
  const heads = [...$("models").tHead.rows[0].cells].map((c) => c.textContent);
  for (const row of rows) [...row.cells].forEach((cell, i) => { cell.dataset.label = heads[i] || ""; });
  $("models").tBodies[0].replaceChildren(...rows);
}

// Admission per model: the limit in force (adaptive, or the fixed max_concurrency) and the
// latency the limiter expects without queueing. Services before adaptive admission report neither.
function renderAdmission(doc) {
  const rows = Object.entries(doc.admission ?? {}).sort(([a], [b]) => a.localeCompare(b)).map(([model, a]) =>
    el("tr", { "data-model": model }, el("td", {}, el("b", {}, model)),
      el("td", { class: "num" }, count(a.in_flight)), el("td", { class: "num" }, count(a.waiting)),
      el("td", { class: "num wide" }, bytes(a.queued_bytes)),
      el("td", { class: "num limit" }, a.limit ?? "–"),
      el("td", { class: "num noload" }, a.noload_ms ? `${ms(a.noload_ms)} ms` : "–"),
      el("td", {}, a.adaptive ? "adaptive" : "fixed")));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "7", class: "muted" }, "No model admits requests yet.")));
  const heads = [...$("admission").tHead.rows[0].cells].map((c) => c.textContent);
  for (const row of rows) [...row.cells].forEach((cell, i) => { cell.dataset.label = heads[i] || ""; });
  $("admission").tBodies[0].replaceChildren(...rows);
}

// Rollouts per model: the split, the candidate's answers, errors and agreement, the last event.
function renderRollouts(doc) {
  const rows = (doc.rollouts ?? []).map((r) => {
    const last = r.history.length ? r.history[r.history.length - 1] : null;
    const state = el("span", { class: r.state === "rolled_back" ? "psi-bad" : r.state === "active" ? "psi-warn" : "psi-ok" },
      r.state.replace("_", " "));
    const s = r.stats;
    return el("tr", { "data-model": r.model }, el("td", {}, el("b", {}, r.model)), el("td", {}, `v${r.stable}`),
      el("td", {}, `v${r.candidate}`), el("td", {}, r.mode), el("td", { class: "num" }, pct(r.share)), el("td", {}, state),
      el("td", { class: "num" }, s ? count(s.candidate_answers) : "–"),
      el("td", { class: "num" }, s ? count(s.candidate_errors) : "–"),
      el("td", { class: "num" }, s && s.agreement !== null ? pct(s.agreement) : "–"),
      el("td", { class: "reason" }, last ? `${last.action} by ${last.by}${last.why ? ": " + last.why : ""}` : ""));
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "10", class: "muted" }, "No rollout.")));
  const heads = [...$("rollouts").tHead.rows[0].cells].map((c) => c.textContent);
  for (const row of rows) [...row.cells].forEach((cell, i) => { cell.dataset.label = heads[i] || ""; });
  $("rollouts").tBodies[0].replaceChildren(...rows);
}

function psiClass(v) { return v === null ? "" : v > 0.25 ? "psi-bad" : v > 0.1 ? "psi-warn" : "psi-ok"; }

function renderQuality(doc) {
  const box = $("quality");
  if (!doc.quality.length) { box.replaceChildren(el("p", { class: "muted" }, "No classifier traffic yet.")); return; }
  const cards = doc.quality.map((q) => {
    const conf = el("canvas", { "aria-label": `Confidence distribution of ${q.model} version ${q.version}`, role: "img" });
    const stats = el("div", { class: "qstats" },
      el("span", {}, "rows ", el("b", {}, count(q.rows))),
      el("span", {}, "mean confidence ", el("b", {}, q.confidence_mean === null ? "–" : pct(q.confidence_mean))),
      el("span", {}, "entropy ", el("b", {}, num(q.entropy_mean, 2))),
      el("span", {}, "drift PSI ", el("b", { class: psiClass(q.psi) },
        q.psi !== null ? q.psi.toFixed(3) : q.has_baseline ? `needs ${q.window_rows < 100 ? "100 rows" : "baseline"}` : "no baseline")),
      el("span", {}, "input mean/std ", el("b", {}, q.input_mean === null ? "–" : `${num(q.input_mean, 2)} / ${num(q.input_std, 2)}`)));
    const card = el("div", { class: "qcard", "data-testid": "quality-card" }, el("h3", {}, `${q.model} · v${q.version}`),
      el("div", { class: "hint" }, "top-1 confidence"), conf, stats);
    let mix = null;
    if (q.class_mix) {
      mix = el("canvas", { "aria-label": "Predicted class mix against the baseline", role: "img" });
      card.insertBefore(el("div", { class: "hint" }, q.baseline_mix ? "predicted classes: recent vs baseline" : "predicted classes (recent)"), stats);
      card.insertBefore(mix, stats);
    }
    return { card, conf, mix, q };
  });
  box.replaceChildren(...cards.map((c) => c.card));
  for (const { conf, mix, q } of cards) {
    const total = q.confidence_counts.reduce((a, b) => a + b, 0) || 1;
    const bounds = q.confidence_buckets;
    const labels = bounds.map((b, i) => `${i ? bounds[i - 1] : 0}–${b}`);
    barChart(conf, labels, [{ values: q.confidence_counts.slice(0, bounds.length).map((n) => n / total), color: css("--c1") }]);
    if (mix) {
      const groups = [{ values: q.class_mix, color: css("--c1") }];
      if (q.baseline_mix) groups.push({ values: q.baseline_mix, color: css("--muted") });
      const names = q.labels.length === q.class_mix.length ? q.labels : q.class_mix.map((_, i) => String(i));
      barChart(mix, names, groups);
    }
  }
}

function definitions(id, pairs) {
  $(id).replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function until(s) { return s === null || s === undefined ? "never at this rate" : duration(s); }

function renderAudit(doc) {
  const a = doc.audit;
  if (!a.enabled) { definitions("audit", [["State", "disabled"]]); return; }
  const state = el("span", { class: a.healthy ? "psi-ok" : "psi-bad" },
    a.healthy ? "healthy" : a.ready === false ? "cannot commit: not ready" : "cannot commit");
  const pairs = [["State", state]];
  if (a.reason) pairs.push(["Reason", a.reason]);
  pairs.push(["Records written", count(a.records_written)], ["Pending", count(a.records_pending)],
    ["Writer lag", `${(a.writer_lag_seconds ?? 0).toFixed(3)} s`], ["Commits", count(a.commits)]);
  if (a.records_dropped) pairs.push(["Dropped", el("span", { class: "psi-bad" }, count(a.records_dropped))]);
  if (a.last_checkpoint_seq !== undefined) pairs.push(["Last checkpoint", `#${a.last_checkpoint_seq}`]);
  if (a.last_error && a.last_error !== a.reason) pairs.push(["Last error", a.last_error]);
  const c = a.capacity;
  if (c) {
    pairs.push(["Database", `${bytes(c.database_bytes)} of ${bytes(c.max_bytes)} limit`],
      ["Growth", `${bytes(c.growth_bytes_per_s * 86400)}/day`],
      ["Free on its disk", bytes(c.filesystem_free_bytes)],
      ["Limit reached in", until(c.seconds_to_limit)], ["Disk full in", until(c.seconds_to_full)]);
    if (c.size_limited) {
      pairs.push(["Retention", el("span", { class: "psi-warn" }, "size limit reached before the age limit: records younger than retention_days purged")]);
    }
    if (c.last_purge) pairs.push(["Last purge", c.last_purge]);
  }
  definitions("audit", pairs);
}

function renderJobs(doc) {
  const jobs = doc.jobs || [];
  if (!jobs.length) return;
  const head = el("tr", {}, ...["Job", "Model", "State", "Rows", "Rejected", "Rows/s", "ETA"].map((h) => el("th", {}, h)));
  const rows = jobs.map((j) => el("tr", { "data-job": j.id },
    el("td", {}, j.id), el("td", {}, `${j.model}${j.version ? " v" + j.version : ""}`),
    el("td", {}, el("span", { class: `state ${j.state}` }, j.state), j.error ? el("span", { class: "reason" }, j.error) : ""),
    el("td", { class: "num" }, j.rows_total ? `${count(j.rows_done)} / ${count(j.rows_total)}` : count(j.rows_done)),
    el("td", { class: "num" }, count(j.rows_rejected)), el("td", { class: "num" }, num(j.rows_per_s)),
    el("td", { class: "num" }, j.eta_s === null || j.state !== "running" ? "–" : `${Math.round(j.eta_s)} s`)));
  $("jobs").replaceChildren(el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows)));
}

function renderProcess(doc) {
  const p = doc.process;
  const host = ["Host memory", `${bytes(p.system_memory_total - p.system_memory_available)} used of ${bytes(p.system_memory_total)}`];
  if (!doc.workers) {
    definitions("process", [["Resident memory", bytes(p.rss_bytes)], ["CPU", `${num(p.cpu_percent)}%`], host]);
    return;
  }
  // Several worker processes: the whole server (RSS counts shared pages once per process, PSS once).
  const m = doc.memory;
  definitions("process", [
    ["Server memory", `${bytes(m.pss_bytes)} proportional · ${bytes(m.rss_bytes)} resident · ${m.processes} processes`],
    ["CPU", `${num(p.cpu_percent)}% (all workers)`], host]);
  const head = el("tr", {}, ...["Worker", "PID", "Health", "Resident", "CPU", "Requests", "Up"].map((h) => el("th", {}, h)));
  const rows = doc.workers.map((w) => el("tr", { "data-worker": w.index },
    el("td", {}, w.index), el("td", {}, w.pid ?? "–"),
    el("td", {}, el("span", { class: `state ${w.health}` }, w.health)),
    el("td", { class: "num" }, w.rss_bytes ? bytes(w.rss_bytes) : "–"), el("td", { class: "num" }, `${num(w.cpu_percent)}%`),
    el("td", { class: "num requests" }, count(["ok", "errors", "rejected", "client_errors", "auth_failures"]
      .reduce((n, k) => n + ((w.totals || {})[k] || 0), 0))),
    el("td", { class: "num" }, w.uptime_s === undefined ? "–" : duration(w.uptime_s))));
  $("workers").replaceChildren(el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows)));
}

function renderHardware(doc) {
  const hw = doc.hardware;
  if (!hw || !hw.cpu) { definitions("hardware", [["CPU", "detecting…"]]); return; }
  const tags = (items) => items.length ? el("span", {}, ...items.map((i) => el("span", { class: "tag" }, i))) : "none";
  definitions("hardware", [
    ["CPU", hw.cpu.model],
    ["Cores", `${hw.cpu.physical_cores} physical · ${hw.cpu.logical_cores} logical · ${hw.cpu.usable_cores} usable`],
    ["Instruction sets", tags(hw.cpu.instruction_sets)],
    ["Memory", bytes(hw.memory_bytes)],
    ["GPUs", tags(hw.gpus.map((g) => `${g.name}: ${g.description}`))],
    ["OpenVINO devices", tags(hw.openvino_devices.map((d) => d.name === d.description ? d.name : `${d.name}: ${d.description}`))],
    ["ONNX Runtime", tags(hw.onnxruntime_providers)],
    ["Host", `${hw.hostname} · ${hw.os} · Python ${hw.python}`],
  ]);
}

function render(doc) {
  lastDoc = doc;
  renderHeader(doc); renderTiles(doc); renderCharts(doc); renderModels(doc); renderAdmission(doc); renderRollouts(doc);
  renderQuality(doc);
  renderAudit(doc); renderProcess(doc); renderHardware(doc); renderJobs(doc);
  document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
}

// ---- polling -----------------------------------------------------------------------------------
function notice(text) {
  $("notice").hidden = !text;
  $("notice").textContent = text || "";
}

async function poll() {
  clearTimeout(timer);
  let interval = lastDoc ? lastDoc.server.interval_s : 2;
  try {
    const key = sessionStorage.getItem(KEY_STORAGE);
    const headers = key ? { Authorization: `Bearer ${key}` } : { [PROBE_HEADER]: "1" };
    const response = await fetch("/v2/status", { headers, cache: "no-store" });
    if (response.status === 401 || response.status === 403) {
      $("login").hidden = false;
      notice(response.status === 403 ? "The key lacks the read scope." : "");
      return;
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    $("login").hidden = true;
    notice("");
    render(await response.json());
  } catch (error) {
    notice(`Server unreachable (${error.message}); retrying…`);
    $("health").textContent = "unreachable"; $("health").className = "pill down"; $("health-dot").className = "dot down";
    interval = 5;
  }
  timer = setTimeout(poll, Math.max(1, interval) * 1000);
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORAGE, $("apikey").value.trim());
  $("apikey").value = "";
  poll();
});
window.addEventListener("resize", () => { if (lastDoc) render(lastDoc); });
document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); });
poll();
