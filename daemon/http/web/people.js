// facestream's page, the people loop: unknown visitors (name one, discard one), "not this person" on each
// recognition, today's attendance, enrolment from a clip. Uses app.js's helpers ($, el, api, json); every
// change goes through api(), which sends X-Facestream-Request and the token.
"use strict";

const UNKNOWNS_MS = 10000, ATTENDANCE_MS = 30000, MAX_VISITORS = 24;
const faceUrls = new Map(); // face URL -> blob: URL, fetched once with the token in a header, not in the URL

// ---- "not this person" ----------------------------------------------------------------------------------
eventHooks.push((ev, li) => {
  if (ev.topic !== "face.recognized" || !ev.seq || !ev.identity) return;
  const out = el("span", { class: "reject-result" });
  const button = el("button", { type: "button", class: "reject",
    title: `This was not ${ev.identity}: the face is kept as a negative for them` }, "not this person");
  button.addEventListener("click", async () => {
    button.disabled = true;
    out.className = "reject-result";
    out.textContent = "sending…";
    try {
      const res = await api("v1/events/" + ev.seq + "/reject", { method: "POST" });
      const body = await res.json().catch(() => ({}));
      li.dataset.rejectStatus = String(res.status);
      if (res.ok) {
        out.textContent = `recorded: not ${ev.identity}`;
      } else {
        out.className = "reject-result error";
        out.textContent = (body.error && body.error.message) || res.statusText || "refused";
        button.disabled = false;
      }
    } catch (e) {
      li.dataset.rejectStatus = "failed";
      out.className = "reject-result error";
      out.textContent = e.message;
      button.disabled = false;
    }
  });
  li.append(" ", button, " ", out);
});

// ---- unknown visitors -----------------------------------------------------------------------------------
let unknownsTimer = null;

function soonUnknowns(ms = 500) {
  clearTimeout(unknownsTimer);
  unknownsTimer = setTimeout(refreshUnknowns, ms);
}

async function faceImage(url) {
  const img = el("img", { alt: "face of an unknown visitor" });
  if (faceUrls.has(url)) { img.src = faceUrls.get(url); return img; }
  try {
    const res = await api(url.replace(/^\//, ""));
    if (res.ok) {
      const blob = URL.createObjectURL(await res.blob());
      faceUrls.set(url, blob);
      img.src = blob;
    }
  } catch (e) { /* an empty frame: the next refresh tries again */ }
  return img;
}

function when(epoch) {
  const d = new Date(epoch * 1000);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toTimeString().slice(0, 5) : d.toISOString().slice(0, 16).replace("T", " ");
}

function visitorCard(v) {
  const name = el("input", { class: "visitor-name", placeholder: "name", maxLength: 64, required: true });
  const enrol = el("button", { type: "submit", class: "visitor-enrol" }, "Enrol");
  const discard = el("button", { type: "button", class: "visitor-discard" }, "Discard");
  const result = el("div", { class: "result" });
  const form = el("form", { class: "visitor-form" }, name, " ", enrol, " ", discard, result);
  const card = el("div", { class: "visitor", "data-visitor": v.id }, el("div", { class: "faces" }),
    el("div", { class: "about" }), form);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    result.className = "result";
    result.textContent = "enrolling…";
    try {
      const r = await json("v1/unknowns/" + v.id + "/enrol", { method: "POST",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name: name.value.trim() }) });
      result.textContent = `${r.identity}: ${r.added} face(s) enrolled`;
      card.dataset.done = "ok";
      refreshIdentities();
      soonUnknowns(0);
    } catch (err) {
      const photos = (err.body && err.body.error && err.body.error.photos) || [];
      result.className = "result error";
      result.textContent = err.message + photos.filter((p) => p.reason).map((p) => `\n${p.photo}: ${p.reason}`).join("");
      card.dataset.done = "error";
    }
  });
  discard.addEventListener("click", async () => {
    if (!confirm("Discard this visitor and every face kept of them?")) return;
    try { await json("v1/unknowns/" + v.id, { method: "DELETE" }); card.remove(); }
    catch (err) { result.className = "result error"; result.textContent = err.message; }
    soonUnknowns(0);
  });
  return card;
}

async function fillVisitor(card, v) {
  const about = `seen ${v.count} time${v.count === 1 ? "" : "s"} · ${v.cameras.join(", ")} · ` +
    `first ${when(v.first_seen)}, last ${when(v.last_seen)}`;
  card.querySelector(".about").textContent = about;
  const key = v.faces.join(" ");
  if (card.dataset.faces === key) return;
  card.dataset.faces = key;
  const imgs = await Promise.all(v.faces.map(faceImage));
  card.querySelector(".faces").replaceChildren(...imgs);
}

