// The admin page: polls GET /admin/stats every second (and the capture
// list every fifth time), computes rates from successive readings, draws
// the goroutine count over time, and publishes test messages through
// POST /admin/publish. Everything it shows goes in as text, never as HTML.
"use strict";

const pollMS = 1000;
const history = []; // goroutine counts, oldest first
const historyMax = 120;
let prev = null; // the previous reading
let polls = 0;

const $ = (id) => document.getElementById(id);
const setText = (id, v) => { $(id).textContent = String(v); };

function toLogin(res) {
  if (res.status === 401) {
    window.location.assign("/login");
    return true;
  }
  return false;
}

function status(text, cls) {
  const el = $("status");
  el.textContent = text;
  el.className = "pill " + cls;
}

function rate(cur, old, key) {
  if (!old) return "–";
  const dt = (cur.time_ms - old.time_ms) / 1000;
  if (dt <= 0) return "–";
  return (Math.max(0, cur[key] - old[key]) / dt).toFixed(1);
}

function showStats(s) {
  setText("version", "v" + s.version + " · up " + s.uptime_seconds + "s" + (s.draining ? " · draining" : ""));
  setText("connections", s.connections);
  setText("max-connections", s.max_connections);
  setText("users", s.users);
  setText("subscriptions", s.subscriptions);
  setText("channels", s.channels);
  setText("publications", s.publications_total);
  setText("deliveries", s.deliveries_total);
  setText("publication-rate", rate(s, prev, "publications_total"));
  setText("delivery-rate", rate(s, prev, "deliveries_total"));
  const adm = $("admission");
  adm.textContent = s.admission;
  adm.className = "big " + s.admission;
  setText("admission-why", s.admission_why || "");
  setText("goroutines", s.goroutines);
  history.push(s.goroutines);
  if (history.length > historyMax) history.shift();
  drawGoroutines();
  showChannels(s.top_channels || []);
  prev = s;
}

function drawGoroutines() {
  const lo = Math.min(...history), hi = Math.max(...history);
  const span = Math.max(1, hi - lo);
  const step = 300 / (historyMax - 1);
  const pts = history.map((v, i) => {
    const x = (i + historyMax - history.length) * step;
    const y = 75 - ((v - lo) / span) * 70;
    return x.toFixed(1) + "," + y.toFixed(1);
  });
  $("goroutine-line").setAttribute("points", pts.join(" "));
  $("goroutine-line").dataset.samples = String(history.length);
  setText("goroutine-range", "last " + history.length + " s: " + lo + "–" + hi);
}

function showChannels(list) {
  const body = document.querySelector("#top-channels tbody");
  body.replaceChildren(...list.map((c) => {
    const tr = document.createElement("tr");
    tr.dataset.channel = c.channel;
    const name = document.createElement("td");
    name.textContent = c.channel;
    const n = document.createElement("td");
    n.className = "num";
    n.textContent = String(c.subscribers);
    tr.append(name, n);
    return tr;
  }));
  $("no-channels").hidden = list.length > 0;
}

function showCaptures(res) {
  setText("capture-dir", res.dir ? "kept in " + res.dir : "");
  const list = (res.captures || []).slice().reverse(); // newest first
  const body = document.querySelector("#captures tbody");
  body.replaceChildren(...list.map((c) => {
    const tr = document.createElement("tr");
    const cell = (text, cls) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.append(td);
      return td;
    };
    cell(c.id);
    cell(new Date(c.time).toLocaleString());
    cell(c.reason);
    cell(String(c.goroutines), "num");
    const files = cell("");
    // the HTML goroutine report first, when the capture has one
    const names = (c.files || []).slice().sort((a, b) => Number(b.endsWith(".html")) - Number(a.endsWith(".html")));
    for (const f of names) {
      const a = document.createElement("a");
      a.href = "/debug/captures/" + encodeURIComponent(c.id) + "/" + encodeURIComponent(f);
      a.textContent = f.endsWith(".html") ? "goroutine report" : f;
      a.target = "_blank";
      a.rel = "noopener";
      files.append(a);
    }
    return tr;
  }));
  $("no-captures").hidden = list.length > 0;
}

async function getJSON(path) {
  const res = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store", credentials: "same-origin" });
  if (toLogin(res)) return null;
  if (!res.ok) throw new Error(path + ": HTTP " + res.status);
  return res.json();
}

async function poll() {
  try {
    const s = await getJSON("/admin/stats");
    if (s === null) return;
    showStats(s);
    if (polls % 5 === 0) {
      const c = await getJSON("/debug/captures");
      if (c !== null) showCaptures(c);
    }
    polls++;
    status("live", "live");
  } catch (e) {
    status("unreachable: " + e.message, "down");
  }
  setTimeout(poll, pollMS);
}

async function publish(ev) {
  ev.preventDefault();
  const out = $("publish-result");
  const channel = $("publish-channel").value.trim();
  let data;
  try {
    data = JSON.parse($("publish-data").value);
  } catch (e) {
    out.className = "error";
    out.textContent = "data is not JSON: " + e.message;
    return;
  }
  out.className = "";
  out.textContent = "publishing…";
  try {
    const res = await fetch("/admin/publish", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({ channel, data }),
    });
    if (toLogin(res)) return;
    const body = await res.json();
    if (res.ok) {
      out.className = "ok";
      out.textContent = "published to " + body.channel;
    } else {
      out.className = "error";
      out.textContent = body.error || "HTTP " + res.status;
    }
  } catch (e) {
    out.className = "error";
    out.textContent = "publish failed: " + e.message;
  }
}

$("publish-form").addEventListener("submit", publish);
poll();
