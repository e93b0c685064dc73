// The status page's script: reads /health (open), and with the API key (asked for when the
// server wants one, kept in this variable only) /v1/status/samples and /v1/task_history; sends
// the prompt box to /v1/chat/completions and streams the answer. Every value from the server
// is shown with textContent, never parsed as HTML.
"use strict";
let key = null;
const $ = (id) => document.getElementById(id);

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

async function api(path, options) {
  const o = Object.assign({}, options || {});
  o.headers = headers(o.headers);
  const r = await fetch(path, o);
  if (r.status === 401) {
    $("key-form").classList.add("shown");
    throw new Error("the server needs its API key");
  }
  return r;
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function mib(bytes) {
  return bytes == null ? "–" : (bytes / 1048576).toFixed(0) + " MiB";
}

async function refreshModels() {
  const h = await (await fetch("/health")).json();
  const body = $("models").tBodies[0];
  body.replaceChildren();
  const select = $("model");
  const chosen = select.value;
  select.replaceChildren();
  for (const m of h.models) {
    const row = document.createElement("tr");
    row.dataset.model = m.name;
    cell(row, m.name);
    const state = cell(row, m.health.state + (m.health.reason ? ": " + m.health.reason : ""), "state-" + m.health.state);
    state.dataset.state = m.health.state;
    cell(row, m.backend || "–").dataset.backend = m.backend || "";
    const device = cell(row, m.device || "–");
    for (const s of m.skipped_backends || []) {
      const d = document.createElement("div");
      d.className = "fallback";
      d.textContent = "skipped " + s.backend + ": " + s.reason;
      device.appendChild(d);
    }
    cell(row, mib(m.estimated_bytes) + " / " + mib(m.peak_rss_bytes), "num");
    cell(row, String(m.running), "num");
    cell(row, String(m.waiting), "num");
    cell(row, String(m.refused), "num");
    body.appendChild(row);
    const opt = document.createElement("option");
    opt.value = m.name;
    opt.textContent = m.name;
    select.appendChild(opt);
  }
  if (chosen) select.value = chosen;
  $("summary").textContent = (h.ready ? "ready" : "not ready") + " · " + h.models.length + " model(s)";
}

function draw(samples) {
  const W = 600, H = 180, pad = 6;
  const tps = samples.map((s) => s.models.reduce((a, m) => a + m.tokens_per_s, 0));
  const queue = samples.map((s) => s.models.reduce((a, m) => a + m.waiting, 0));
  const top = Math.max(1, ...tps, ...queue);
  const n = samples.length;
  const x = (i) => (n <= 1 ? W : (i * W) / (n - 1)).toFixed(1);
  const y = (v) => (H - pad - (v / top) * (H - 2 * pad)).toFixed(1);
  $("tps").setAttribute("points", tps.map((v, i) => x(i) + "," + y(v)).join(" "));
  $("queue").setAttribute("points", queue.map((v, i) => x(i) + "," + y(v)).join(" "));
  $("plot").dataset.points = String(n);
  $("plot").dataset.maxTokensPerS = String(Math.max(0, ...tps));
  $("plot-scale").textContent = "top " + top.toFixed(1);
  $("plot-note").textContent = n + " samples, one a second";
}

async function refreshLive() {
  const samples = await (await api("/v1/status/samples")).json();
  draw(samples);
  const r = await api("/v1/task_history?task=ai_completion&limit=10");
  const body = $("tasks").tBodies[0];
  if (!r.ok) {
    body.replaceChildren();
    return;
  }
  const rows = (await r.json()).data || [];
  body.replaceChildren();
  for (const t of rows) {
    const row = document.createElement("tr");
    cell(row, new Date(t.start_ms).toLocaleTimeString());
    cell(row, (t.labels && (t.labels["gen_ai.request.model"] || t.labels.model)) || "");
    cell(row, t.duration_ms != null ? String(Math.round(t.duration_ms)) : "", "num");
    cell(row, t.labels && t.labels.completion_tokens != null ? String(t.labels.completion_tokens) : "", "num");
    cell(row, t.input || "", "cut");
    cell(row, t.captured_output || "", "cut");
    cell(row, t.error_message || "", "error");
    body.appendChild(row);
  }
}

async function refresh() {
  try {
    await refreshModels();
    await refreshLive();
  } catch (e) {
    $("plot-note").textContent = String(e.message || e);
  }
}

$("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  key = $("key").value.trim() || null;
  $("key").value = "";
  $("key-form").classList.remove("shown");
  refresh();
});

$("try").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = $("answer");
  out.textContent = "";
  out.classList.remove("error");
  out.dataset.done = "false";
  try {
    const r = await api("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        model: $("model").value,
        stream: true,
        max_tokens: 64,
        messages: [{ role: "user", content: $("prompt").value }],
      }),
    });
    if (!r.ok) {
      const e = await r.json();
      throw new Error((e.error && e.error.message) || r.statusText);
    }
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (delta && delta.content) out.textContent += delta.content;
        }
      }
    }
  } catch (e) {
    out.classList.add("error");
    out.textContent += "\n" + String(e.message || e);
  }
  out.dataset.done = "true";
  refresh();
});

refresh();
setInterval(refresh, 1000);