async function refreshUnknowns() {
  clearTimeout(unknownsTimer);
  try {
    const u = await json("v1/unknowns");
    const box = $("#unknowns");
    const shown = u.visitors.slice(0, MAX_VISITORS);
    const keep = new Set(shown.map((v) => v.id));
    for (const card of [...box.children]) if (!keep.has(card.dataset.visitor)) card.remove();
    const cards = shown.map((v) => box.querySelector(`.visitor[data-visitor="${v.id}"]`) || visitorCard(v));
    box.replaceChildren(...cards); // most recently seen first; a card being typed into is the same element
    await Promise.all(shown.map((v, i) => fillVisitor(cards[i], v)));
    $("#no-unknowns").hidden = u.visitors.length > 0;
    $("#no-unknowns").textContent = u.enabled ? "No unknown visitors." :
      "This daemon keeps no unknown visitors (unknowns.enabled, and a gallery file).";
    $("#unknowns-info").textContent = u.visitors.length > MAX_VISITORS ?
      `the ${MAX_VISITORS} seen last of ${u.visitors.length}` : (u.visitors.length ? `${u.visitors.length}` : "");
  } catch (e) { /* shown by the status line */ }
  unknownsTimer = setTimeout(refreshUnknowns, UNKNOWNS_MS);
}

// ---- today's attendance ---------------------------------------------------------------------------------
let attendanceTimer = null;

async function refreshAttendance() {
  clearTimeout(attendanceTimer);
  try {
    const a = await json("v1/attendance/today");
    $("#attendance-section").hidden = !a.enabled;
    if (a.enabled) {
      $("#attendance-info").textContent = `${a.site} · ${a.date}` + (a.sessions.length ? ` · ${a.sessions.join(", ")}` : "");
      const seen = (m) => el("li", { "data-identity": m.identity }, `${m.identity} `,
        el("span", { class: "muted" }, `${m.first_seen.slice(11, 16)} ${m.source}` + (m.period.includes(" ") ? ` (${m.period.split(" ").slice(1).join(" ")})` : "")));
      $("#att-present").replaceChildren(...a.present.map(seen));
      $("#att-unexpected").replaceChildren(...a.unexpected.map(seen));
      $("#att-absent").replaceChildren(...a.absent.map((n) => el("li", { "data-identity": n }, n)));
      $("#att-present-n").textContent = `${new Set(a.present.map((m) => m.identity)).size} of ${a.roster}`;
      $("#att-absent-n").textContent = String(a.absent.length);
      $("#att-unexpected-n").textContent = String(new Set(a.unexpected.map((m) => m.identity)).size);
    }
  } catch (e) { /* the next poll tries again */ }
  attendanceTimer = setTimeout(refreshAttendance, ATTENDANCE_MS);
}

eventHooks.push((ev) => {
  if (ev.topic === "face.unknown") soonUnknowns();
  if (ev.topic === "gallery.updated") soonUnknowns();
  if (ev.topic === "attendance.marked") { clearTimeout(attendanceTimer); attendanceTimer = setTimeout(refreshAttendance, 300); }
});

// ---- enrol from a clip ----------------------------------------------------------------------------------
$("#clip-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = $("#clip-result");
  const file = $("#clip-file").files[0];
  const form = new FormData();
  form.append("clip", file, file.name);
  out.className = "result";
  out.textContent = "enrolling from the clip…";
  delete out.dataset.done;
  try {
    const r = await json("v1/identities/" + encodeURIComponent($("#clip-name").value.trim()) + "/video",
      { method: "POST", body: form });
    out.textContent = `${r.identity}: ${r.added} face(s) of ${r.sampled_frames} sampled frames enrolled` +
      r.rejected.map((f) => `\n${f.face}: ${f.reason}`).join("");
    out.dataset.done = "ok";
  } catch (e) {
    const faces = (e.body && e.body.error && e.body.error.faces) || [];
    out.className = "result error";
    out.textContent = e.message + faces.map((f) => `\n${f.face}: ${f.reason}`).join("");
    out.dataset.done = "error";
  }
  refreshIdentities();
});

$("#token-form").addEventListener("submit", () => { refreshUnknowns(); refreshAttendance(); });
refreshUnknowns();
refreshAttendance();
