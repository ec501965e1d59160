"""``archive-restore report`` and ``--preview N``, without a browser: every item on the page with its
status, failed and skipped ones with their reason in words, pictures made once and named by the
output's sha256, 1:1 detail crops, the run's device and networks, video shots with frame pairs and
chunk timings, and previews that never touch the real job. The page in a real browser:
``test_report_browser.py``."""
from __future__ import annotations

import hashlib
import os
import re
from html import unescape
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image
from video_clips import make_clip

from archive_restore.cli import cli
from archive_restore.report import pictures as pictures_module
from archive_restore.report.collect import plain_reason
from archive_restore.report.pictures import detail_box
from archive_restore.report.preview import spread
from archive_restore.jobs.store import Item, JobStore

HAAR = ["--face-detector", "haar"]


def _cli(args: list, expect: int | None = 0) -> Result:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if expect is not None:
        assert result.exit_code == expect, f"exit {result.exit_code}\n{result.output}"
    return result


def _photo(rng: np.random.Generator, h: int = 24, w: int = 32) -> Image.Image:
    """A small photo with structure: a gradient, a bright square and some noise."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 / w, y * 255 / h, np.full((h, w), 90.0)], axis=2)
    img[h // 4: h // 2, w // 4: w // 2] = 230
    img += rng.normal(0, 12, img.shape)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def _collection(root: Path, rng: np.random.Generator) -> Path:
    """Two folders: three good photos, a truncated PNG and a text file."""
    (root / "family").mkdir(parents=True)
    (root / "places").mkdir()
    for name in ("family/a.png", "family/b.jpg", "places/c.png"):
        _photo(rng).save(root / name)
    whole = (root / "family" / "a.png").read_bytes()
    (root / "places" / "broken.png").write_bytes(whole[: len(whole) // 2])
    (root / "places" / "notes.txt").write_text("not a photo")
    return root


def _job_id(result: Result) -> str:
    return re.search(r"^job ([0-9a-f]{12}):", result.stdout, re.MULTILINE).group(1)


def _cards(html: str) -> dict[str, tuple[str, str]]:
    """data-key -> (data-status, the element's text) for every card or row of the page."""
    found = {}
    for match in re.finditer(r'<(article|div|tr) class="[^"]*" data-key="([^"]*)" data-status="(\w+)"(.*?)</\1>',
                             html, re.DOTALL):
        found[unescape(match.group(2))] = (match.group(3), unescape(re.sub(r"<[^>]+>", " ", match.group(4))))
    for match in re.finditer(r'<tr data-key="([^"]*)" data-status="(\w+)">(.*?)</tr>', html, re.DOTALL):
        found[unescape(match.group(1))] = (match.group(2), unescape(re.sub(r"<[^>]+>", " ", match.group(3))))
    return found


def _local_files(index: Path) -> list[Path]:
    """Every file the page refers to (src/href), checked to be relative and inside its folder."""
    html = index.read_text()
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs, "the page refers to no file"
    files = []
    for ref in refs:
        if ref == "data:,":  # the empty favicon: no request
            continue
        assert not re.match(r"^[a-z]+:|^/", ref), f"{ref} is not a file inside the report folder"
        path = (index.parent / unescape(ref)).resolve()
        assert path.is_relative_to(index.parent.resolve()) and path.is_file(), ref
        files.append(path)
    return files


@pytest.fixture
def photo_job(tmp_path, tiny_models, rng):
    """A photo job over ``_collection`` (3 done, 1 failed, 1 skipped) and its report."""
    inp = _collection(tmp_path / "scans", rng)
    jobs = tmp_path / "jobs"
    run = _cli(["run", inp, "-o", tmp_path / "out", *HAAR, "--models-dir", tiny_models, "--jobs-dir", jobs], expect=1)
    job_id = _job_id(run)
    report = _cli(["report", job_id, "--jobs-dir", jobs, "--quiet"])
    index = jobs / job_id / "report" / "index.html"
    assert index.as_uri() in report.stdout
    return job_id, jobs, index, tiny_models


# ------------------------------------------------------------------------------------- photos
def test_every_photo_is_on_the_page_with_its_status_and_failures_say_why(photo_job):
    job_id, jobs, index, _ = photo_job
    cards = _cards(index.read_text())
    with JobStore.open(jobs) as store:
        items = store.items(job_id)
    assert {i.key: i.status for i in items} == {k: s for k, (s, _) in cards.items()}
    assert sorted(s for s, _ in cards.values()) == ["done", "done", "done", "failed", "skipped"]
    status, text = cards["places/broken.png"]
    assert status == "failed" and "the file could not be used: cannot decode the image" in text
    assert "InputError" not in text and str(jobs.parent) not in text  # in words, not the exception and its path
    assert cards["places/notes.txt"][0] == "skipped" and "not an image" in cards["places/notes.txt"][1]
    assert "code from the picture itself" in cards["family/a.png"][1]


def test_slider_pictures_are_web_sized_copies_and_every_file_is_inside_the_folder(photo_job):
    index = photo_job[2]
    files = _local_files(index)
    html = index.read_text()
    assert not re.search(r"https?://", html)
    for card in re.findall(r'<article class="card" data-key="[^"]*" data-status="done">.*?</article>', html, re.DOTALL):
        before, after = re.findall(r'<img class="(?:before|after)" src="([^"]*)"', card)[::-1]
        with Image.open(index.parent / before) as b, Image.open(index.parent / after) as a:
            assert b.size == a.size == (128, 96)  # 32x24 x4, within the web size
    assert all(f.parent.name == "img" for f in files)


def test_a_job_without_defects_repair_has_no_repairs_toggle_or_mask(photo_job):
    job_id, jobs, index, _ = photo_job
    html = index.read_text()
    assert html.count('class="compare"') == 3
    assert "show-repairs" not in html.split("<script>")[0] and 'class="repairs"' not in html
    assert not (jobs / job_id / "masks").exists()


def test_detail_crop_is_the_output_at_one_to_one(photo_job):
    job_id, jobs, index, _ = photo_job
    with JobStore.open(jobs) as store:
        item = next(i for i in store.items(job_id) if i.key == "family/a.png")
    html = index.read_text()
    card = re.search(r'data-key="family/a.png".*?</article>', html, re.DOTALL).group(0)
    crop = re.search(r'<img src="([^"]*crop-after.png)"', card).group(1)
    x, y = map(int, re.search(r"1:1 at \((\d+), (\d+)\)", card).groups())
    output = np.asarray(Image.open(item.output).convert("RGB"))
    shown = np.asarray(Image.open(index.parent / crop))
    side = shown.shape[0]
    assert side == min(pictures_module.CROP_SIDE, *output.shape[:2])
    assert np.array_equal(shown, output[y:y + side, x:x + side])


def test_detail_box_finds_the_most_detailed_region():
    rng = np.random.default_rng(0)
    flat = np.full((300, 400, 3), 128, np.uint8)
    flat[180:260, 250:330] = rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)  # the only texture
    x, y, side = detail_box(flat, side=80)
    assert side == 80 and abs(x - 250) <= 4 and abs(y - 180) <= 4


