"""The photo job end to end through ``archive-restore run``: bad inputs, metadata, code fallback,
resuming, the job lock, ``status --json``, ``--help`` and usage errors.

Every test drives the real command (click's CliRunner in-process; a real subprocess where a second
process is the point) with the tiny random-weight networks of ``tiny_models`` and tiny images.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import direct_render
import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image, ImageCms

from archive_restore.cli import cli
from archive_restore.codes import blind_code
from archive_restore.jobs.store import DB_NAME
from archive_restore.nets import load_checkpoint
from archive_restore.pipeline.engine import combine
from archive_restore.pipeline.photo import PhotoJob
from archive_restore.weights.folders import MODEL_FILES

SHARED = Path(__file__).resolve().parents[2] / "shared"
OLD_MTIME = 1_000_000_000  # outputs are stamped with this; a rewrite changes it
# The conditioned tiny CondSR's mean change between a job's code and the zero code (measured 12.9 to
# 15.1 levels on the fallback test's photos): far above the 8-bit rounding a correct render differs by.
CODE_SHOWS = 5 / 255


# -------------------------------------------------------------------------------------- helpers

def _run(args: list, jobs: Path, models: Path | None = None, expect: int | None = 0) -> Result:
    """``archive-restore <args> --jobs-dir jobs [--models-dir models]`` in-process."""
    full = [str(a) for a in args] + ["--jobs-dir", str(jobs)]
    if models is not None:
        full += ["--models-dir", str(models)]
    result = CliRunner().invoke(cli, full, catch_exceptions=False)
    if expect is not None:
        assert result.exit_code == expect, f"exit {result.exit_code}\n{result.output}"
    return result


def _restore(inp: Path, out: Path, jobs: Path, models: Path, *extra, expect: int | None = 0) -> Result:
    return _run(["run", inp, "-o", out, "--face-detector", "haar", *extra], jobs, models, expect)


def _job_id(result: Result) -> str:
    match = re.search(r"^job ([0-9a-f]{12}):", result.stdout, re.MULTILINE)
    assert match, result.output
    return match.group(1)


def _status(job_id: str, jobs: Path) -> dict:
    return json.loads(_run(["status", job_id, "--json"], jobs).stdout)


def _items(job_id: str, jobs: Path) -> dict[str, dict]:
    return {item["key"]: item for item in _status(job_id, jobs)["items"]}


def _rgb(rng: np.random.Generator, h: int = 24, w: int = 32) -> np.ndarray:
    return (rng.random((h, w, 3)) * 255).astype(np.uint8)


def _flat(h: int = 40, w: int = 40, level: int = 120) -> np.ndarray:
    """A smooth, faceless photo: a gentle gradient no face detector fires on."""
    ramp = np.linspace(level - 20, level + 20, w, dtype=np.float32)
    return np.repeat(np.broadcast_to(ramp, (h, w))[:, :, None], 3, axis=2).astype(np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _stamp_outputs(out: Path) -> None:
    for path in out.rglob("*"):
        if path.is_file():
            os.utime(path, (OLD_MTIME, OLD_MTIME))


def _mtimes(out: Path) -> dict[str, float]:
    return {p.relative_to(out).as_posix(): p.stat().st_mtime for p in sorted(out.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------- 1. bad-input corpus

def _bad_corpus(root: Path, rng: np.random.Generator) -> None:
    root.mkdir()
    (root / "zero.jpg").write_bytes(b"")
    jpeg = io.BytesIO()
    Image.fromarray(_rgb(rng, 64, 64)).save(jpeg, "JPEG", quality=95)
    (root / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (root / "text.png").write_text("these are my holiday notes, not a PNG\n")
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    (root / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
                                    + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))
    Image.fromarray(_rgb(rng)).convert("CMYK").save(root / "cmyk.jpg", quality=95)
    cv2.imwrite(str(root / "deep.tif"), (rng.random((24, 32, 3)) * 65535).astype(np.uint16))
    Image.fromarray(_rgb(rng)[:, :, 0]).save(root / "gray.png")
    alpha = np.zeros((24, 32), np.uint8)
    alpha[:, 16:] = 255  # left half transparent, right half opaque
    Image.fromarray(np.dstack([_rgb(rng), alpha])).save(root / "rgba.png")
    (root / "notes.txt").write_text("not a photo")
    (root / "later").mkdir()
    Image.fromarray(_rgb(rng)).save(root / "later" / "photo.png")


def test_bad_inputs_fail_one_by_one_and_retry_failed_retries_only_those(tmp_path, tiny_models, rng, monkeypatch):
    inp, out, jobs = tmp_path / "in", tmp_path / "out", tmp_path / "jobs"
    _bad_corpus(inp, rng)

    # The folder later/ vanishes while the job runs: after the walk and the analysis pass found
    # its photo, and before that photo's turn (the first item processed removes it).
    real_process = PhotoJob.process

    def process_removing_a_folder(self, item):
        if item.key == "cmyk.jpg":
            shutil.rmtree(inp / "later")
        return real_process(self, item)

    monkeypatch.setattr(PhotoJob, "process", process_removing_a_folder)
    result = _restore(inp, out, jobs, tiny_models, "--scale", "2", expect=1)
    monkeypatch.undo()
    job_id = _job_id(result)
    items = _items(job_id, jobs)

    expected_failures = {
        "zero.jpg": "empty file (0 bytes)",
        "truncated.jpg": "truncat",
        "text.png": "not a recognised image file",
        "huge.png": "limit of 200,000,000 pixels",
        "later/photo.png": "no such file",
    }
    for key, reason in expected_failures.items():
        assert items[key]["status"] == "failed", items[key]
        error = items[key]["error"]
        assert reason in error.lower() and "\n" not in error, error
        assert f"failed: {key}: " in result.stderr  # the summary names every failure
    assert "refused before decoding" in items["huge.png"]["error"]
    assert "10,000,000,000 pixels" in items["huge.png"]["error"]
    assert items["notes.txt"]["status"] == "skipped" and items["notes.txt"]["error"] == "not an image extension"
    done = {"cmyk.jpg", "deep.tif", "gray.png", "rgba.png"}
    assert {k for k, v in items.items() if v["status"] == "done"} == done
    assert _status(job_id, jobs)["job"]["status"] == "failed"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(done)

    with Image.open(out / "cmyk.jpg") as im:
        assert (im.mode, im.size) == ("RGB", (64, 48))
    deep = cv2.imread(str(out / "deep.tif"), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16 and deep.shape == (48, 64, 3)
    assert len(np.unique(deep)) > 256  # real 16-bit values, not 8-bit ones scaled up
    with Image.open(out / "gray.png") as im:
        assert (im.mode, im.size) == ("L", (64, 48))
    with Image.open(out / "rgba.png") as im:
        assert (im.mode, im.size) == ("RGBA", (64, 48))
        alpha = np.asarray(im)[:, :, 3]
    assert alpha[:, :28].max() <= 8 and alpha[:, 36:].min() >= 247  # resized with the photo, edges kept

    # A plain rerun leaves failures alone; --retry-failed retries exactly those, not the done ones.
    _stamp_outputs(out)
    before = _items(job_id, jobs)
    _restore(inp, out, jobs, tiny_models, "--scale", "2", expect=1)
    assert _items(job_id, jobs) == before

    Image.fromarray(_rgb(rng, 64, 64)).save(inp / "truncated.jpg", quality=95)  # the owner re-scans it
    result = _restore(inp, out, jobs, tiny_models, "--scale", "2", "--retry-failed", expect=1)
    after = _items(job_id, jobs)
    for key in done | {"notes.txt"}:
        assert after[key] == before[key], key  # same attempts, timestamps, code
    assert set(_mtimes(out).values()) == {OLD_MTIME} | {(out / "truncated.jpg").stat().st_mtime}
    assert after["truncated.jpg"]["status"] == "done" and after["truncated.jpg"]["attempts"] == 2
    assert (out / "truncated.jpg").stat().st_mtime != OLD_MTIME
    for key in set(expected_failures) - {"truncated.jpg"}:
        assert after[key]["status"] == "failed" and after[key]["attempts"] == 2, after[key]
    assert "failed: truncated.jpg" not in result.stderr


def test_unreadable_file_fails_and_the_job_goes_on(tmp_path, tiny_models, rng):
    inp, out, jobs = tmp_path / "in", tmp_path / "out", tmp_path / "jobs"
    inp.mkdir()
    Image.fromarray(_rgb(rng)).save(inp / "a_locked.png")
    Image.fromarray(_rgb(rng)).save(inp / "b_fine.png")
    os.chmod(inp / "a_locked.png", 0)
    try:
        if os.access(inp / "a_locked.png", os.R_OK):
            pytest.skip("this user reads files whatever their mode (root)")
        job_id = _job_id(_restore(inp, out, jobs, tiny_models, "--scale", "1", expect=1))
    finally:
        os.chmod(inp / "a_locked.png", 0o644)
    items = _items(job_id, jobs)
    assert items["a_locked.png"]["status"] == "failed"
    assert "permission denied" in items["a_locked.png"]["error"]
    assert items["b_fine.png"]["status"] == "done"


# ------------------------------------------------------------------------ 2. metadata round trip

def _exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Archive Camera Co"  # Make
    exif[0x0131] = "scanner 1.0"  # Software
    return exif.tobytes()


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_orientation_icc_exif_and_size_survive_the_job(tmp_path, tiny_models, scale):
    inp, out, jobs = tmp_path / "in", tmp_path / "out", tmp_path / "jobs"
    inp.mkdir()
    stored = np.zeros((16, 24, 3), np.uint8)  # stored landscape: left half red, right half blue
    stored[:, :12] = (220, 30, 30)
    stored[:, 12:] = (30, 30, 220)
    stored[:4, :] = (30, 200, 30)  # a green top band, so a wrong rotation cannot pass
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(stored).save(inp / "scan.jpg", quality=95, subsampling=0, exif=_exif_bytes(6), icc_profile=icc)
    before = (inp / "scan.jpg").read_bytes()

    _restore(inp, out, jobs, tiny_models, "--scale", str(scale))

    assert (inp / "scan.jpg").read_bytes() == before  # inputs are never modified
    with Image.open(out / "scan.jpg") as im:
        assert im.size == (16 * scale, 24 * scale)  # displayed (portrait) size x scale
        assert im.info.get("icc_profile") == icc
        exif = im.getexif()
        pixels = np.asarray(im.convert("RGB"), np.float32)
    assert exif.get(0x0112, 1) == 1
    assert exif.get(0x010F) == "Archive Camera Co" and exif.get(0x0131) == "scanner 1.0"
    small = cv2.resize(pixels, (16, 24), interpolation=cv2.INTER_AREA)
    displayed = np.rot90(stored, -1).astype(np.float32)  # orientation 6: turn 90 degrees clockwise
    wrong = np.rot90(stored, 1).astype(np.float32)
    right_error, wrong_error = np.abs(small - displayed).mean(), np.abs(small - wrong).mean()
    assert right_error < 25 and wrong_error > 3 * right_error, (right_error, wrong_error)


# -------------------------------------------------------------------------- 3. code fallbacks

def _assert_rendered_with(item: dict, source: Path, models: Path, scale: int) -> None:
    """The item's output is CondSR called directly on its photo with the code the item records,
    and that code shows: the same photo rendered with the zero code is far off."""
    got, rgb = direct_render.pixels(Path(item["output"])), direct_render.pixels(source)
    expected = direct_render.condsr(models, rgb, item["code"], scale)
    assert np.abs(got - expected).max() <= direct_render.EIGHT_BIT, item["key"]
    assert np.abs(got - direct_render.condsr(models, rgb, np.zeros(16), scale)).mean() > CODE_SHOWS, item["key"]


def test_codes_fall_back_from_faces_to_folder_to_job_to_blind(tmp_path, conditioned_models, face_rgb):
    inp, out, jobs = tmp_path / "in", tmp_path / "out", tmp_path / "jobs"
    for folder in ("a", "b", "c"):
        (inp / folder).mkdir(parents=True)
    Image.fromarray(face_rgb).save(inp / "a" / "face.png")
    Image.fromarray(_flat(level=100)).save(inp / "a" / "plain.png")
    Image.fromarray(_flat(level=150)).save(inp / "b" / "plain.png")
    faded = np.ascontiguousarray(face_rgb[:, ::-1]) * np.float32(0.4) + np.float32(150)  # mirrored, faded print
    Image.fromarray(faded.astype(np.uint8)).save(inp / "c" / "face.png")

    job_id = _job_id(_restore(inp, out, jobs, conditioned_models, "--scale", "1"))
    items = _items(job_id, jobs)

    assert {k: v["status"] for k, v in items.items()} == dict.fromkeys(items, "done")
    for key in ("a/face.png", "c/face.png"):
        assert items[key]["code_source"] == "faces" and items[key]["faces"] >= 1, items[key]
    face_a, face_c = (np.array(items[k]["code"]) for k in ("a/face.png", "c/face.png"))
    # The conditioned encoders tell the photos apart (codes of norm ~1.2 differ by ~0.1).
    assert np.abs(face_a - face_c).max() > 0.02
    # a/plain.png: no face, but a face in its folder -> the folder's code.
    assert items["a/plain.png"]["code_source"] == "folder" and items["a/plain.png"]["faces"] == 0
    np.testing.assert_allclose(items["a/plain.png"]["code"], face_a, rtol=0, atol=1e-7)
    # b/plain.png: no face in its folder -> the job's code, from every face in the collection.
    assert items["b/plain.png"]["code_source"] == "job" and items["b/plain.png"]["faces"] == 0
    job_code = combine(np.stack([face_a, face_c]))
    np.testing.assert_allclose(items["b/plain.png"]["code"], job_code, rtol=0, atol=1e-7)
    assert np.abs(job_code - face_a).max() > 0.01 and np.abs(job_code - face_c).max() > 0.01
    for item in items.values():
        assert Path(item["output"]) == out / item["key"] and Path(item["output"]).is_file()
        _assert_rendered_with(item, inp / item["key"], conditioned_models, 1)
    # The folder's and the job's codes are told apart in the pixels: a/plain.png rendered with the
    # job's code is off by more than rounding (measured 1.1 levels at most: the codes differ by ~0.05).
    wrong = direct_render.condsr(conditioned_models, direct_render.pixels(inp / "a/plain.png"), job_code, 1)
    assert np.abs(wrong - direct_render.pixels(out / "a/plain.png")).max() > 0.75 / 255

    # A collection without any face: every photo gets a blind code read from itself.
    faceless, faceless_out = tmp_path / "faceless", tmp_path / "faceless_out"
    (faceless / "x").mkdir(parents=True)
    Image.fromarray(_flat(level=90)).save(faceless / "one.png")
    Image.fromarray(_flat(level=160)).save(faceless / "x" / "two.png")
    blind_items = _items(_job_id(_restore(faceless, faceless_out, jobs, conditioned_models, "--scale", "1")), jobs)
    assert {k: (v["code_source"], v["faces"]) for k, v in blind_items.items()} == {
        "one.png": ("blind", 0), "x/two.png": ("blind", 0)}
    assert np.abs(np.subtract(blind_items["one.png"]["code"], blind_items["x/two.png"]["code"])).max() > 0.01
    blind = load_checkpoint(conditioned_models / MODEL_FILES["blind_encoder"]).model
    for item in blind_items.values():
        rgb = direct_render.pixels(faceless / item["key"])
        own = blind_code(blind, torch.from_numpy(rgb).permute(2, 0, 1)[None])[0].numpy()
        np.testing.assert_allclose(item["code"], own, rtol=0, atol=1e-6)  # float32 stored as JSON floats
        _assert_rendered_with(item, faceless / item["key"], conditioned_models, 1)


# ------------------------------------------------------------------------------- 4. resuming

def _set_status(jobs: Path, job_id: str, key: str, status: str) -> None:
    with sqlite3.connect(jobs / DB_NAME) as conn:
        changed = conn.execute("UPDATE items SET status = ? WHERE job_id = ? AND key = ?", (status, job_id, key))
        assert changed.rowcount == 1


def test_rerun_resumes_without_recomputing_and_restart_redoes_everything(tmp_path, tiny_models, rng):
    inp, out, jobs = tmp_path / "in", tmp_path / "out", tmp_path / "jobs"
    (inp / "sub").mkdir(parents=True)
    for key in ("one.png", "two.jpg", "sub/three.png"):
        Image.fromarray(_rgb(rng)).save(inp / key)
    job_id = _job_id(_restore(inp, out, jobs, tiny_models, "--scale", "2"))
    _stamp_outputs(out)
    first = _items(job_id, jobs)
    assert {k: (v["status"], v["attempts"]) for k, v in first.items()} == dict.fromkeys(first, ("done", 1))

    # The same command again: nothing to do, nothing rewritten, the same job.
    assert _job_id(_restore(inp, out, jobs, tiny_models, "--scale", "2")) == job_id
    assert _items(job_id, jobs) == first
    assert set(_mtimes(out).values()) == {OLD_MTIME}

    # A new photo: only that one is processed (here through `resume JOB`).
    Image.fromarray(_rgb(rng)).save(inp / "sub" / "four.png")
    _run(["resume", job_id], jobs, tiny_models)
    second = _items(job_id, jobs)
    assert {k: second[k] for k in first} == first
    assert second["sub/four.png"]["status"] == "done" and second["sub/four.png"]["attempts"] == 1
    with Image.open(out / "sub" / "four.png") as im:
        assert im.size == (64, 48)  # resumed with the job's own options (--scale 2), not the defaults
    mtimes = _mtimes(out)
    assert mtimes.pop("sub/four.png") != OLD_MTIME and set(mtimes.values()) == {OLD_MTIME}

    # A row left `running` (its worker died) is redone; nothing else is.
    _stamp_outputs(out)
    _set_status(jobs, job_id, "two.jpg", "running")
    _restore(inp, out, jobs, tiny_models, "--scale", "2")
    third = _items(job_id, jobs)
    assert third["two.jpg"]["status"] == "done" and third["two.jpg"]["attempts"] == 2
    assert third["two.jpg"]["finished"] > second["two.jpg"]["finished"]
    assert {k: third[k] for k in second if k != "two.jpg"} == {k: second[k] for k in second if k != "two.jpg"}
    mtimes = _mtimes(out)
    assert mtimes.pop("two.jpg") != OLD_MTIME and set(mtimes.values()) == {OLD_MTIME}

    # --restart: every photo redone.
    _stamp_outputs(out)
    _restore(inp, out, jobs, tiny_models, "--scale", "2", "--restart")
    fourth = _items(job_id, jobs)
    assert all(v["status"] == "done" and v["attempts"] == 1 for v in fourth.values())
    assert all(fourth[k]["finished"] > third[k]["finished"] for k in fourth)
    assert OLD_MTIME not in set(_mtimes(out).values())
    assert fourth["one.png"]["code"] == third["one.png"]["code"]  # same inputs, same results


# ---------------------------------------------------------------------------------- 5. the lock

_HOLD_LOCK = """
import sys
from archive_restore.jobs.store import JobStore
with JobStore.open(sys.argv[1]) as store, store.lock(sys.argv[2]):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_second_run_of_a_held_job_is_refused_while_status_works(tmp_path, tiny_models, rng):
    inp, out, jobs = tmp_path / "in", tmp_path / "out", tmp_path / "jobs"
    inp.mkdir()
    Image.fromarray(_rgb(rng)).save(inp / "one.png")
    job_id = _job_id(_restore(inp, out, jobs, tiny_models, "--scale", "1"))
    Image.fromarray(_rgb(rng)).save(inp / "two.png")

    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(jobs), job_id], cwd=tmp_path,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        refused = _restore(inp, out, jobs, tiny_models, "--scale", "1", expect=None)
        assert refused.exit_code != 0
        assert f"job {job_id} is already being worked on by process {holder.pid}" in refused.stderr
        assert not (out / "two.png").exists()

        status = _status(job_id, jobs)
        assert status["locked_by"] == holder.pid
        assert [i["key"] for i in status["items"]] == ["one.png"]  # the refused run added nothing
        assert f"being worked on by process {holder.pid}" in _run(["status", job_id], jobs).stdout
        assert job_id in _run(["jobs"], jobs).stdout
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert _status(job_id, jobs)["locked_by"] is None
    _restore(inp, out, jobs, tiny_models, "--scale", "1")
    assert (out / "two.png").is_file()


