// facestream's page: plain JavaScript served by the daemon, no build step, nothing fetched from elsewhere.
"use strict";

const $ = (sel) => document.querySelector(sel);
const QUIET = ["stats", "track.ended"]; // shown only with "all topics"
const SNAPSHOT_MS = 1000, STATUS_MS = 2000, MAX_EVENTS = 200;
let token = sessionStorage.getItem("facestream-token") || "";
let events = null;
let lastSeq = 0;
const eventHooks = []; // people.js: a button on recognitions, panels that follow the events

function authHeaders() {
  // X-Facestream-Request: a header no cross-site form can send; the daemon refuses changes without it.
  return token ? { Authorization: "Bearer " + token, "X-Facestream-Request": "1" } : { "X-Facestream-Request": "1" };
}

async function api(path, options = {}) {
  const res = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  if (res.status === 401) {
    $("#token-box").hidden = false;
    throw new Error("API token needed");
  }
  return res;
}

async function json(path, options) {
  const res = await api(path, options);
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const err = new Error((body.error && body.error.message) || res.statusText);
    err.body = body;
    throw err;
  }
  return body;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}

// ---- sources -------------------------------------------------------------------------------------
const cards = new Map();

function sourceCard(src) {
  let card = cards.get(src.id);
  if (!card) {
    const img = el("img", { class: "snapshot", alt: "latest frame of " + src.id });
    card = el("div", { class: "source-card", "data-source": src.id },
      el("div", {}, el("strong", {}, src.id), " ", el("span", { class: "state" }), " ", el("span", { class: "figures muted" })),
      img, el("div", {}, "in view: ", el("span", { class: "source-names" }, "—")));
    cards.set(src.id, card);
    $("#sources").append(card);
    $("#no-sources").hidden = true;
    refreshSnapshot(src.id, card);
  }
  return card;
}

async function refreshSnapshot(id, card) {
  try {
    const res = await api("v1/sources/" + encodeURIComponent(id) + "/snapshot.jpg");
    if (res.ok) {
      const names = JSON.parse(res.headers.get("X-Facestream-Faces") || "[]");
      const url = URL.createObjectURL(await res.blob());
      const img = card.querySelector("img");
      const old = img.src;
      img.onload = () => { if (old.startsWith("blob:")) URL.revokeObjectURL(old); };
      img.src = url;
      // The names below the picture are the ones drawn on it: both came in the same response.
      card.querySelector(".source-names").textContent = names.length ? names.map((n) => n || "unknown").join(", ") : "nobody";
      card.dataset.names = names.filter((n) => n).join(",");
    }
  } catch (e) { /* the next poll tries again */ }
  setTimeout(() => refreshSnapshot(id, card), SNAPSHOT_MS);
}

async function refreshStatus() {
  try {
    const s = await json("v1/status");
    $("#summary").textContent = `up ${Math.round(s.uptime_s)} s · ${s.model} · gallery v${s.gallery.version}, ` +
      `${s.gallery.identities} people, threshold ${s.gallery.threshold}`;
    for (const src of s.sources) {
      const card = sourceCard(src);
      const state = card.querySelector(".state");
      state.textContent = src.state;
      state.className = "state " + src.state;
      state.title = src.detail;
      card.querySelector(".figures").textContent =
        `${src.fps} frames/s · ${src.frames_processed} processed · ${src.frames_dropped} dropped`;
    }
    if (!events) startEvents();
  } catch (e) {
    $("#summary").textContent = "daemon unreachable: " + e.message;
  }
  setTimeout(refreshStatus, STATUS_MS);
}

// ---- events --------------------------------------------------------------------------------------
function describe(ev) {
  const parts = [ev.time ? ev.time.slice(11, 23) : "", ev.topic];
  if (ev.source) parts.push(ev.source);
  if (ev.identity) parts.push(ev.identity);
  if (typeof ev.score === "number") parts.push("score " + ev.score.toFixed(3));
  if (typeof ev.margin === "number" && ev.topic.startsWith("face.")) parts.push("margin " + ev.margin.toFixed(3));
  if (ev.status) parts.push(ev.status + (ev.detail ? " (" + ev.detail + ")" : ""));
  if (ev.action) parts.push(ev.action);
  if (ev.reason) parts.push(ev.reason);
  return parts.join("  ");
}

function addEvent(ev) {
  if (ev.seq && ev.seq <= lastSeq) return;
  lastSeq = Math.max(lastSeq, ev.seq || 0);
  const li = el("li", { "data-topic": ev.topic, "data-identity": ev.identity || "", "data-seq": String(ev.seq || "") },
    describe(ev));
  li.hidden = QUIET.includes(ev.topic) && !$("#all-topics").checked;
  for (const hook of eventHooks) hook(ev, li);
  $("#events").prepend(li);
  while ($("#events").children.length > MAX_EVENTS) $("#events").lastChild.remove();
  if (ev.topic === "gallery.updated") refreshIdentities();
}

