"""The report's HTML: one self-contained ``index.html`` (styles and script inlined from ``assets/``,
pictures in ``img/`` beside it, nothing from the network)."""
from __future__ import annotations

from html import escape
from pathlib import Path

from ..jobs.store import ITEM_STATUSES
from ..media.fields import FieldPlan
from .collect import Chunk, PhotoCard, ShotView, Summary, VideoView
from .pictures import Pair

ASSETS = Path(__file__).resolve().parent / "assets"
GENERATOR = '<meta name="generator" content="archive-restore report">'  # marks a folder the report may rewrite
SOURCE_WORDS = {
    "faces": "its own faces", "folder": "its folder's faces", "job": "the whole job's faces",
    "neighbour": "a nearby shot's faces", "blind": "the picture itself (blind, no usable face)",
}


def page(title: str, summary: Summary, body: str) -> str:
    css, js = (ASSETS / "report.css").read_text(), (ASSETS / "report.js").read_text()
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{GENERATOR}'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,"><title>{escape(title)}</title>\n<style>\n{css}</style></head>\n'
            f'<body><header><h1>{escape(title)}</h1>{_note(summary.note)}{summary_html(summary)}</header>\n'
            f'<main>{body}</main>\n<script>\n{js}</script></body></html>\n')


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>' if text else ""


# ------------------------------------------------------------------------------------ summary
def summary_html(s: Summary) -> str:
    job = s.job
    rows = [("input", f"<code>{escape(job.input)}</code>"), ("output", f"<code>{escape(job.output)}</code>"),
            ("job", (f"<code>{job.id}</code> ({job.kind}, {escape(job.status)}; "
                     f"archive-restore {escape(job.version)})")),
            ("items", _chips(s.counts)),
            ("time", (f"created {escape(job.created)}; finished {escape(job.finished or 'not yet')}; "
                      f"{s.item_seconds:.1f} s of work on the items")),
            ("device", _devices(s.runs)), ("upscaler", _upscaler(job.options)),
            ("codes from", _sources(s.code_sources, s.face_codes)), ("options", _options(job.options)),
            ("networks", _networks(s.runs))]
    body = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows)
    return f'<section class="summary" id="summary"><table>{body}</table></section>'


def _chips(counts: dict[str, int]) -> str:
    chips = "".join(f'<button class="chip" type="button" data-filter="{k}" aria-pressed="false">'
                    f'<span class="status {k}">{k}</span> <span class="count" data-count="{k}">{v}</span></button>'
                    for k, v in counts.items() if k in ITEM_STATUSES and v)
    total = sum(counts.values())
    return f'<div class="chips">{chips}<span class="note">{total} in all; click one to show only those</span></div>'


def _devices(runs: list[dict]) -> str:
    if not runs:
        return "not recorded (the job ran before this version recorded its runs)"
    last = runs[-1]
    seen = sorted({r["device"] for r in runs})
    earlier = f"; {len(runs)} runs, on {', '.join(seen)}" if len(runs) > 1 else ""
    return f"{escape(last['device'])} (torch {escape(last.get('torch', '?'))}, last run {escape(last['finished'])}{earlier})"


def _upscaler(options: dict) -> str:
    path = options.get("upscaler")
    if not path or path == "condsr":
        return "none: CondSR alone (no cleanup stage)"
    sha = escape(str(options.get("upscaler_sha256")))
    return f"{escape(Path(path).stem)} <code>{escape(path)}</code> sha256 <code>{sha}</code>; fidelity {options.get('fidelity')}"


def _sources(sources: dict[str, int], face_codes: dict[str, int]) -> str:
    if not sources:
        return "no codes yet"
    parts = [f"{escape(SOURCE_WORDS.get(k, k))}: {v}" for k, v in sorted(sources.items(), key=lambda kv: -kv[1])]
    kinds = "; ".join(f"{k} face codes: {v} photos" for k, v in face_codes.items())
    return "; ".join(parts) + (f" ({escape(kinds)})" if kinds else "")


def _options(options: dict) -> str:
    shown = {k: v for k, v in options.items() if k not in ("upscaler", "upscaler_sha256", "fidelity")}
    return ", ".join(f"{escape(k)} {escape(str(v))}" for k, v in sorted(shown.items()))


