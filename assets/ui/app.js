// feature-store console: plain JavaScript over the JSON API, no build step, nothing fetched
// from outside the server. Every value from the API is put in the page as text, never as HTML.
"use strict";

const KEY = "feature-store-api-key";
const main = document.getElementById("main");

// ---- DOM helpers ----

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children.flat()) if (c !== undefined && c !== null) el.append(c instanceof Node ? c : String(c));
  return el;
}

function show(...nodes) {
  main.replaceChildren(...nodes);
}

function fmt(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") {
    if (Number.isInteger(v)) return v.toLocaleString("en-US");
    const a = Math.abs(v);
    return a !== 0 && (a < 0.001 || a >= 1e9) ? v.toExponential(3) : Number(v.toPrecision(6)).toString();
  }
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function when(ts) {
  return ts ? ts.replace("T", " ").replace(/\.\d+Z$/, "Z") : "—";
}

function psiBadge(psi) {
  if (psi === null || psi === undefined) return h("span", { class: "badge" }, "—");
  const level = psi < 0.1 ? "ok" : psi < 0.25 ? "warn" : "bad";
  return h("span", { class: "badge " + level, "data-psi": psi }, "PSI " + psi.toFixed(3));
}

function freshBadge(version) {
  if (!version || !version.computed_at) return h("span", { class: "badge" }, "not computed");
  return version.stale
    ? h("span", { class: "badge warn" }, "stale")
    : h("span", { class: "badge ok" }, "fresh");
}

// ---- API ----

class Unauthorized extends Error {}

async function api(path) {
  const headers = { Accept: "application/json" };
  const key = sessionStorage.getItem(KEY);
  if (key) headers["X-API-Key"] = key;
  const resp = await fetch(path, { headers });
  if (resp.status === 401) throw new Unauthorized("an API key is needed");
  const body = await resp.json().catch(() => null);
  if (!resp.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : resp.status + " " + resp.statusText;
    const err = new Error(detail);
    err.status = resp.status;
    throw err;
  }
  return body;
}

/// `path`, or null when it answers 404.
async function maybe(path) {
  try {
    return await api(path);
  } catch (e) {
    if (e.status === 404) return null;
    throw e;
  }
}

function askForKey(message) {
  const input = h("input", { type: "password", id: "api-key", placeholder: "API key", autocomplete: "off" });
  const form = h(
    "form",
    {
      id: "key-form",
      onsubmit: (ev) => {
        ev.preventDefault();
        sessionStorage.setItem(KEY, input.value.trim());
        route();
      },
    },
    h("p", {}, message),
    h("div", { class: "row" }, input, h("button", { type: "submit" }, "Use key"))
  );
  show(h("h1", {}, "API key"), h("div", { class: "card" }, form));
}

const forget = document.getElementById("forget-key");
forget.addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  route();
});

// ---- charts (inline SVG) ----