# ------------------------------------------------------------------ 7. status --json and --help

def test_status_json_describes_the_job_and_every_item(tmp_path, tiny_models, rng):
    inp, out, jobs = tmp_path / "in", tmp_path / "out", tmp_path / "jobs"
    inp.mkdir()
    Image.fromarray(_rgb(rng)).save(inp / "good.png")
    (inp / "bad.jpg").write_bytes(b"")
    (inp / "readme.md").write_text("scanned 1974")
    job_id = _job_id(_restore(inp, out, jobs, tiny_models, "--scale", "2", expect=1))

    data = _status(job_id[:6], jobs)  # a unique prefix is enough
    job = data["job"]
    assert job["id"] == job_id and job["kind"] == "photos" and job["status"] == "failed"
    assert job["input"] == str(inp.resolve()) and job["output"] == str(out.resolve())
    assert job["options"] == {"face_detector": "haar", "max_pixels": 200_000_000, "scale": 2}  # tile: the default (sized to memory)
    assert job["created"] and job["finished"]
    assert data["summary"] == {"pending": 0, "running": 0, "done": 1, "failed": 1, "skipped": 1}
    assert data["locked_by"] is None
    items = {i["key"]: i for i in data["items"]}
    for item in items.values():
        assert {"status", "error", "code_source", "faces", "output", "attempts", "code", "seconds"} <= set(item)
    good, bad, readme = items["good.png"], items["bad.jpg"], items["readme.md"]
    assert (good["status"], good["error"], good["code_source"], good["faces"]) == ("done", None, "blind", 0)
    assert good["output"] == str(out.resolve() / "good.png") and len(good["code"]) == 16 and good["seconds"] >= 0
    assert good["extra"]["megapixels"] == 0.0008  # 32 x 24 = 768 pixels, in megapixels to 4 places
    assert (bad["status"], bad["output"], bad["code_source"]) == ("failed", None, None)
    assert bad["error"].startswith("InputError: ") and bad["error"].endswith("empty file (0 bytes)")
    assert (readme["status"], readme["error"], readme["attempts"]) == ("skipped", "not an image extension", 0)

    missing = _run(["status", "0123456789ab", "--json"], jobs, expect=1)
    assert "no job '0123456789ab'" in missing.stderr