def test_pictures_are_made_once_and_remade_only_for_a_changed_output(photo_job, monkeypatch):
    job_id, jobs, index, _ = photo_job
    img = index.parent / "img"
    first = {p.name: p.stat().st_mtime_ns for p in img.iterdir() if p.name != "digests.json"}
    made = []
    original = pictures_module.Pictures._save
    monkeypatch.setattr(pictures_module.Pictures, "_save", lambda self, name, rgb: (made.append(name),
                                                                                   original(self, name, rgb)))
    _cli(["report", job_id, "--jobs-dir", jobs, "--quiet"])
    assert made == []
    assert {p.name: p.stat().st_mtime_ns for p in img.iterdir() if p.name != "digests.json"} == first

    with JobStore.open(jobs) as store:
        output = Path(next(i for i in store.items(job_id) if i.key == "places/c.png").output)
    Image.fromarray(255 - np.asarray(Image.open(output))).save(output)  # the output written again, other pixels
    digest = hashlib.sha256(output.read_bytes()).hexdigest()[:16]
    _cli(["report", job_id, "--jobs-dir", jobs, "--quiet"])
    assert made and all(name.startswith(digest) for name in made)  # only that photo's pictures
    assert f"img/{digest}-after.jpg" in index.read_text()
    gone = set(first) - {p.name for p in img.iterdir()}
    assert gone and all(not name.startswith(digest) for name in gone)  # the old ones of that photo pruned


def test_summary_names_the_device_and_every_network_with_its_sha256(photo_job):
    _, _, index, models = photo_job
    html = index.read_text()
    summary = re.search(r'<section class="summary".*?</section>', html, re.DOTALL).group(0)
    assert "<th>device</th><td>cpu" in summary
    for name in ("condsr_compact.safetensors", "blind_encoder.safetensors"):
        assert name in summary and hashlib.sha256((models / name).read_bytes()).hexdigest() in summary
    assert re.search(r'data-count="done">3<', summary) and re.search(r'data-count="failed">1<', summary)
    assert "the picture itself (blind, no usable face): 3" in summary


