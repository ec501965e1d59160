"""Film dirt (``pipeline.film_dirt``): a blotch on one frame is found and filled from the frames beside it,
what moves is not dirt, a clean clip comes back unchanged, and the video job's ``--defects on`` does it
across its chunks. Line scratches lasting over the frames are found on each frame alone and filled from
beside them; a real vertical edge or a pole is not a scratch."""
from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from archive_restore.cli import cli
from archive_restore.degrade.film import line_scratches
from archive_restore.jobs.store import JobStore
from archive_restore.pipeline.film_dirt import (
    clean_run,
    find_lines,
    remove_damage,
    remove_dirt,
    remove_lines,
)
from archive_restore.pipeline.video import VideoJobOptions

H, W = 64, 96
BLOTCH = (30, 40)  # centre (y, x) of the blotch


def _texture() -> np.ndarray:
    rng = np.random.default_rng(3)
    big = cv2.GaussianBlur(rng.uniform(40, 200, (H, W * 2)).astype(np.float32), (0, 0), 1.5)
    return np.repeat(big[..., None], 3, axis=2)


def _scene(t: int) -> np.ndarray:
    """A textured wall panning 2 px a frame, and a bright square crossing it 4 px a frame."""
    frame = _texture()[:, 2 * t:2 * t + W].copy()
    x = 10 + 4 * t
    frame[8:20, x:x + 10] = 235
    return frame.clip(0, 255).astype(np.uint8)