async function startEvents() {
  events = true;
  try {
    const recent = await json("v1/events/recent?limit=100");
    recent.events.forEach(addEvent);
  } catch (e) { /* the stream still starts */ }
  const q = token ? "?access_token=" + encodeURIComponent(token) : "";
  events = new EventSource("v1/events" + q);
  const onEvent = (msg) => { const ev = JSON.parse(msg.data); ev.seq = Number(msg.lastEventId); addEvent(ev); };
  events.onmessage = onEvent;
  for (const t of ["face.recognized", "face.unknown", "track.ended", "source.status", "stats", "access.granted",
    "access.denied", "attendance.marked", "gallery.updated"]) events.addEventListener(t, onEvent);
}

$("#all-topics").addEventListener("change", () => {
  for (const li of $("#events").children) li.hidden = QUIET.includes(li.dataset.topic) && !$("#all-topics").checked;
});

// ---- gallery -------------------------------------------------------------------------------------
async function refreshIdentities() {
  try {
    const g = await json("v1/identities");
    $("#gallery-info").textContent = g.gallery ? `v${g.version}, threshold ${g.threshold}` : "no gallery";
    const body = $("#identities tbody");
    body.replaceChildren(...g.identities.map((p) => {
      const erase = el("button", { type: "button", class: "erase" }, "Erase");
      erase.addEventListener("click", async () => {
        if (!confirm(`Erase ${p.name} and every photo of them from the gallery?`)) return;
        try { await json("v1/identities/" + encodeURIComponent(p.name), { method: "DELETE" }); }
        catch (e) { alert(e.message); }
        refreshIdentities();
      });
      return el("tr", { "data-identity": p.name }, el("td", {}, p.name), el("td", {}, String(p.templates)),
        driftCell(p.drift), el("td", {}, erase));
    }));
  } catch (e) { /* shown by the status line */ }
}

function driftCell(d) {
  // The recent median of the scores they were named at; flagged when it is within drift.near of the threshold.
  if (!d || d.recent_median === null) return el("td", { class: "muted" }, "—");
  const sign = d.margin_to_threshold >= 0 ? "+" : "";
  const td = el("td", { class: d.drifting ? "drifting" : "", title: d.advice ||
    `${d.accepted} recent recognitions, ${d.refusals} refusals (top-1 but below the threshold ${d.threshold})` },
    `${d.recent_median.toFixed(3)} (${sign}${d.margin_to_threshold.toFixed(3)})` + (d.drifting ? " ⚠" : ""));
  return td;
}

$("#enrol-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = $("#enrol-result");
  const form = new FormData();
  for (const f of $("#enrol-files").files) form.append("photos", f, f.name);
  out.className = "result";
  out.textContent = "enrolling…";
  try {
    const r = await json("v1/identities/" + encodeURIComponent($("#enrol-name").value.trim()) + "/photos",
      { method: "POST", body: form });
    out.textContent = `${r.identity}: ${r.added} photo(s) enrolled` +
      r.photos.filter((p) => !p.enrolled).map((p) => `\n${p.photo}: ${p.reason}`).join("");
    out.dataset.done = "ok";
  } catch (e) {
    const photos = (e.body && e.body.error && e.body.error.photos) || [];
    out.className = "result error";
    out.textContent = e.message + photos.map((p) => `\n${p.photo}: ${p.reason}`).join("");
    out.dataset.done = "error";
  }
  refreshIdentities();
});

// ---- recognise a photo ---------------------------------------------------------------------------
$("#recognize-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const file = $("#recognize-file").files[0];
  const out = $("#recognize-result");
  out.className = "result";
  out.textContent = "recognising…";
  try {
    const r = await json("v1/recognize", { method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" } });
    const img = await createImageBitmap(file, { imageOrientation: "from-image" });
    const canvas = $("#recognize-canvas");
    canvas.width = r.width; canvas.height = r.height;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0, r.width, r.height);
    ctx.lineWidth = Math.max(2, r.width / 300);
    ctx.font = `${Math.max(14, r.width / 40)}px sans-serif`;
    for (const f of r.faces) {
      const [x1, y1, x2, y2] = f.box;
      ctx.strokeStyle = ctx.fillStyle = f.identity ? "#00c000" : "#ffa500";
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      ctx.fillText(f.identity || f.decision, x1, Math.max(16, y1 - 4));
    }
    out.textContent = (r.faces.length ? r.faces.map((f) =>
      `${f.identity || f.decision}: score ${f.score.toFixed(3)}, margin ${f.margin.toFixed(3)}` + (f.reason ? ` (${f.reason})` : "")).join("\n")
      : "no faces") + `\nthreshold ${r.threshold}, margin required ${r.margin_required}`;
  } catch (e) {
    out.className = "result error";
    out.textContent = e.message;
  }
});

$("#token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("#token").value.trim();
  sessionStorage.setItem("facestream-token", token);
  $("#token-box").hidden = true;
  if (events && events.close) events.close();
  events = null;
  refreshIdentities();
});

refreshStatus();
refreshIdentities();