def test_plain_reason_takes_out_the_exception_and_the_path():
    item = Item(id=1, job_id="j", key="b/x.png", size=None, mtime=None, status="failed", attempts=1,
                error="InputError: /in/b/x.png: cannot decode the image (image file is truncated)", output=None,
                code=None, code_source=None, faces=None, started=None, finished=None, seconds=None)
    assert plain_reason(item, Path("/in/b/x.png")) == \
        "the file could not be used: cannot decode the image (image file is truncated)"
    crashed = Item(**{**item.__dict__, "error": "RuntimeError: out of memory"})
    assert plain_reason(crashed) == "restoring it failed: out of memory"


# ------------------------------------------------------------------------------------ preview
def test_spread_gives_every_group_one_before_any_gets_two():
    assert spread(5, [8, 8, 8]) == [[2, 6], [4], [2, 6]]
    assert spread(2, [3, 3, 3, 3]) == [[], [1], [], [1]]  # fewer picks than groups: evenly spaced groups
    assert spread(10, [1, 2]) == [[0], [0, 1]]             # never more than there are


def test_photo_preview_touches_no_real_job_or_output(tmp_path, tiny_models, rng):
    inp = _collection(tmp_path / "scans", rng)
    out, jobs = tmp_path / "out", tmp_path / "jobs"
    real = _cli(["run", inp, "-o", out, *HAAR, "--models-dir", tiny_models, "--jobs-dir", jobs], expect=1)
    job_id = _job_id(real)
    outputs = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    status = _cli(["status", job_id, "--json", "--jobs-dir", jobs]).stdout

    result = _cli(["run", inp, "-o", out, *HAAR, "--models-dir", tiny_models, "--jobs-dir", jobs, "--preview", "2"])
    assert "preview: 2 photos (its job's items: 2 done, 0 failed" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == outputs
    assert _cli(["status", job_id, "--json", "--jobs-dir", jobs]).stdout == status
    with JobStore.open(jobs) as store:
        assert [j.id for j in store.jobs()] == [job_id]
    index = Path(re.search(r"report: file://(\S+)", result.stdout).group(1))
    assert index.is_relative_to(jobs / "previews" / f"{job_id}-2")
    keys = sorted(_cards(index.read_text()))
    assert len(keys) == 2 and {k.split("/")[0] for k in keys} == {"family", "places"}  # spread over the folders


def test_photo_preview_before_any_job_creates_none(tmp_path, tiny_models, rng):
    inp = _collection(tmp_path / "scans", rng)
    jobs = tmp_path / "jobs"
    _cli(["run", inp, "-o", tmp_path / "out", *HAAR, "--models-dir", tiny_models, "--jobs-dir", jobs,
          "--preview", "1"])
    assert not (tmp_path / "out").exists() and not (jobs / "archive-restore.db").exists()
    assert sorted(os.listdir(jobs)) == ["previews"]


# -------------------------------------------------------------------------------------- video
def _clip(tmp_path: Path) -> Path:
    return make_clip(tmp_path / "film.mp4", count=24, shots=(8, 16)).path


def test_video_report_shows_each_shot_with_a_frame_pair_and_chunk_timings(tmp_path, tiny_models):
    clip, jobs = _clip(tmp_path), tmp_path / "jobs"
    run = _cli(["video", clip, "--scale", "2", "--chunk-frames", "5", "--preset", "ultrafast", *HAAR,
                "--models-dir", tiny_models, "--jobs-dir", jobs])
    job_id = re.search(r"job ([0-9a-f]{12})", run.stdout).group(1)
    index = Path(re.search(r"report: file://(\S+)", _cli(["report", job_id, "--jobs-dir", jobs, "--quiet"]).stdout)
                 .group(1))
    html = index.read_text()
    cards = _cards(html)
    with JobStore.open(jobs) as store:
        items = store.items(job_id)
    assert {i.key: i.status for i in items} == {k: s for k, (s, _) in cards.items()}
    shots = re.findall(r'<section class="shot" data-shot="(\d)">(.*?)</section>', html, re.DOTALL)
    assert [s for s, _ in shots] == ["0", "1", "2"]
    for _, body in shots:
        (_, after), = [re.findall(r'<img class="(?:after|before)" src="([^"]*)"', body)]
        assert Image.open(index.parent / after).size == (128, 96)  # the restored frame (64x48 x2)
    chunk = next(i for i in items if i.key == "shot0001.000")
    assert f"{chunk.extra['render_seconds']:.2f} s" in cards["shot0001.000"][1]
    _local_files(index)