def _blotched(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = frame.copy()
    mask = np.zeros((H, W), np.uint8)
    cv2.circle(mask, BLOTCH[::-1], 4, 1, -1)
    out[mask.astype(bool)] = 12
    return out, mask.astype(bool)


def test_a_one_frame_blotch_is_found_and_filled():
    frames = [_scene(t) for t in range(5)]
    clean = frames[2]
    frames[2], truth = _blotched(clean)
    out, mask = remove_dirt(frames, 2)
    assert mask[truth].mean() > 0.95
    assert mask.sum() <= 2.5 * truth.sum()  # the blotch, grown a little, not the picture
    assert np.abs(out[truth].astype(int) - clean[truth].astype(int)).mean() < 12
    assert np.array_equal(out[~mask], frames[2][~mask])  # nothing else touched


def test_a_dark_mark_beside_a_dark_edge_is_found():
    """Where the moved neighbours agree all around, the flow holds: a mark need only stand out from their own
    pixels, so a black blotch touching a black bar is found whole (everything within reach of its left side is
    the bar's black: that side was missed before)."""
    def still(t: int) -> np.ndarray:  # a still wall with film grain, and a black bar
        frame = _texture()[:, :W] + np.random.default_rng(t).normal(0, 2, (H, W, 1))
        frame[:, 50:52] = 0
        return frame.clip(0, 255).astype(np.uint8)

    frames = [still(t) for t in range(5)]
    clean, truth = frames[2], np.zeros((H, W), bool)
    truth[36:42, 52:57] = True
    frames[2] = clean.copy()
    frames[2][truth] = 0
    out, mask = remove_dirt(frames, 2)
    assert mask[truth].all()
    assert np.abs(out[truth].astype(int) - clean[truth].astype(int)).mean() < 12
    assert np.array_equal(out[~mask], frames[2][~mask])


def test_a_blotch_on_a_flickering_film_is_found():
    """Old film's exposure flickers from frame to frame: the frames before and after, moved onto this one, may
    differ by 30 levels and still show the same scene (``AGREE`` 40; at 20 this blotch was not found at all)."""
    frames = [(_scene(t).astype(int) + [0, 15, 0, -15, 0][t]).clip(0, 255).astype(np.uint8) for t in range(5)]
    clean = frames[2]
    frames[2], truth = _blotched(clean)
    out, mask = remove_dirt(frames, 2)
    assert mask[truth].mean() > 0.95
    assert mask.sum() <= 2.5 * truth.sum()
    assert np.abs(out[truth].astype(int) - clean[truth].astype(int)).mean() < 12
    assert np.array_equal(out[~mask], frames[2][~mask])


def test_a_large_mark_is_filled_with_the_scene_under_it():
    """The flow is found at half the frame's size, where a mark pulls it less: the neighbours moved onto a
    blotch 17 px across bring the wall that is under it (a mean error of 7.7 levels with the flow at full size)."""
    h, w = 192, 256
    big = cv2.GaussianBlur(np.random.default_rng(3).uniform(40, 200, (h, w + 40)).astype(np.float32), (0, 0), 2.0)
    frames = [np.repeat(big[:, 3 * t:3 * t + w, None], 3, axis=2).clip(0, 255).astype(np.uint8) for t in range(5)]
    clean, truth = frames[2], np.zeros((h, w), np.uint8)
    cv2.circle(truth, (120, 90), 8, 1, -1)
    truth = truth.astype(bool)
    frames[2] = clean.copy()
    frames[2][truth] = 15
    out, mask = remove_dirt(frames, 2)
    assert mask[truth].all() and mask.sum() < 1.5 * truth.sum()
    assert np.abs(out[truth].astype(int) - clean[truth].astype(int)).mean() < 5
    assert np.array_equal(out[~mask], frames[2][~mask])


@pytest.mark.parametrize("where", [0, 4], ids=["first", "last"])
def test_the_first_and_last_frames_of_a_run_use_the_two_beside_them(where):
    frames = [_scene(t) for t in range(5)]
    frames[where], truth = _blotched(frames[where])
    _, mask = remove_dirt(frames, where)
    assert mask[truth].mean() > 0.9


def test_what_moves_is_not_dirt_and_a_clean_clip_is_unchanged():
    frames = [_scene(t) for t in range(6)]
    cleaned = list(clean_run(iter(frames)))
    assert sum(int(m.sum()) for _, m in cleaned) == 0
    assert all(np.array_equal(out, f) for (out, _), f in zip(cleaned, frames))


def test_a_run_of_two_frames_is_left_alone():
    frames = [_blotched(_scene(0))[0], _scene(1)]
    assert [m.any() for _, m in clean_run(iter(frames))] == [False, False]


def test_clean_run_is_remove_damage_frame_by_frame():
    frames = [_scene(t) for t in range(7)]
    for t in (0, 3, 6):
        frames[t] = _blotched(frames[t])[0]
    frames, _ = line_scratches(frames, np.random.default_rng(1), lines=(1, 1), opacity=(0.8, 1.0))
    whole = [remove_damage(frames, t) for t in range(7)]
    cleaned = list(clean_run(iter(frames)))
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(whole, cleaned))
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(whole, cleaned))
    assert all(m.sum() > remove_dirt(frames, t)[1].sum() for t, (_, m) in enumerate(cleaned))  # the lines too


def _smooth(t: int) -> np.ndarray:
    """A soft picture panning 1 px a frame, with a little grain: what a line's fill can be held to."""
    big = cv2.GaussianBlur(np.random.default_rng(5).uniform(60, 190, (H, W + 20)).astype(np.float32), (0, 0), 3)
    frame = big[:, t:t + W] + np.random.default_rng(t).normal(0, 2, (H, W))
    return np.repeat(frame[..., None], 3, axis=2).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("seed", [0, 3, 6])
def test_a_line_scratch_over_the_frames_is_found_and_filled_from_beside_it(seed):
    clean = [_smooth(t) for t in range(4)]
    damaged, truths = line_scratches(clean, np.random.default_rng(seed), lines=(1, 1), opacity=(0.8, 1.0))
    for frame, before, truth, (out, mask) in zip(damaged, clean, truths, clean_run(iter(damaged))):
        assert truth.sum() > 0.4 * H
        assert mask[truth].mean() > 0.95
        assert mask.sum() <= 3 * truth.sum()  # the line and its soft edge, not the picture
        assert np.abs(out[truth].astype(int) - before[truth].astype(int)).mean() < 5  # from over 40 levels
        assert np.array_equal(out[~mask], frame[~mask])  # nothing else touched, to the byte


