"""``archive-restore bench soak``: a photo job killed again and again loses nothing and redoes little.

Small photos are made (seeded noise, in a few sub-folders, PNG and JPEG) and restored twice by the
real ``archive-restore run`` in child processes: once uninterrupted (the reference), and once killed
with SIGKILL ``kills`` times at seeded random moments (after a random number of further outputs, plus
a random few milliseconds, so kills land mid-item and sometimes mid-write), then run to the end. The
figures: how many kills landed, how many of them while a temporary file existed, the extra attempts
they cost, and the checks: every photo done once (status done, its output present, at most one
redo per kill), every output byte-identical to the reference's, no temporary file left anywhere.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..errors import ArchiveRestoreError
from .common import output_files

START_TIMEOUT_S = 300.0  # a child's first output waits for torch's import, slow on a loaded machine


@dataclass(frozen=True)
class SoakConfig:
    photos: int = 300
    kills: int = 10
    seed: int = 0
    width: int = 32
    height: int = 24
    models: Sequence[Path] = field(default_factory=tuple)
    progress: bool = True


@dataclass(frozen=True)
class SoakResult:
    photos: int
    kills_asked: int
    kills_landed: int           # the child was still working when killed
    kills_mid_write: int        # ... with a temporary output file present
    extra_attempts: int         # attempts beyond one per photo: work the kills cost
    done_once: bool             # every item done, its output present, at most one redo per landed kill
    identical: int              # outputs byte-identical to the uninterrupted run's
    missing: int                # reference outputs absent after the killed run finished
    unexpected: int             # outputs the reference does not have
    temps_left: int             # temporary files left in the output and job folders
    reference_s: float          # wall time of the uninterrupted run
    killed_total_s: float       # wall time of every killed child plus the finishing run

    @property
    def passed(self) -> bool:
        return (self.done_once and self.identical == self.photos and not self.missing and not self.unexpected
                and not self.temps_left)

    def lines(self) -> list[str]:
        return [
            (f"photos: {self.photos}; kills: {self.kills_landed} of {self.kills_asked} landed while the job ran, "
             f"{self.kills_mid_write} with a temporary output file present"),
            f"extra attempts (work redone because of the kills): {self.extra_attempts}",
            (f"every photo done once: {'yes' if self.done_once else 'NO'}; byte-identical to the uninterrupted run: "
             f"{self.identical}/{self.photos}; missing {self.missing}, unexpected {self.unexpected}; "
             f"temporary files left: {self.temps_left}"),
            (f"wall: uninterrupted {self.reference_s:.1f} s; killed {self.kills_landed} times and finished "
             f"{self.killed_total_s:.1f} s (child start-ups included)"),
            "soak: " + ("passed" if self.passed else "FAILED"),
        ]

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def make_photos(folder: Path, count: int, width: int, height: int, seed: int) -> None:
    """``count`` seeded noise photos in four sub-folders, alternately PNG and JPEG."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        roll = folder / f"roll{index % 4}"
        roll.mkdir(parents=True, exist_ok=True)
        pixels = (rng.random((height, width, 3)) * 255).astype(np.uint8)
        suffix = "png" if index % 2 else "jpg"
        Image.fromarray(pixels).save(roll / f"photo{index:04d}.{suffix}", quality=92)


def temporaries(*folders: Path) -> list[Path]:
    return [p for folder in folders if folder.exists() for p in folder.rglob(".*.tmp*") if p.is_file()]


def _command(inp: Path, out: Path, jobs: Path, models: Sequence[Path]) -> list[str]:
    args = [sys.executable, "-m", "archive_restore", "run", str(inp), "-o", str(out), "--scale", "2",
            "--face-detector", "haar", "--face-restorer", "none", "--upscaler", "condsr", "--jobs-dir", str(jobs)]
    for folder in models:
        args += ["--models-dir", str(folder)]
    return args