def test_video_preview_restores_frames_spread_over_shots_and_writes_no_video(tmp_path, tiny_models):
    clip, jobs = _clip(tmp_path), tmp_path / "jobs"
    result = _cli(["video", clip, "--scale", "2", "--preset", "ultrafast", *HAAR, "--models-dir", tiny_models,
                   "--jobs-dir", jobs, "--preview", "4"])
    assert "preview: 4 frames of film.mp4" in result.stdout
    assert not (tmp_path / "film_restored.mp4").exists() and not (jobs / "archive-restore.db").exists()
    index = Path(re.search(r"report: file://(\S+)", result.stdout).group(1))
    html = index.read_text()
    pairs = {s: len(re.findall(r'class="compare"', body))
             for s, body in re.findall(r'<section class="shot" data-shot="(\d)">(.*?)</section>', html, re.DOTALL)}
    assert pairs == {"0": 1, "1": 2, "2": 1}
    frames = sorted((index.parent.parent / "jobs").rglob("preview/*.png"))
    assert len(frames) == 4 and all(Image.open(f).size == (128, 96) for f in frames)
    assert _cards(html)["finish"][0] == "skipped"


def test_a_done_photo_whose_output_is_gone_says_so(photo_job):
    job_id, jobs, index, _ = photo_job
    with JobStore.open(jobs) as store:
        output = Path(next(i for i in store.items(job_id) if i.key == "family/b.jpg").output)
    output.unlink()
    _cli(["report", job_id, "--jobs-dir", jobs, "--quiet"])
    status, text = _cards(index.read_text())["family/b.jpg"]
    assert status == "done" and f"the restored file {output} is missing" in text


def test_face_boxes_are_drawn_where_the_jobs_detector_finds_faces(tmp_path, tiny_models, face_rgb):
    from archive_restore.faces import make_detector

    inp, jobs = tmp_path / "scans", tmp_path / "jobs"
    inp.mkdir()
    Image.fromarray(face_rgb).save(inp / "astronaut.png")
    run = _cli(["run", inp, "-o", tmp_path / "out", *HAAR, "--scale", "1", "--models-dir", tiny_models,
                "--jobs-dir", jobs])
    job_id = _job_id(run)
    index = Path(re.search(r"report: file://(\S+)", _cli(["report", job_id, "--jobs-dir", jobs, "--quiet"]).stdout)
                 .group(1))
    with JobStore.open(jobs) as store:
        (item,) = store.items(job_id)
    drawn = [tuple(map(float, b)) for b in re.findall(
        r'class="face" style="left:([\d.]+)%;top:([\d.]+)%;width:([\d.]+)%;height:([\d.]+)%"', index.read_text())]
    assert len(drawn) == item.faces >= 1
    h, w = face_rgb.shape[:2]
    found = make_detector("haar").detect(face_rgb.astype(np.float32) / 255)[0].box
    expected = (found[0] / w * 100, found[1] / h * 100, (found[2] - found[0]) / w * 100, (found[3] - found[1]) / h * 100)
    assert np.allclose(drawn[0], expected, atol=0.01)


def test_a_report_never_writes_over_or_prunes_files_it_did_not_make(photo_job, tmp_path):
    job_id, jobs, _, _ = photo_job
    site = tmp_path / "site"
    (site / "img").mkdir(parents=True)
    (site / "img" / "holiday.jpg").write_bytes(b"mine")
    _cli(["report", job_id, "--jobs-dir", jobs, "-o", site, "--quiet"])
    assert (site / "img" / "holiday.jpg").read_bytes() == b"mine"  # not one of the report's pictures: kept
    (site / "index.html").write_text("<html>my own page</html>")
    refused = _cli(["report", job_id, "--jobs-dir", jobs, "-o", site, "--quiet"], expect=2)
    assert "is not an archive-restore report" in refused.output
    assert (site / "index.html").read_text() == "<html>my own page</html>"


def test_a_video_preview_restores_its_frames_as_the_job_does(tmp_path, tiny_models, monkeypatch):
    """The preview's frames go through what the job's render does: the shot's code reaches the face softening
    (``pipeline.soften``, without a face restorer) and the adapted cleanup is asked for (``--adapt``)."""
    from archive_restore.pipeline.engine import Engine
    from archive_restore.pipeline.video import VideoJob

    codes, adapted = [], []
    paste, adapt_for = Engine.paste_faces, VideoJob.adapted

    def recording_paste(self, lq, picture, restored=None, steady=None, code=None):
        codes.append(code)
        return paste(self, lq, picture, restored, steady=steady, code=code)

    def recording_adapted(self, item):
        adapted.append(item.key)
        return adapt_for(self, item)

    monkeypatch.setattr(Engine, "paste_faces", recording_paste)
    monkeypatch.setattr(VideoJob, "adapted", recording_adapted)
    clip, jobs = _clip(tmp_path), tmp_path / "jobs"
    result = _cli(["video", clip, "--scale", "2", "--preset", "ultrafast", *HAAR, "--models-dir", tiny_models,
                   "--jobs-dir", jobs, "--preview", "4"])
    assert "preview: 4 frames of film.mp4" in result.stdout
    assert len(codes) == 4 and all(c is not None for c in codes)
    assert adapted and all(key.startswith("shot") for key in adapted)