def _networks(runs: list[dict]) -> str:
    if not runs:
        return "not recorded"
    rows = "".join(f"<tr><td>{escape(n['role'])}</td><td><code>{escape(Path(n['file']).name)}</code></td>"
                   f"<td><code>{escape(n['sha256'])}</code></td></tr>" for n in runs[-1]["networks"])
    detector = escape(runs[-1].get("detector", "?"))
    return (f'<table class="networks"><tr><th>role</th><th>file</th><th>sha256</th></tr>{rows}</table>'
            f'<span class="note">face detector: {detector} (as of the last run)</span>')


# ------------------------------------------------------------------------------------- photos
def photos_html(cards: list[PhotoCard]) -> str:
    return f'<h2>Photos</h2><div class="cards" id="items">{"".join(card_html(c) for c in cards)}</div>'


def card_html(card: PhotoCard) -> str:
    parts = [f'<h3>{escape(card.key)} <span class="status {card.status}">{card.status}</span></h3>']
    if card.pair is not None:
        parts.append(compare_html(card.pair, card.key))
        parts.append(_crops(card.pair))
    elif card.picture is not None:
        src, w, h = card.picture
        parts.append(f'<div class="input-only"><img src="{escape(src)}" width="{w}" height="{h}" loading="lazy" '
                     f'alt="the input {escape(card.key)}"></div>')
    if card.reason:
        parts.append(f'<p class="reason">{escape(card.reason)}</p>')
    details = list(card.details)
    if card.code_source:
        details.insert(0, f"code from {SOURCE_WORDS.get(card.code_source, card.code_source)}")
    if card.pair is not None and card.pair.faces:
        details.append(f"{len(card.pair.faces)} face box{'es' if len(card.pair.faces) != 1 else ''} drawn")
    if details:
        parts.append('<ul class="details">' + "".join(f"<li>{escape(d)}</li>" for d in details) + "</ul>")
    return (f'<article class="card" data-key="{escape(card.key)}" data-status="{card.status}">'
            f'{"".join(parts)}</article>')


def compare_html(pair: Pair, label: str) -> str:
    """The before/after slider: the restored picture with the input (bicubic) over it, clipped at
    the slider's position; face boxes on top; and, when the job kept a repair mask, its overlay with a
    "show repairs" box below (``_repairs``)."""
    faces = "".join(f'<div class="face" style="left:{x * 100:.2f}%;top:{y * 100:.2f}%;width:{w * 100:.2f}%;'
                    f'height:{h * 100:.2f}%"></div>' for x, y, w, h in pair.faces)
    overlay, toggle = _repairs(pair, label)
    return (f'<div class="compare" style="aspect-ratio:{pair.width}/{pair.height}">'
            f'<img class="after" src="{escape(pair.after)}" width="{pair.width}" height="{pair.height}" '
            f'loading="lazy" alt="restored: {escape(label)}">'
            f'<img class="before" src="{escape(pair.before)}" width="{pair.width}" height="{pair.height}" '
            f'loading="lazy" alt="input enlarged by bicubic: {escape(label)}">{overlay}{faces}'
            f'<input class="slider" type="range" min="0" max="100" value="50" step="0.5" '
            f'aria-label="before and after: {escape(label)}"><div class="divider"></div>'
            f'<span class="label left">input, bicubic</span><span class="label right">restored</span></div>{toggle}')


def _repairs(pair: Pair, label: str) -> tuple[str, str]:
    """(the overlay of what was repaired, hidden until shown; the box that shows it), or nothing without a
    mask. Not lazy: a hidden lazy picture would not load until shown."""
    if pair.repairs is None:
        return "", ""
    overlay = (f'<img class="repairs" src="{escape(pair.repairs)}" width="{pair.width}" height="{pair.height}" '
               f'alt="scratches, cracks and dust repaired: {escape(label)}">')
    toggle = ('<label class="repairs-toggle"><input class="show-repairs" type="checkbox"> show repairs '
              '<span class="note">(scratches, cracks and dust found and filled, in magenta)</span></label>')
    return overlay, toggle


def _crops(pair: Pair) -> str:
    if pair.crop_after is None:
        return ""
    x, y, side = pair.crop_box
    return (f'<div class="crops"><figure><img src="{escape(pair.crop_before)}" width="{side}" height="{side}" '
            f'loading="lazy" alt="detail, input enlarged by bicubic"><figcaption>input, bicubic</figcaption></figure>'
            f'<figure><img src="{escape(pair.crop_after)}" width="{side}" height="{side}" loading="lazy" '
            f'alt="detail, restored, 1:1"><figcaption>restored, 1:1 at ({x}, {y}): its most detailed '
            f'{side}x{side}</figcaption></figure></div>')


