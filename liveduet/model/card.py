"""The model card: one folder's self-description (card.json) and its rendering (card.md).

Helpers in one place: the file checksum the runtime verifies, the Markdown rendering (with the
next-token evaluation, the live listening evaluation and speed), and `update_card`, which adds
fields to an exported card (`evaluate --card`, `evaluate --live --card`) and re-renders it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from liveduet.fsutil import write_atomic


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fmt(value: object, spec: str = "") -> str:
    if value is None:
        return "—"
    return format(value, spec) if spec else str(value)


def render_card(card: dict) -> str:
    """card.json → card.md."""
    m = card["config"]["model"]
    t = card["config"]["train"]
    tr = card.get("training") or {}
    data = card.get("data") or {}
    counts = data.get("counts") or {}
    lines = [
        f"# liveduet model card: {card['name']}",
        "",
        f"A {m['layers']}-layer {m['arch'].upper()} of {m['hidden']} units (embedding {m['embed']}, "
        f"{'tied' if m.get('tie_weights') else 'separate'} output head) over a {card['vocab_size']}-token "
        "vocabulary of factored (pitch set, duration) pairs. It answers a player's phrase one token at a "
        "time with a cached state.",
        "",
        "| | |",
        "|---|---|",
        f"| format | {card['format']} (`{card['file']}`, sha256 `{card['sha256'][:16]}…`) |",
        f"| parameters | {card['params']:,} |",
        f"| file size | {card['size_bytes'] / 1e6:.1f} MB |",
        f"| validation NLL | {_fmt(card.get('val_nll'), '.4f')} nats/token |",
        f"| vocabulary | {card['vocab_size']} tokens, fingerprint `{card['vocab_fingerprint']}` |",
        f"| training time | {_fmt(tr.get('seconds'))} s, {_fmt(tr.get('epochs_done'), '.2f')} epochs "
        f"({_fmt(tr.get('stop_reason'))}), {_fmt(tr.get('steps'))} steps |",
        f"| hardware | {_fmt(tr.get('device'))} × {_fmt(tr.get('world_size'))} process(es), torch "
        f"{_fmt(tr.get('torch'))} |",
        f"| training | seq_len {t['seq_len']}, batch {t['batch']}, {t['optimizer']} lr {t['lr']} "
        f"({t['lr_schedule']}), dropout {m['dropout']}, targets: {t['targets']} positions, seed "
        f"{_fmt(tr.get('seed'))} |",
        "",
        "## Data",
        "",
        f"Folder `{_fmt(data.get('folder'))}`; sources: {', '.join(data.get('sources') or []) or '—'}.",
        f"Transpositions {_fmt((data.get('settings') or {}).get('transpose'))}; "
        f"{_fmt(counts.get('pieces'))} pieces, {_fmt(counts.get('sequences'))} sequences, "
        f"{_fmt(counts.get('train_tokens'))} training / {_fmt(counts.get('val_tokens'))} validation tokens "
        "(validation pieces are held out with all their transpositions).",
        "",
    ]
    ev = card.get("evaluation")
    if card.get("notes"):
        lines += ["## Notes", "", str(card["notes"]), ""]
    lines += ["## Evaluation", ""]
    if ev:
        scored = [(k, ev[k]) for k in ("model", "markov", "unigram") if isinstance(ev.get(k), dict) and "nll" in ev[k]]
        if scored:
            lines += [f"Next-token prediction on {_fmt(scored[0][1].get('tokens'))} held-out tokens "
                      f"(`liveduet evaluate`, data `{_fmt(ev.get('data'))}`):", "",
                      "| predictor | NLL (nats/token) | perplexity | top-1 accuracy |", "|---|---|---|---|"]
            lines += [f"| {k} | {v['nll']:.4f} | {_fmt(v.get('perplexity'), '.2f')} | "
                      f"{_fmt(v.get('accuracy'), '.3f')} |" for k, v in scored]
            lines += ["", "Full output:", ""]
        lines += ["```json", json.dumps(ev, indent=1), "```", ""]
    else:
        lines += ["Not run at export time (`liveduet evaluate --model DIR --data DATA --json`).", ""]
    lines += render_live_evaluation(card.get("live_evaluation"))
    bench = card.get("benchmark")
    if bench:
        lines += ["## Speed", "", "From `benchmarks/bench_model.py` on the machine it was trained on:", "",
                  "```json", json.dumps(bench, indent=1), "```", ""]
    lines += ["## Reproduce", "", "```sh", *card["reproduce"], "```", "",
              f"Exported {card['created']} by liveduet {card['liveduet_version']}; the exported step matches "
              f"the trained model within {card['export_parity_max_abs']:.1e}.", ""]
    return "\n".join(lines)


LIVE_LABELS = {"pc_cosine": "pitch-class cosine", "rhythm_overlap": "rhythm overlap (IOI histograms)",
               "register_gap": "register gap (semitones, lower is closer)", "in_key": "in the call's key",
               "texture_gap": "texture gap (notes per onset)"}


def render_live_evaluation(live: object) -> list[str]:
    """The card's section on listening through the daemon (`liveduet evaluate --live --card`)."""
    if not isinstance(live, dict) or not live.get("runs"):
        return []
    lines = ["## Listening, measured through the daemon", "",
             "`liveduet evaluate --live` plays held-out calls through the daemon's own Session (simulated time, "
             "one session, a simulated player with its own dynamics, articulation and swing) and compares each "
             "answer with its call, next to the composer's own continuation and another piece's. *place*: "
             "0 = no closer to the call than another piece, 1 = as close as the composer.", ""]
    for name, run in live["runs"].items():
        o = run.get("options", {})
        lines += [f"**{name}** — {run['calls_played']} calls of {o.get('beats')} beats at {o.get('bpm')} bpm "
                  f"(data `{run.get('data', '—')}`):", "",
                  "| call → continuation | liveduet | composer | another piece | place |", "|---|---|---|---|---|"]
        for key, row in run["measures"].items():
            cells = ["—" if row[w] is None else f"{row[w]:.3f}" for w in ("answer", "composer", "another")]
            lines.append(f"| {LIVE_LABELS.get(key, key)} | {' | '.join(cells)} | "
                         f"{'—' if row['place'] is None else format(row['place'], '.2f')} |")
        e = run.get("expression", {})
        lines += ["", f"Answered {run['answered']}/{run['calls_played']}; false ends {run['false_ends']}; entry "
                  f"{run['entry_beats_median']} beats after the call's last release (median); velocity contour "
                  f"r = {e.get('velocity_corr_mean')}; swing within 0.05 of the call's: {e.get('swing_within_0.05')}; "
                  f"articulation within 10 %: {e.get('articulation_within_10pct')}.", ""]
    sweep = live.get("sweep")
    if sweep:
        lines += ["Sampling and listening settings, one changed at a time (`benchmarks/bench_listening.py`, "
                  "place on pitch-class cosine / rhythm / register, in-key share):", "",
                  "| setting | pc | rhythm | register | in key | entry | false ends |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['setting']} | {r['place_pc_cosine']:.2f} | {r['place_rhythm']:.2f} | "
                  f"{r['place_register']:.2f} | {r['in_key']:.3f} | {r['entry_beats_median']} | {r['false_ends']:.2f} |"
                  for r in sweep]
        lines.append("")
    if live.get("why"):
        lines += [str(live["why"]), ""]
    return lines


def update_card(model_dir: str | Path, render: Callable[[dict], str] | None = None, **fields: object) -> dict:
    """Add fields (e.g. evaluation=...) to an exported card and re-render card.md (with the
    family's own `render`; the language model's by default)."""
    model_dir = Path(model_dir)
    card = json.loads((model_dir / "card.json").read_text())
    card.update(fields)
    write_atomic(model_dir / "card.json", (json.dumps(card, indent=1) + "\n").encode())
    write_atomic(model_dir / "card.md", (render or render_card)(card).encode())
    return card