def _commands(group, path=()):
    import click

    for name, command in sorted(group.commands.items()):
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


def test_every_command_has_help():
    names = list(_commands(cli))
    assert {("run",), ("jobs",), ("status",), ("resume",), ("bench", "quality")} <= set(names)
    for path in [(), *names]:
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert result.stdout.startswith("Usage: ") and len(result.stdout.splitlines()) > 3, path


# ---------------------------------------------------------------------------------- exit codes

def test_usage_errors_exit_2_without_creating_a_job(tmp_path, tiny_models, rng):
    inp, jobs = tmp_path / "in", tmp_path / "jobs"
    inp.mkdir()
    Image.fromarray(_rgb(rng)).save(inp / "one.png")

    bad_scale = _run(["run", inp, "-o", tmp_path / "out", "--scale", "3"], jobs, tiny_models, expect=2)
    assert "'3' is not one of '1', '2', '4'" in bad_scale.stderr
    inside = _run(["run", inp, "-o", inp / "restored"], jobs, tiny_models, expect=2)
    assert "is inside the input" in inside.stderr and "choose a folder outside it" in inside.stderr
    same = _run(["run", inp, "-o", inp], jobs, tiny_models, expect=2)
    assert "is inside the input" in same.stderr
    assert not (inp / "restored").exists()
    assert "no jobs" in _run(["jobs"], jobs).stdout