def test_a_line_over_part_of_the_height_with_breaks_is_found():
    frame = _smooth(0)
    truth = np.zeros((H, W), bool)
    truth[4:40, 61] = True  # 56 % of the height, light ...
    truth[14:18, 61] = False  # ... with a break
    truth[20:60, 30:32] = True  # and a dark one, 2 px wide
    frame[truth[:, :, None].repeat(3, 2) & (np.arange(W) > 45)[None, :, None]] = 240
    frame[truth[:, :, None].repeat(3, 2) & (np.arange(W) < 45)[None, :, None]] = 20
    out, mask = remove_lines(frame)
    assert mask[truth].mean() > 0.95 and not mask[14:18, 61].any()
    assert mask.sum() <= 3 * truth.sum()
    assert np.array_equal(out[~mask], frame[~mask])


def _edges() -> np.ndarray:
    """Real vertical things over the whole height: a step edge, a sharpened step edge (its halo a 1 px light
    line beside a 1 px dark one), and light poles 4 and 5 px wide with a bark texture."""
    rng = np.random.default_rng(2)
    luma = np.full((H, W), 90, np.float32)
    luma[:, 12:] = 170  # a step edge
    luma[:, 30:] = 70   # and down again, sharpened: 40 below the dark side and 40 over the bright one
    luma[:, 29], luma[:, 30] = 210, 30
    luma[:, 50:54] = 200 + rng.normal(0, 12, (H, 4))  # a pole 4 px wide, textured
    luma[:, 70:75] = 200 + rng.normal(0, 12, (H, 5))  # and 5 px
    luma += rng.normal(0, 2, (H, W))
    return np.repeat(luma[..., None], 3, axis=2).clip(0, 255).astype(np.uint8)


def test_a_real_vertical_edge_or_pole_is_not_a_line():
    frame = _edges()
    assert not find_lines(frame).any()
    out, mask = remove_lines(frame)
    assert not mask.any() and np.array_equal(out, frame)


def _clip(path: Path, dirty_at: set[int], count: int = 12) -> list[np.ndarray]:
    sources = []
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"crf": "4", "preset": "ultrafast", "bf": "0"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv444p"
        for t in range(count):
            frame = _scene(t)
            sources.append(frame)
            if t in dirty_at:
                frame = _blotched(frame)[0]
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv444p")
            picture.pts = t
            for packet in stream.encode(picture):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return sources


