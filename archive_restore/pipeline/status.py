"""What ``status`` prints of a job's items: a photo job's counts and photos, a video job's analysis,
chunks and finish. Kept apart from the pipelines so that ``status`` answers without loading torch
(a photo job of 100,000 photos in well under a second)."""
from __future__ import annotations

from ..jobs.store import DONE, FAILED, PENDING, RUNNING, SKIPPED, Item, Job, JobStore
from ..media.fields import FieldPlan

ANALYSIS, FINISH = "analysis", "finish"  # a video job's first and last items (pipeline.video)


LISTED = 200  # photos `status` lists without --all (those not done first): a job of 100,000 answers at once


def photo_lines(store: JobStore, job: Job, every: bool = False) -> list[str]:
    """``status``'s lines for a photo job: the counts, then every photo (``every``, or a job of at most
    ``LISTED``), else ``LISTED`` of them, failed, running, pending and skipped before done."""
    counts = store.summary(job.id)
    total = sum(counts.values())
    lines = ["items: " + (", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none")]
    if every or total <= LISTED:
        shown = store.items(job.id)
    else:
        shown = []
        for status in (FAILED, RUNNING, PENDING, SKIPPED, DONE):
            if len(shown) < LISTED:
                shown += store.items(job.id, status=status, limit=LISTED - len(shown))
    lines += [_status_line(item) for item in shown]
    if len(shown) < total:
        lines.append(f"  ... and {total - len(shown)} more; `archive-restore status {job.id[:12]} --all` lists every "
                     "photo")
    return lines


def _status_line(item: Item) -> str:
    faces = "" if item.faces is None else f" faces={item.faces}"
    source = f" code={item.code_source}" if item.code_source else ""
    error = f"  {item.error}" if item.error else ""
    gone = "  (the photo is gone from the input; its output is kept)" if item.extra.get("gone") else ""
    repaired = f" damage repaired on {item.extra['defect_percent']} % of it" if item.extra.get("defect_percent") else ""
    return f"  {item.status:<8} {item.key}{faces}{source}{repaired}{error}{gone}"


def video_lines(items: list[Item]) -> list[str]:
    """``status`` lines for a video job: the analysis, each shot with its chunks, the finish."""
    lines = []
    for item in items:
        x, error = item.extra, f"  {item.error}" if item.error else ""
        if item.key == ANALYSIS:
            found = (f" {x['frames']} frames, {x['shots']} shots, {x['tracks']} face tracks, "
                     f"{x['fps']} frames/s") if "frames" in x else ""
            found += f", {x['frames_lost']} frames lost to damage" if x.get("frames_lost") else ""
            fields = FieldPlan.from_dict(x.get("fields"))
            if fields.worth_saying:
                found += f"; {fields.summary()}"
            lines.append(f"  {item.status:<8} analysis{found}{error}")
        elif item.key == FINISH:
            lines.append(f"  {item.status:<8} finish{error}")
        else:
            end = x["start_frame"] + x["frames"]
            render = f" {x['render_fps']} frames/s" if "render_fps" in x else ""
            render += f", dirt removed from {x['dirt_percent']} % of the pixels" if "dirt_percent" in x else ""
            lines.append(f"  {item.status:<8} {item.key} shot {x['shot']} frames {x['start_frame']}-{end - 1}"
                         f" faces={x['tracks']} code={x['code_source']} ({x['code_detail']}, confidence "
                         f"{x['confidence']}){render}{error}")
    return lines