def test_a_single_photo_is_never_restored_over_itself(tmp_path, tiny_models, rng):
    jobs, photo = tmp_path / "jobs", tmp_path / "album" / "portrait.png"
    photo.parent.mkdir()
    Image.fromarray(_rgb(rng)).save(photo)
    original = photo.read_bytes()

    for output in (photo.parent, photo, tmp_path / "album" / "." / "sub" / ".."):
        refused = _run(["run", photo, "-o", output, "--scale", "2"], jobs, tiny_models, expect=2)
        assert f"{photo}" in refused.stderr and "choose" in refused.stderr
        assert photo.read_bytes() == original
    assert sorted(p.name for p in photo.parent.iterdir()) == ["portrait.png"]

    _run(["run", photo, "--scale", "2"], jobs, tiny_models)  # default: portrait_restored/ beside it
    assert photo.read_bytes() == original
    with Image.open(tmp_path / "album" / "portrait_restored" / "portrait.png") as im:
        assert im.size == (64, 48)


def test_the_options_identity_holds_what_changes_the_result_and_rebuilds_the_options():
    from archive_restore.pipeline.photo import PhotoJobOptions

    defaults = PhotoJobOptions()
    assert defaults.identity() == {"scale": 4, "face_detector": "auto", "max_pixels": 200_000_000}
    chosen = PhotoJobOptions(scale=2, face_detector="haar", tile=128, device="cpu", max_pixels=1_000_000,
                             face_restorer="none", face_fidelity=0.5, upscaler="/m/x.pth", upscaler_sha256="ab12",
                             fidelity=0.3)
    assert chosen.identity() == {"scale": 2, "face_detector": "haar", "max_pixels": 1_000_000, "tile": 128,
                                 "face_restorer": "none", "face_fidelity": 0.5, "upscaler": "/m/x.pth",
                                 "upscaler_sha256": "ab12", "fidelity": 0.3,
                                 "faces_without_restorer": "faithful"}  # a new job's (``pipeline.soften``)
    # `resume`: the stored identity (through JSON, as the store keeps it) and this run's device
    stored = json.loads(json.dumps(chosen.identity()))
    assert PhotoJobOptions.from_identity(stored, device="cpu") == chosen
    assert PhotoJobOptions.from_identity(defaults.identity()) == defaults


