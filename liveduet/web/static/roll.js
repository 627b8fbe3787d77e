// Piano rolls on a canvas: notes [on s, off s, pitch, velocity?, part] drawn between t0 and t1.
"use strict";
const COLORS = ["#3fc1d9", "#e05cc4"];  // part 0: the player / primer, part 1: liveduet

function drawRoll(canvas, notes, t0, t1, playhead) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.fillStyle = "#0c0d11";
  ctx.fillRect(0, 0, w, h);
  let lo = 127, hi = 0;
  for (const n of notes) { lo = Math.min(lo, n[2]); hi = Math.max(hi, n[2]); }
  if (lo > hi) { lo = 48; hi = 84; }
  lo = Math.max(0, lo - 2); hi = Math.min(127, hi + 2);
  if (hi - lo < 24) { const mid = (hi + lo) / 2; lo = Math.max(0, Math.floor(mid - 12)); hi = lo + 24; }
  const rowH = h / (hi - lo + 1);
  const x = (t) => (t - t0) / (t1 - t0) * w;
  for (let p = lo; p <= hi; p++) {  // black keys a shade darker, C lines for orientation
    const y = h - (p - lo + 1) * rowH;
    if ([1, 3, 6, 8, 10].includes(p % 12)) { ctx.fillStyle = "#101217"; ctx.fillRect(0, y, w, rowH); }
    if (p % 12 === 0) {
      ctx.fillStyle = "#2a2e38"; ctx.fillRect(0, y + rowH - 1, w, 1);
      ctx.fillStyle = "#555"; ctx.font = "10px sans-serif"; ctx.fillText("C" + (p / 12 - 1), 2, y + rowH - 2);
    }
  }
  for (const n of notes) {
    if (n[1] < t0 || n[0] > t1) continue;
    const part = n.length > 4 ? n[4] : 0;
    ctx.fillStyle = COLORS[part] || COLORS[0];
    ctx.globalAlpha = n.length > 3 && n[3] ? 0.45 + 0.55 * n[3] / 127 : 1;
    const x0 = x(n[0]);
    ctx.fillRect(x0, h - (n[2] - lo + 1) * rowH + 1, Math.max(2, x(n[1]) - x0 - 1), Math.max(2, rowH - 2));
  }
  ctx.globalAlpha = 1;
  if (playhead !== undefined && playhead !== null) {
    ctx.fillStyle = "#f0f0f0"; ctx.fillRect(x(playhead), 0, 1, h);
  }
}

function rollEnd(notes) {
  let end = 1;
  for (const n of notes) end = Math.max(end, n[1]);
  return end;
}