function barChart(bars, opts) {
  const width = opts.width || 420;
  const height = opts.height || 160;
  const pad = { l: 36, r: 8, t: 8, b: 34 };
  const series = opts.series || 1;
  const max = Math.max(1, ...bars.flatMap((b) => b.values));
  const slot = (width - pad.l - pad.r) / Math.max(1, bars.length);
  const barW = Math.max(1, (slot - 2) / series);
  const y = (v) => pad.t + (height - pad.t - pad.b) * (1 - v / max);
  const svg = s("svg", { class: "chart " + (opts.kind || ""), width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  svg.append(s("line", { class: "axis", x1: pad.l, y1: height - pad.b, x2: width - pad.r, y2: height - pad.b }));
  svg.append(s("text", { x: 2, y: pad.t + 8 }, fmt(max)));
  bars.forEach((b, i) => {
    b.values.forEach((v, j) => {
      const x = pad.l + i * slot + 1 + j * barW;
      const rect = s("rect", { class: j === 1 ? "bar target" : "bar", x, y: y(v), width: Math.max(1, barW - 1), height: Math.max(0, height - pad.b - y(v)) });
      rect.append(s("title", {}, `${b.label}: ${fmt(v)}`));
      svg.append(rect);
    });
    if (bars.length <= 12 || i % Math.ceil(bars.length / 8) === 0) {
      const text = b.label.length > 12 ? b.label.slice(0, 11) + "…" : b.label;
      svg.append(s("text", { x: pad.l + i * slot + 2, y: height - pad.b + 12 + (i % 2) * 11 }, text));
    }
  });
  return svg;
}

function timeline(snapshots) {
  const width = 900;
  const height = 54;
  const svg = s("svg", { class: "chart timeline", width, height, viewBox: `0 0 ${width} ${height}` });
  if (!snapshots.length) return svg;
  const times = snapshots.map((x) => Date.parse(x.valid_from));
  const lo = Math.min(...times);
  const hi = Math.max(...times);
  const x = (t) => 20 + (width - 40) * (hi === lo ? 0.5 : (t - lo) / (hi - lo));
  svg.append(s("line", { class: "axis", x1: 20, y1: 24, x2: width - 20, y2: 24 }));
  snapshots.forEach((snap, i) => {
    const dot = s("circle", { class: "dot " + snap.kind, cx: x(times[i]), cy: 24, r: 6 });
    dot.append(s("title", {}, `#${snap.id} ${snap.kind}, valid from ${when(snap.valid_from)}, ${snap.entity_count} entities`));
    svg.append(dot);
  });
  svg.append(s("text", { x: 20, y: 48 }, when(snapshots[0].valid_from)));
  svg.append(s("text", { x: width - 180, y: 48 }, when(snapshots[snapshots.length - 1].valid_from)));
  return svg;
}

// ---- pages ----

/// The version "name" serves: the newest active computed one.
function servedVersion(versions) {
  const served = versions.filter((v) => v.status === "active" && v.computed_at);
  return served.length ? served[served.length - 1] : null;
}

function maxPsi(drift) {
  if (!drift) return null;
  const all = Object.values(drift.columns).map((c) => c.psi).filter((p) => p !== null);
  return all.length ? Math.max(...all) : null;
}

function searchBox(onInput) {
  return h("input", { type: "search", id: "search", placeholder: "Search tables and features", oninput: (e) => onInput(e.target.value.toLowerCase()) });
}

async function overview() {
  const [tables, features] = await Promise.all([api("/api/v1/raw-tables"), api("/api/v1/features")]);
  const details = await Promise.all(
    features.map(async (f) => {
      const versions = await api(`/api/v1/features/${f.id}/versions`);
      const served = servedVersion(versions);
      const drift = served ? await maybe(`/api/v1/features/${f.id}/versions/${served.id}/drift`) : null;
      return { f, served, drift };
    })
  );
  const tableRows = tables.map((t) =>
    h("tr", { "data-name": t.name.toLowerCase() },
      h("td", {}, h("a", { href: `/ui/raw-tables/${t.id}` }, t.name)),
      h("td", { class: "num" }, fmt(t.row_count)),
      h("td", {}, when(t.last_ingest_at)),
      h("td", { class: "muted" }, t.description || ""))
  );
  const featureRows = details.map(({ f, served, drift }) =>
    h("tr", { "data-name": f.name.toLowerCase(), "data-feature": f.name },
      h("td", {}, h("a", { href: `/ui/features/${f.id}` }, f.name)),
      h("td", {}, served ? `${served.version} (#${served.id})` : "—"),
      h("td", {}, freshBadge(served), " ", served ? h("span", { class: "muted" }, "data as of " + when(served.data_as_of)) : ""),
      h("td", {}, psiBadge(maxPsi(drift))),
      h("td", { class: "muted" }, f.description || ""))
  );
  const filter = (q) => {
    for (const row of [...tableRows, ...featureRows]) row.classList.toggle("hidden", !row.dataset.name.includes(q));
  };
  show(
    h("h1", {}, "Overview"),
    h("div", { class: "row" }, searchBox(filter)),
    h("h2", {}, `Features (${features.length})`),
    h("table", { id: "features-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "feature"), h("th", {}, "served version"), h("th", {}, "freshness"), h("th", {}, "newest drift"), h("th", {}, "description"))),
      h("tbody", {}, featureRows)),
    h("h2", {}, `Raw tables (${tables.length})`),
    h("table", { id: "tables-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "table"), h("th", { class: "num" }, "rows"), h("th", {}, "last ingest"), h("th", {}, "description"))),
      h("tbody", {}, tableRows))
  );
}

function rowsTable(rows, columns) {
  return h("table", { class: "preview" },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, columns.map((c) => h("td", {}, fmt(r[c])))))));
}

function streamCard(s) {
  const kafka = s.type === "kafka";
  const parts = s.partitions || [];
  const lags = parts.map((p) => p.lag).filter((l) => l !== null && l !== undefined);
  const lag = lags.length ? lags.reduce((a, b) => a + b, 0) : null;
  const badge = s.status === "running" ? "ok" : s.status === "failing" ? "bad" : "warn";
  const source = kafka
    ? ["follows Kafka topic ", h("code", {}, s.topic), " at ", h("code", {}, s.brokers)]
    : ["follows NATS stream ", h("code", {}, s.stream), " at ", h("code", {}, s.url),
      s.subject ? [" on ", h("code", {}, s.subject)] : null];
  // One offset for NATS; for Kafka, partition:offset for each partition.
  const offsets = kafka
    ? parts.map((p) => p.partition + ":" + fmt(p.committed_offset)).join(" ")
    : fmt((parts[0] || {}).committed_offset);
  return h("div", { class: "card", id: "stream" },
    h("div", {}, source, " ",
      h("span", { class: "badge " + badge, "data-status": s.status }, s.status), s.reason ? " " + s.reason : null),
    h("div", {}, kafka ? "committed offsets " : "committed offset ", h("b", {}, offsets), " · lag ", h("b", { "data-lag": lag }, fmt(lag)),
      " · ", fmt(s.events_per_second), " events/s · ", fmt(s.events_committed), " committed · ", fmt(s.rejected),
      " rejected · last commit ", when(s.last_commit_at)));
}

async function rawTable(id) {
  const noStream = (e) => { if (e.status === 404) return null; throw e; };
  const [table, preview, stream] = await Promise.all([api(`/api/v1/raw-tables/${id}`), api(`/api/v1/raw-tables/${id}/data?limit=50`),
    api(`/api/v1/raw-tables/${id}/stream`).catch(noStream)]);
  const schema = Object.entries(table.schema_definition || {});
  show(
    h("h1", {}, "Raw table ", table.name),
    h("p", { class: "muted" }, table.description || ""),
    h("div", { class: "card" },
      h("div", {}, h("b", {}, fmt(preview.total_rows)), " rows stored; last ingest ", when(table.last_ingest_at)),
      table.event_time_column ? h("div", {}, "event time: ", h("code", {}, table.event_time_column)) : null),
    stream ? streamCard(stream) : null,
    h("h2", {}, "Schema"),
    h("table", { id: "schema" }, h("tbody", {}, schema.map(([c, t]) => h("tr", {}, h("td", {}, c), h("td", {}, t))))),
    h("h2", {}, `First ${preview.rows.length} rows`),
    rowsTable(preview.rows, schema.map(([c]) => c))
  );
}

function statsCard(name, st) {
  const rows = [["type", st.type], ["count", st.count], ["nulls", st.nulls]];
  let chart;
  if ("histogram" in st) {
    rows.push(["mean", st.mean], ["std", st.std], ["min", st.min], ["max", st.max]);
    if (st.quantiles) for (const [q, v] of Object.entries(st.quantiles)) rows.push([q, v]);
    const e = st.histogram.edges;
    const bars = st.histogram.counts.map((c, i) => ({ label: fmt(e[i]), values: [c] }));
    chart = barChart(bars, { kind: "histogram" });
  } else {
    rows.push(["distinct", st.distinct]);
    chart = barChart(st.top.map((t) => ({ label: String(t.value), values: [t.count] })), { kind: "top" });
  }
  return h("div", { class: "card column-stats", "data-column": name },
    h("h3", {}, name),
    chart,
    h("table", {}, h("tbody", {}, rows.map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", { class: "num" }, fmt(v)))))));
}

/// A drift bin's label, numbers shortened.
function binLabel(b) {
  if (b.lower === undefined && b.upper === undefined) return b.label;
  if (b.lower === undefined) return "≤ " + fmt(b.upper);
  if (b.upper === undefined) return "> " + fmt(b.lower);
  return "≤ " + fmt(b.upper);
}

function driftView(drift) {
  const cols = Object.entries(drift.columns);
  return h("div", { id: "drift" },
    h("p", { class: "muted" }, `snapshot #${drift.base} → #${drift.target}. PSI below 0.1: no real change; 0.1–0.25: watch; above 0.25: act.`),
    h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "column"), h("th", {}, "PSI"), h("th", { class: "num" }, "null rate change"))),
      h("tbody", {}, cols.map(([name, d]) =>
        h("tr", { "data-column": name }, h("td", {}, name), h("td", {}, psiBadge(d.psi)), h("td", { class: "num" }, fmt(d.null_rate_change)))))),
    h("div", { class: "legend" }, h("span", {}, h("i", { class: "swatch base" }), "base"), h("span", {}, h("i", { class: "swatch target" }), "target")),
    h("div", { class: "grid" }, cols.map(([name, d]) => {
      const nb = d.bins.reduce((a, b) => a + b.base, 0) || 1;
      const nt = d.bins.reduce((a, b) => a + b.target, 0) || 1;
      return h("div", { class: "card" }, h("h3", {}, name),
        barChart(d.bins.map((b) => ({ label: binLabel(b), values: [b.base / nb, b.target / nt] })), { series: 2, kind: "drift" }));
    })));
}