# -------------------------------------------------------------------------------------- video
def video_html(view: VideoView) -> str:
    parts = ["<h2>Video</h2>", _analysis(view)]
    parts += [shot_html(shot) for shot in view.shots]
    if view.finish is not None:
        f = view.finish
        what = f"frames joined: {f.extra['frames']}" if "frames" in f.extra else ""
        reason = f' <span class="reason">{escape(view.finish_reason)}</span>' if view.finish_reason else ""
        parts.append(f'<div class="row" data-key="finish" data-status="{f.status}"><strong>finish</strong> '
                     f'<span class="status {f.status}">{f.status}</span> joins the segments and copies the audio '
                     f'{escape(what)}{reason}</div>')
    return "".join(parts)


def _analysis(view: VideoView) -> str:
    a = view.analysis
    if a is None:
        return '<p class="note">not analysed yet</p>'
    x = a.extra
    found = (f"{x['frames']} frames, {x['shots']} shots, {x['tracks']} face tracks, in {x['seconds']} s "
             f"({x['fps']} frames/s); {x.get('video', '')}") if "frames" in x else ""
    fields = FieldPlan.from_dict(x.get("fields"))
    found += f"; {fields.summary()}" if fields.worth_saying else ""
    reason = f' <span class="reason">{escape(view.analysis_reason)}</span>' if view.analysis_reason else ""
    return (f'<div class="row" data-key="analysis" data-status="{a.status}"><strong>analysis</strong> '
            f'<span class="status {a.status}">{a.status}</span> {escape(found)}{reason}</div>')


def shot_html(shot: ShotView) -> str:
    end = shot.start_frame + shot.frames - 1
    head = (f'<h3>Shot {shot.index}: frames {shot.start_frame}-{end} ({shot.frames} frames)</h3>'
            f'<p>face tracks: {shot.tracks}; code from {escape(SOURCE_WORDS.get(shot.code_source, shot.code_source))}'
            f' ({escape(shot.code_detail)}, confidence {shot.confidence})</p>')
    pairs = "".join(f'<figure class="pair">{compare_html(p, caption)}<figcaption>{escape(caption)}'
                    f'{_faces_note(p)}</figcaption></figure>' for caption, p in shot.pairs)
    missing = f'<p class="note">{escape(shot.missing)}</p>' if shot.missing else ""
    return (f'<section class="shot" data-shot="{shot.index}">{head}<div class="pairs">{pairs}</div>{missing}'
            f'{chunks_html(shot.chunks)}</section>')


def _faces_note(pair: Pair) -> str:
    return f"; {len(pair.faces)} face box{'es' if len(pair.faces) != 1 else ''}" if pair.faces else ""


def chunks_html(chunks: list[Chunk]) -> str:
    longest = max((c.render_seconds or 0 for c in chunks), default=0) or 1
    rows = []
    for c in chunks:
        seconds = "" if c.render_seconds is None else f"{c.render_seconds:.2f} s"
        width = 0 if c.render_seconds is None else 80 * c.render_seconds / longest
        bar = "" if c.render_seconds is None else f'<span class="bar" style="width:{width:.0f}px"></span>'
        fps = "" if c.render_fps is None else f"{c.render_fps}"
        pasted = "" if c.faces_pasted is None else str(c.faces_pasted)
        pasted += "" if c.dirt_percent is None else f"; dirt repaired on {c.dirt_percent} %"
        rows.append(f'<tr data-key="{escape(c.key)}" data-status="{c.status}"><td>{escape(c.key)}</td>'
                    f'<td>{c.start_frame}-{c.start_frame + c.frames - 1}</td>'
                    f'<td><span class="status {c.status}">{c.status}</span></td><td>{bar} {seconds}</td><td>{fps}</td>'
                    f'<td>{pasted}</td><td>{escape(c.reason or "")}</td></tr>')
    return ('<table class="chunks"><tr><th>chunk</th><th>frames</th><th>status</th><th>render time</th>'
            f'<th>frames/s</th><th>faces pasted</th><th>reason</th></tr>{"".join(rows)}</table>')