def _count(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")) if folder.exists() else 0


def _finish(args: list[str], log: Path) -> float:
    started = time.monotonic()
    with open(log, "ab") as sink:
        code = subprocess.call(args, stdout=sink, stderr=sink)
    if code != 0:
        raise ArchiveRestoreError(f"bench soak: the job ended with exit {code}; its output is in {log}")
    return time.monotonic() - started


def _kill_at(args: list[str], out: Path, jobs: Path, target: int, delay_s: float, log: Path) -> tuple[bool, bool, float]:
    """Start the job and SIGKILL it once ``target`` outputs exist and ``delay_s`` more has passed.
    Returns (landed: the job was still running, mid_write: a temporary file existed, wall seconds)."""
    started = time.monotonic()
    with open(log, "ab") as sink:
        child = subprocess.Popen(args, stdout=sink, stderr=sink)
        try:
            while _count(out) < target and child.poll() is None:
                if time.monotonic() - started > START_TIMEOUT_S:
                    raise ArchiveRestoreError(f"bench soak: the job made no progress in {START_TIMEOUT_S:.0f} s; "
                                              f"see {log}")
                time.sleep(0.002)
            time.sleep(delay_s)
            landed = child.poll() is None
            mid_write = landed and bool(temporaries(out, jobs))
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
    return landed, mid_write, time.monotonic() - started


def run_soak(cfg: SoakConfig, work: Path | None = None) -> SoakResult:
    """The whole soak in ``work`` (a temporary folder by default)."""
    with tempfile.TemporaryDirectory(prefix="archive-restore-soak-") as tmp:
        return _soak(cfg, Path(work) if work is not None else Path(tmp))


def _soak(cfg: SoakConfig, work: Path) -> SoakResult:
    inp, ref, out, log = work / "in", work / "ref", work / "out", work / "children.log"
    make_photos(inp, cfg.photos, cfg.width, cfg.height, cfg.seed)
    rng = np.random.default_rng(cfg.seed + 1)
    reference_s = _finish(_command(inp, ref, work / "ref_jobs", cfg.models), log)
    expected = output_files(ref)
    args = _command(inp, out, work / "jobs", cfg.models)
    landed = mid_write = 0
    killed_s = 0.0
    for _ in tqdm(range(cfg.kills), desc="bench soak", unit="kill", disable=not cfg.progress):
        done = _count(out)
        target = int(rng.integers(done, max(done + 1, cfg.photos * 19 // 20)))  # somewhere in what is left
        hit, during_write, seconds = _kill_at(args, out, work / "jobs", target, float(rng.uniform(0, 0.03)), log)
        landed, mid_write, killed_s = landed + hit, mid_write + during_write, killed_s + seconds
    killed_s += _finish(args, log)
    got = output_files(out)
    items = _items(work / "jobs")
    extra = sum(max(0, i["attempts"] - 1) for i in items)
    done_once = (len(items) == cfg.photos and extra <= landed
                 and all(i["status"] == "done" and Path(i["output"]).is_file() for i in items))
    return SoakResult(
        photos=cfg.photos, kills_asked=cfg.kills, kills_landed=landed, kills_mid_write=mid_write,
        extra_attempts=extra, done_once=done_once,
        identical=sum(got.get(name) == data for name, data in expected.items()),
        missing=len(set(expected) - set(got)), unexpected=len(set(got) - set(expected)),
        temps_left=len(temporaries(out, work / "jobs")), reference_s=round(reference_s, 1),
        killed_total_s=round(killed_s, 1))


def _items(jobs: Path) -> list[dict]:
    """The killed job's items, read from its job store."""
    from ..jobs.store import JobStore

    with JobStore.open(jobs) as store:
        (job,) = store.jobs()
        return [{"status": i.status, "attempts": i.attempts, "output": i.output} for i in store.items(job.id)]


def format_lines(result: SoakResult) -> str:
    return "\n".join(result.lines())