async function feature(id) {
  const [f, versions] = await Promise.all([api(`/api/v1/features/${id}`), api(`/api/v1/features/${id}/versions`)]);
  const computed = versions.filter((v) => v.computed_at);
  const chosen = Number(new URLSearchParams(location.search).get("version")) || (servedVersion(versions) || computed[computed.length - 1] || {}).id;
  const version = versions.find((v) => v.id === chosen);
  const versionRows = versions.map((v) =>
    h("tr", {},
      h("td", {}, h("a", { href: `/ui/features/${id}?version=${v.id}` }, v.version), v.id === chosen ? " ◀" : ""),
      h("td", {}, v.status),
      h("td", { class: "engine" }, f.engine || "polars"),
      h("td", {}, when(v.computed_at)),
      h("td", { class: "num" }, fmt(v.entity_count)),
      h("td", {}, freshBadge(v), " ", h("span", { class: "muted" }, when(v.data_as_of))),
      h("td", {}, v.refresh_every_seconds ? `every ${v.refresh_every_seconds} s` : "manual")));
  const page = [
    h("h1", {}, "Feature ", f.name),
    h("p", { class: "muted" }, f.description || ""),
    h("div", { class: "card" }, h("div", {}, "entity key ", h("code", {}, [].concat(f.entity_key).join(", ")), " · raw table ", h("a", { href: `/ui/raw-tables/${f.raw_table_id}` }, "#" + f.raw_table_id)), h("pre", { id: "definition" }, definition(f))),
    h("h2", {}, "Versions"),
    h("table", { id: "versions" },
      h("thead", {}, h("tr", {}, h("th", {}, "version"), h("th", {}, "status"), h("th", {}, "engine"), h("th", {}, "computed"), h("th", { class: "num" }, "entities"), h("th", {}, "freshness"), h("th", {}, "refresh"))),
      h("tbody", {}, versionRows)),
  ];
  if (f.aggregations) {
    show(...page, h("p", { class: "muted" }, "Aggregations are computed from the raw table's events at each request and each training row's time: there are no snapshots to show."));
    return;
  }
  if (!version || !version.computed_at) {
    show(...page, h("p", { class: "muted" }, "No computed version yet."));
    return;
  }
  const [snapshots, stats, drift] = await Promise.all([
    api(`/api/v1/features/${id}/versions/${version.id}/snapshots`),
    maybe(`/api/v1/features/${id}/versions/${version.id}/stats`),
    maybe(`/api/v1/features/${id}/versions/${version.id}/drift`),
  ]);
  const driftBox = h("div", {}, drift ? driftView(drift) : h("p", { class: "muted", id: "drift" }, "Drift needs two snapshots."));
  const pick = (name, selected) =>
    h("select", { id: name }, snapshots.map((x) => {
      const o = h("option", { value: x.id }, `#${x.id} ${x.kind} ${when(x.valid_from)}`);
      if (x.id === selected) o.selected = true;
      return o;
    }));
  const base = pick("drift-base", drift ? drift.base : null);
  const target = pick("drift-target", drift ? drift.target : null);
  const compare = h("button", { type: "button", onclick: async () => {
    try {
      driftBox.replaceChildren(driftView(await api(`/api/v1/features/${id}/versions/${version.id}/drift?base=${base.value}&target=${target.value}`)));
    } catch (e) {
      driftBox.replaceChildren(h("p", { class: "error" }, e.message));
    }
  } }, "Compare");
  // One field per key column; a feature keyed by one column keeps the plain entity id field.
  const keyed = Array.isArray(f.entity_key);
  const fields = keyed
    ? f.entity_key.map((k) => [k, h("input", { type: "text", id: `key-${k}`, placeholder: k })])
    : [["entity_id", h("input", { type: "text", id: "entity", placeholder: "entity id" })]];
  const found = h("pre", { id: "entity-vector", class: "hidden" });
  const lookup = h("form", { class: "row", onsubmit: async (ev) => {
    ev.preventDefault();
    found.classList.remove("hidden");
    try {
      const keys = fields.map(([k, input]) => `${encodeURIComponent(k)}=${encodeURIComponent(input.value)}`).join("&");
      const v = await api(`/api/v1/feature-vectors?${keys}&feature_version_id=${version.id}`);
      found.textContent = JSON.stringify(v, null, 2);
    } catch (e) {
      found.textContent = e.message;
    }
  } }, ...fields.map(([, input]) => input), h("button", { type: "submit" }, "Look up"));
  show(
    ...page,
    h("h2", {}, `Snapshots of ${version.version} (${snapshots.length})`),
    h("div", { class: "card" }, timeline(snapshots),
      h("div", { class: "legend muted" }, "blue: compute · green: refresh · purple: backfill")),
    h("h2", {}, "Values in the served snapshot", stats ? ` (#${stats.snapshot_id}, ${fmt(stats.entity_count)} entities)` : ""),
    stats ? h("div", { class: "grid", id: "stats" }, Object.entries(stats.columns).map(([n, st]) => statsCard(n, st))) : h("p", { class: "muted" }, "No statistics."),
    h("h2", {}, "Drift"),
    h("div", { class: "row" }, "base ", base, " target ", target, compare),
    driftBox,
    h("h2", {}, "Look up an entity"),
    lookup,
    found
  );
}

async function route() {
  forget.classList.toggle("hidden", !sessionStorage.getItem(KEY));
  const path = location.pathname.replace(/\/+$/, "");
  let m;
  try {
    if ((m = path.match(/^\/ui\/raw-tables\/(\d+)$/))) await rawTable(m[1]);
    else if ((m = path.match(/^\/ui\/features\/(\d+)$/))) await feature(m[1]);
    else await overview();
    document.body.dataset.loaded = "true";
  } catch (e) {
    if (e instanceof Unauthorized) {
      askForKey(sessionStorage.getItem(KEY) ? "That key was not accepted. Enter another." : "This server needs an API key. It is kept for this browser tab only.");
    } else {
      show(h("h1", {}, "Something went wrong"), h("p", { class: "error" }, e.message));
    }
    document.body.dataset.loaded = "true";
  }
}

route();

// A feature's definition as shown: its SQL, or its declared aggregations and filter.
function definition(f) {
  if (!f.aggregations) return f.computation_logic;
  const lines = f.aggregations.map((a) =>
    `${a.function}${a.q !== undefined ? `(q=${a.q})` : ""} of ${a.column} over ${a.windows.join(", ")}`);
  if (f.filter) lines.push(`where ${f.filter}`);
  return lines.join("\n");
}