def test_eight_bit_photos_are_rendered_straight_to_eight_bits(tmp_path, tiny_models, rng, monkeypatch):
    """An 8-bit output is rounded to uint8 as the picture is made (a quarter of float32's memory: a
    4K photo at x4 is 0.4 GB instead of 1.6 GB), a 16-bit PNG is made in float; the files are the ones
    the float picture gives."""
    from archive_restore.pipeline import forward, photo

    inp = tmp_path / "in"
    inp.mkdir()
    Image.fromarray(_rgb(rng)).save(inp / "eight.png")
    Image.fromarray((_rgb(rng).astype(np.uint16) * 257)[:, :, 0]).save(inp / "deep.png")  # 16-bit gray
    made_as_uint8 = []
    real = forward.FrameRestorer.restore

    def restore(self, frames, code, as_uint8=False):
        made_as_uint8.append(as_uint8)
        return real(self, frames, code, as_uint8)

    monkeypatch.setattr(forward.FrameRestorer, "restore", restore)
    _restore(inp, tmp_path / "out", tmp_path / "jobs", tiny_models)
    assert sorted(made_as_uint8) == [False, True]  # deep.png in float, eight.png in uint8

    monkeypatch.setattr(photo, "written_bit_depth", lambda path, like: 16)  # every picture made in float
    _restore(inp, tmp_path / "float", tmp_path / "jobs2", tiny_models)
    for name in ("eight.png", "deep.png"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "float" / name).read_bytes(), name


