// liveduet studio: the three tabs. No build step, no library: plain DOM, fetch, WebSocket, WebAudio.
"use strict";
const $ = (id) => document.getElementById(id);
const NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"];
const WINDOW_S = 12, AHEAD_S = 2;  // the live roll: seconds of the past and of what is queued
const AUDIO_DELAY_S = 0.05;  // WebAudio plays a note this long after its due time: room for jitter
let info = {};

async function api(path, options) {
  const res = await fetch(path, options);
  const type = res.headers.get("content-type") || "";
  const body = type.includes("json") ? await res.json() : await res.text();
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

function showTab(name) {
  for (const b of document.querySelectorAll("nav .tab")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== name;
  if (name === "sessions") loadSessions();
  location.hash = name;
}

// ---- live ---------------------------------------------------------------------------------------

const live = { state: {}, notes: new Map(), offset: null, ws: null, audio: null, voices: new Map(), played: 0,
  drawn: 0, keys: new Map(), playerPlayed: 0 };
const DRAW_EVERY_MS = 33;  // ~30 frames a second is smooth enough and leaves the CPU to the duet

function serverNow() { return live.offset === null ? 0 : performance.now() / 1000 - live.offset; }

function connectLive() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/live");
  live.ws = ws;
  ws.onmessage = (ev) => onFrame(JSON.parse(ev.data));
  ws.onclose = () => { $("status").textContent = "live link closed"; if (info.live) setTimeout(connectLive, 1000); };
  ws.onopen = () => { $("status").textContent = "live"; };
}

function onFrame(f) {
  if (f.live === false) { $("live-off").hidden = false; $("live-on").hidden = true; return; }
  if (f.error) { $("said").textContent = "⚠ " + f.error; return; }
  if (f.ack) { $("said").textContent = f.said || f.ack; return; }
  // Server time → our clock: the smallest (arrival − sent) seen is the closest to no delay at all.
  const offset = performance.now() / 1000 - f.t;
  if (live.offset === null || offset < live.offset) live.offset = offset;
  Object.assign(live.state, f);
  for (const n of f.notes || []) {
    live.notes.set(n.id, n);
    if (live.audio) playNote(n);
  }
  if (f.queued && live.audio) cancelUnqueued(new Set(f.queued));
  for (const e of f.player || []) playPlayer(e);
  const horizon = serverNow() - WINDOW_S - 5;
  for (const [id, n] of live.notes) if (n.off < horizon) live.notes.delete(id);
  showState(f);
}

function showState(f) {
  const s = live.state;
  if ("state" in f) { $("state").textContent = s.state; $("state").className = "badge " + s.state; }
  if ("beat" in f) {
    $("beat").textContent = s.beat.toFixed(2);
    const n = Math.floor(s.beat) % 4;
    $("dots").textContent = s.state === "listening" ? "○○○○" : [0, 1, 2, 3].map((i) => (i === n ? "●" : "○")).join("");
  }
  const text = { bpm: (v) => v.toFixed(1), clock_source: (v) => v, key: (v) => v, chord: (v) => v, calls: String,
    answers: String, step_p50_ms: (v) => v.toFixed(2), step_p99_ms: (v) => v.toFixed(2), late_p99_ms: (v) => v.toFixed(2),
    dropped: String, input: (v) => v + (s.input_ok ? "" : " (LOST)"), output: (v) => v + (s.output_ok ? "" : " (LOST)") };
  const ids = { bpm: "bpm", clock_source: "clock", key: "key", chord: "chord", calls: "calls", answers: "answers",
    step_p50_ms: "step50", step_p99_ms: "step99", late_p99_ms: "late", dropped: "dropped", input: "in", output: "out" };
  for (const k in text) if (k in f) $(ids[k]).textContent = text[k](s[k]);
  if ("modes" in f) {
    $("mode").innerHTML = s.modes.map((m) => `<option>${m}</option>`).join("");
    $("mode").value = s.mode || "call";
  }
  if ("temperature" in f && document.activeElement !== $("temperature")) setSlider("temperature", s.temperature);
  if ("length" in f && document.activeElement !== $("length")) setSlider("length", s.length);
  if ("complexity" in f && document.activeElement !== $("complexity")) setSlider("complexity", s.complexity);
  if ("mode" in f && document.activeElement !== $("mode")) $("mode").value = s.mode;
  if ("mode" in f) $("variation-label").hidden = !(s.mode === "vary" && info.variation_range);
  if ("variation" in f && s.variation !== null && document.activeElement !== $("variation")) setSlider("variation", s.variation);
  if ("lock" in f) {
    $("lock-now").textContent = s.lock || "";
    if (document.activeElement !== $("lock")) $("lock").value = s.lock ? lockValue(s.lock) : "off";
  }
  if ("recording" in f) {
    $("recording").textContent = s.recording ? "recording to " + s.recording : "not recording";
    $("record").classList.toggle("on", !!s.recording);
    $("record").textContent = s.recording ? "stop recording" : "record";
  }
  if ("warnings" in f) $("warnings").innerHTML = s.warnings.map((w) => `<li>${escapeHtml(w)}</li>`).join("");
}

function lockValue(lock) {  // the engine names a lock "G major"; the select's values are tonics
  const i = NAMES.findIndex((n) => lock.startsWith(n + " ") || lock === n);
  return i >= 0 ? String(i) : "off";
}

function setSlider(id, v) { $(id).value = v; $(id + "-out").textContent = Number(v).toFixed(2); }

function drawLive(stamp) {
  requestAnimationFrame(drawLive);
  if (stamp - live.drawn < DRAW_EVERY_MS) return;
  live.drawn = stamp;
  const now = serverNow();
  const calls = (live.state.past_calls || []).concat(live.state.call || []);
  const notes = calls.map((n) => [n[0], n[1], n[2], 0, 0]);
  for (const n of live.notes.values()) notes.push([n.on, n.off, n.pitch, n.vel, 1]);
  drawRoll($("roll"), notes, now - WINDOW_S, now + AHEAD_S, now);
}

function send(cmd) {
  if (live.ws && live.ws.readyState === WebSocket.OPEN) live.ws.send(JSON.stringify(cmd));
}

function setupControls() {
  const ranges = { temperature: info.temperature_range, length: info.length_range, complexity: info.complexity_range };
  for (const [id, [lo, hi]] of Object.entries(ranges)) {  // a slider sends its command when let go
    Object.assign($(id), { min: lo, max: hi });
    $(id).oninput = () => { $(id + "-out").textContent = Number($(id).value).toFixed(2); };
    $(id).onchange = () => send({ type: id, value: Number($(id).value) });
  }
  if (info.variation_range) {
    Object.assign($("variation"), { min: info.variation_range[0], max: info.variation_range[1] });
    $("variation").oninput = () => { $("variation-out").textContent = Number($("variation").value).toFixed(2); };
    $("variation").onchange = () => send({ type: "variation", value: Number($("variation").value) });
  }
  $("mode").innerHTML = info.modes.map((m) => `<option>${m}</option>`).join("");
  $("mode").onchange = () => send({ type: "mode", value: $("mode").value });
  $("lock").innerHTML = '<option value="off">off</option><option value="call">the call\'s key</option>'
    + NAMES.map((n, i) => `<option value="${i}">${n} major</option>`).join("");
  $("lock").onchange = () => {
    const v = $("lock").value;
    send({ type: "lock", value: v === "off" ? null : v === "call" ? "call" : Number(v) });
  };
  $("record").onclick = () => send({ type: "record" });
  $("panic").onclick = () => { send({ type: "panic" }); silenceAll(); };
  for (const id of ["sound", "sound-player"]) {
    $(id).onchange = () => {
      if ($(id).checked) {
        live.audio = live.audio || new AudioContext();
        live.audio.resume();
      } else if (id === "sound") silenceAll(); else silenceKeys();
    };
  }
}

// ---- WebAudio: the answers on the AudioContext clock --------------------------------------------

function playNote(n) {
  const ctx = live.audio;
  if (!ctx || !$("sound").checked) return;
  // The note's due time on the server's clock → AudioContext time, through our clock.
  const start = ctx.currentTime + (n.on - serverNow()) + AUDIO_DELAY_S;
  const end = ctx.currentTime + (n.off - serverNow()) + AUDIO_DELAY_S;
  if (end <= ctx.currentTime) return;
  const osc = ctx.createOscillator(), gain = ctx.createGain();
  osc.type = "triangle";
  osc.frequency.value = 440 * Math.pow(2, (n.pitch - 69) / 12);
  const t0 = Math.max(start, ctx.currentTime), peak = 0.25 * (n.vel || 80) / 127;
  gain.gain.setValueAtTime(0, t0);
  gain.gain.linearRampToValueAtTime(peak, t0 + 0.01);
  gain.gain.exponentialRampToValueAtTime(peak * 0.4, t0 + 0.3);
  gain.gain.setValueAtTime(peak * 0.4, Math.max(t0 + 0.02, end));
  gain.gain.linearRampToValueAtTime(0, Math.max(t0 + 0.02, end) + 0.08);
  osc.connect(gain).connect(ctx.destination);
  osc.start(t0);
  osc.stop(Math.max(t0 + 0.02, end) + 0.1);
  live.voices.set(n.id, { osc, start: t0 });
  live.played += 1;
  osc.onended = () => live.voices.delete(n.id);
}

function cancelUnqueued(queued) {  // an answer cut short (barge-in, panic): its future notes go too
  const now = live.audio.currentTime;
  for (const [id, v] of live.voices) if (v.start > now && !queued.has(id)) { v.osc.stop(); live.voices.delete(id); }
}

function silenceAll() {
  for (const v of live.voices.values()) { try { v.osc.stop(); } catch (e) { /* not started yet */ } }
  live.voices.clear();
  silenceKeys();
}

// The player's own notes: known only once played (the feed's frames, ≤ 10 a second), so they cannot
// be scheduled ahead like the answers: each sounds on arrival, up to a frame late, until its note-off.
function playPlayer([, , pitch, vel, ch]) {
  const ctx = live.audio, key = ch * 128 + pitch;
  if (!ctx || !$("sound-player").checked) return;
  const held = live.keys.get(key);
  if (held) {  // a note-off, or the same key struck again: the sounding one is released
    held.gain.gain.cancelScheduledValues(ctx.currentTime);
    held.gain.gain.setTargetAtTime(0, ctx.currentTime, 0.03);
    try { held.osc.stop(ctx.currentTime + 0.2); } catch (e) { /* ended on its own */ }
    live.keys.delete(key);
  }
  if (!vel) return;
  const osc = ctx.createOscillator(), gain = ctx.createGain();
  osc.type = "sine";
  osc.frequency.value = 440 * Math.pow(2, (pitch - 69) / 12);
  const t0 = ctx.currentTime, peak = 0.3 * vel / 127;
  gain.gain.setValueAtTime(0, t0);
  gain.gain.linearRampToValueAtTime(peak, t0 + 0.01);
  gain.gain.exponentialRampToValueAtTime(peak * 0.3, t0 + 0.6);
  osc.connect(gain).connect(ctx.destination);
  osc.start(t0);
  osc.stop(t0 + 8);  // a lost note-off still ends
  live.keys.set(key, { osc, gain });
  live.playerPlayed += 1;
}

function silenceKeys() {
  for (const v of live.keys.values()) { try { v.osc.stop(); } catch (e) { /* already ended */ } }
  live.keys.clear();
}

// ---- sessions -----------------------------------------------------------------------------------

async function loadSessions() {
  const data = await api("/api/sessions");
  $("folder").textContent = "recordings in " + data.folder;
  $("session-list").tBodies[0].innerHTML = data.sessions.map((s) =>
    `<tr data-id="${escapeHtml(s.id)}"><td>${escapeHtml(s.id)}</td><td>${s.date.replace("T", " ")}</td>`
    + `<td>${s.error ? "unreadable" : s.seconds.toFixed(1) + " s"}</td><td>${s.calls}</td><td>${s.answers}</td></tr>`).join("");
  for (const tr of $("session-list").tBodies[0].rows) tr.onclick = () => openSession(tr.dataset.id, tr);
  const recordings = '<option value="">none</option>'
    + data.sessions.map((s) => `<option>${escapeHtml(s.id)}</option>`).join("");
  $("gen-recording").innerHTML = recordings;
  $("morph-recording").innerHTML = recordings;
}

async function openSession(id, row) {
  for (const tr of $("session-list").tBodies[0].rows) tr.classList.toggle("sel", tr === row);
  const base = "/api/sessions/" + encodeURIComponent(id);
  const s = await api(base);
  $("session-detail").hidden = false;
  $("session-title").textContent = `${id} — ${s.seconds.toFixed(1)} s, ${s.calls} calls, ${s.answers} answers`;
  showPiece("session", base, s.notes, id);
}

function showPiece(prefix, base, notes, name) {
  const end = rollEnd(notes);
  const audio = $(prefix + "-audio");
  const draw = () => drawRoll($(prefix + "-roll"), notes, 0, end, audio.currentTime || null);
  audio.ontimeupdate = draw;
  draw();
  if (info.fluidsynth) { audio.hidden = false; audio.preload = "auto"; audio.src = base + "/audio"; audio.load(); }
  else audio.hidden = true;
  $(prefix + "-links").innerHTML = `<a href="${base}/midi" download="${escapeHtml(name)}.mid">download .mid</a>`
    + ` <a href="${base}/musicxml" download="${escapeHtml(name)}.musicxml">score (MusicXML)</a>`
    + (info.lilypond ? ` <a href="#" id="${prefix}-show-score">show score</a>` : "");
  $(prefix + "-score").innerHTML = "";
  const show = $(prefix + "-show-score");
  if (show) show.onclick = (ev) => { ev.preventDefault(); $(prefix + "-score").innerHTML = `<img alt="score" src="${base}/svg">`; };
}

// ---- generate -----------------------------------------------------------------------------------

let primerId = null, morphId = null;

async function uploadPrimer(input, said) {  // a MIDI file → its id on the server (checked there), or null
  const file = input.files[0];
  if (!file) return null;
  if (file.size > info.upload_limit) { said.textContent = `the file is over ${info.upload_limit} bytes`; return null; }
  try {
    const p = await api("/api/primers", { method: "POST", body: file, headers: { "content-type": "audio/midi" } });
    said.textContent = `primer: ${p.notes} notes, ${p.seconds} s`;
    return p.id;
  } catch (e) { said.textContent = "⚠ " + e.message; return null; }
}

function primerOf(id, select) {  // the request's primer: an upload's id, else a recording's
  return id ? { primer: id } : select.value ? { recording: select.value } : {};
}

async function post(path, req, what) {  // a generation, variation or morph → the result area
  $("gen-said").textContent = what + "…";
  try {
    const r = await api(path, { method: "POST", body: JSON.stringify(req), headers: { "content-type": "application/json" } });
    const phrases = r.phrases ? `, ${r.phrases.length} phrases` : "";
    $("gen-said").textContent = `${r.tokens} tokens at ${r.bpm} bpm${phrases}` + (r.note ? ` (${r.note})` : "");
    $("gen-result").hidden = false;
    showPiece("gen", "/api/results/" + r.id, r.notes, "liveduet-" + r.id);
  } catch (e) { $("gen-said").textContent = "⚠ " + e.message; }
}

async function setupGenerate() {
  if (!info.generate) { $("generate-off").hidden = false; $("gen-form").hidden = true; return; }
  const data = await api("/api/models");
  const family = (f) => data.models.filter((m) => (data.families || {})[m] === f);
  const options = (names) => names.map((m) => `<option>${escapeHtml(m)}</option>`).join("");
  $("gen-model").innerHTML = options(family("lm"));
  $("gen-primer").onchange = async () => { primerId = await uploadPrimer($("gen-primer"), $("gen-said")); };
  $("gen-form").onsubmit = (ev) => {
    ev.preventDefault();
    post("/api/generate", { model: $("gen-model").value, temperature: Number($("gen-temperature").value),
      top_p: Number($("gen-top-p").value), tokens: Number($("gen-tokens").value), bpm: Number($("gen-bpm").value),
      complexity: Number($("gen-complexity").value), seed: Number($("gen-seed").value),
      ...primerOf(primerId, $("gen-recording")) }, "generating");
  };
  // Vary and morph: any exported VAE folder among the models (liveduet vary / morph's own functions).
  if (!family("vae").length) return;
  $("vae-form").hidden = false;
  $("vae-model").innerHTML = options(family("vae"));
  $("morph-primer").onchange = async () => { morphId = await uploadPrimer($("morph-primer"), $("gen-said")); };
  $("vary-go").onclick = () => post("/api/vary", { vae: $("vae-model").value, sigma: Number($("vae-sigma").value),
    n: Number($("vae-n").value), seed: Number($("vae-seed").value), ...primerOf(primerId, $("gen-recording")) },
  "varying");
  $("morph-go").onclick = () => post("/api/morph", { vae: $("vae-model").value, steps: Number($("vae-steps").value),
    a: primerOf(primerId, $("gen-recording")), b: primerOf(morphId, $("morph-recording")) }, "morphing");
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

async function main() {
  info = await api("/api/info");
  for (const b of document.querySelectorAll("nav .tab")) b.onclick = () => showTab(b.dataset.tab);
  $("live-off").hidden = info.live;
  $("live-on").hidden = !info.live;
  setupControls();
  if (info.live) { connectLive(); requestAnimationFrame(drawLive); }
  await setupGenerate();
  showTab((location.hash || "").slice(1) || (info.live ? "live" : "sessions"));
  loadSessions().catch(() => {});
}

main().catch((e) => { $("status").textContent = "⚠ " + e.message; });