def test_a_video_job_removes_one_frame_dirt_across_its_chunks(tmp_path, tiny_models, monkeypatch):
    from archive_restore.pipeline import video

    path = tmp_path / "film.mp4"
    _clip(path, dirty_at={4, 5 + 3})  # the first frame of the second chunk, and one inside it
    given: dict[int, np.ndarray] = {}
    restore = video.VideoJob.restore

    def recording(self, batch, code, cleanup=None):
        given.update((f.pts * 25 * f.time_base, f.rgb.copy()) for f in batch)
        return restore(self, batch, code, cleanup)

    monkeypatch.setattr(video.VideoJob, "restore", recording)
    jobs = tmp_path / "jobs"
    args = ["video", str(path), "--scale", "1", "--preset", "ultrafast", "--face-detector", "haar",
            "--chunk-frames", "4", "--defects", "on", "--models-dir", str(tiny_models), "--jobs-dir", str(jobs)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert sorted(given) == list(range(12))
    spot = np.zeros((H, W), np.uint8)
    cv2.circle(spot, BLOTCH[::-1], 3, 1, -1)
    for t in (4, 8):
        assert given[t][spot.astype(bool)].mean() > 60, t  # the blotch (12) is gone
    with JobStore.open(jobs) as store:
        (job,) = store.jobs()
        chunks = [i for i in store.items(job.id) if i.key.startswith("shot")]
    assert job.options["defects"] == "on"
    assert [c.extra["dirt_from_pts"] for c in chunks] == [c.extra["start_pts"] for c in chunks[:1]] + \
        [chunks[i].extra["start_pts"] - 2 * (chunks[1].extra["start_pts"] // 4) for i in (1, 2)]
    assert chunks[1].extra["dirt_percent"] > 0 and chunks[0].extra["dirt_percent"] == 0
    status = CliRunner().invoke(cli, ["status", job.id, "--jobs-dir", str(jobs)])
    assert "dirt removed from" in status.output
    page = CliRunner().invoke(cli, ["report", job.id, "-o", str(tmp_path / "page"), "--quiet", "--jobs-dir", str(jobs)])
    assert page.exit_code == 0, page.output
    assert "dirt repaired on" in (tmp_path / "page" / "index.html").read_text()


def test_the_choice_is_part_of_the_identity_and_kept_on_resume():
    assert "defects" not in VideoJobOptions().identity()
    on = VideoJobOptions(defects="on")
    assert on.identity()["defects"] == "on"
    assert VideoJobOptions.from_identity(on.identity()).defects == "on"


def test_the_report_overlays_the_dirt_mask_of_the_frame_it_shows(tmp_path, tiny_models):
    """One shot of 12 frames in chunks of 4: the report shows frame 6 (the shot's middle), offset 2 of the second
    chunk; its blotch's mask is kept at the input's size and laid over the x2 slider on request."""
    import re

    from PIL import Image

    from archive_restore.report.pictures import overlay_rgba

    path = tmp_path / "film.mp4"
    _clip(path, dirty_at={6})
    jobs = tmp_path / "jobs"
    args = ["video", str(path), "--scale", "2", "--preset", "ultrafast", "--face-detector", "haar",
            "--chunk-frames", "4", "--defects", "on", "--models-dir", str(tiny_models), "--jobs-dir", str(jobs)]
    assert (result := CliRunner().invoke(cli, args)).exit_code == 0, result.output
    with JobStore.open(jobs) as store:
        (job,) = store.jobs()
        chunks = [i for i in store.items(job.id) if i.key.startswith("shot")]
    assert [c.extra["dirt_mask"] is None for c in chunks] == [True, False, True]
    kept = chunks[1].extra["dirt_mask"]
    assert kept["offset"] == 2
    mask = np.asarray(Image.open(jobs / job.id / kept["file"]).convert("L")) > 0
    truth = np.zeros((H, W), np.uint8)
    cv2.circle(truth, BLOTCH[::-1], 4, 1, -1)
    assert mask.shape == (H, W) and mask[truth.astype(bool)].mean() > 0.9  # the input's size, where the blotch was

    page = CliRunner().invoke(cli, ["report", job.id, "-o", str(tmp_path / "page"), "--quiet", "--jobs-dir", str(jobs)])
    assert page.exit_code == 0, page.output
    html = (tmp_path / "page" / "index.html").read_text()
    shot = re.search(r'<section class="shot" data-shot="0">.*?</section>', html, re.DOTALL).group(0)
    assert "frame 6 (shot0000.001)" in shot and 'class="show-repairs"' in shot
    overlay = re.search(r'<img class="repairs" src="([^"]*)"', shot).group(1)
    before = re.search(r'<img class="before" src="([^"]*)"', shot).group(1)
    with Image.open(tmp_path / "page" / overlay) as o, Image.open(tmp_path / "page" / before) as b:
        assert o.size == b.size == (2 * W, 2 * H)
        alpha = np.asarray(o)[..., 3]
    assert np.array_equal(alpha > 0, overlay_rgba(mask, o.size)[..., 3] > 0)
    assert np.array_equal(alpha[::2, ::2] > 0, mask)  # nearest enlargement: each mask pixel a 2x2 block