def test_a_local_run_clears_the_check_files_a_dead_ray_driver_left(tmp_path, tiny_models, rng):
    """A Ray driver writes hidden check files in the output folder and the job's folder for its workers;
    when its node dies it cannot remove them: the next run of the job, on any executor, does."""
    scans = tmp_path / "scans"
    scans.mkdir()
    cv2.imwrite(str(scans / "a.png"), (rng.random((24, 24, 3)) * 255).astype(np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    left = out / ".archive-restore-check.0123456789abcdef"
    left.touch()
    _restore(scans, out, tmp_path / "jobs", tiny_models, "--scale", "1")
    assert not left.exists() and sorted(p.name for p in out.iterdir()) == ["a.png"]


def test_a_deleted_database_beside_a_jobs_folder_keeps_that_work_and_says_so(tmp_path, tiny_models, rng):
    scans = tmp_path / "scans"
    scans.mkdir()
    cv2.imwrite(str(scans / "a.png"), (rng.random((24, 24, 3)) * 255).astype(np.uint8))
    jobs = tmp_path / "jobs"
    _restore(scans, tmp_path / "out", jobs, tiny_models, "--scale", "1")
    (job_dir,) = [p for p in jobs.iterdir() if p.is_dir()]
    (job_dir / "work.bin").write_bytes(b"earlier work")
    for db in jobs.glob("archive-restore.db*"):
        db.unlink()
    result = _restore(scans, tmp_path / "out", jobs, tiny_models, "--scale", "1")
    assert "did not know this job" in result.output and "kept whole as" in result.output
    (kept,) = jobs.glob(f"{job_dir.name}.kept-*")
    assert (kept / "work.bin").read_bytes() == b"earlier work"
    again = _restore(scans, tmp_path / "out", jobs, tiny_models, "--scale", "1")  # known now: nothing moved
    assert "did not know" not in again.output and len(list(jobs.glob("*.kept-*"))) == 1
