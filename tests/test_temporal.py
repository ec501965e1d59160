"""Temporal steadying (``pipeline.temporal``) and its measure (``bench temporal``): still texture steadied,
moving things left as restored, the same bytes on any thread count, and the video job's option."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from archive_restore.bench.temporal import flicker
from archive_restore.pipeline.temporal import TemporalSteadier, consistent_flow
from archive_restore.pipeline.video import VideoJobOptions

H, W, SCALE = 48, 64, 2


def _scene(t: int, moving: bool) -> np.ndarray:
    """An input frame: a textured wall (still) and, when ``moving``, a bright square 3 px further each frame."""
    rng = np.random.default_rng(0)
    wall = (cv2.GaussianBlur(rng.uniform(60, 190, (H, W)).astype(np.float32), (0, 0), 2.0))
    frame = np.repeat(wall[..., None], 3, axis=2)
    if moving:
        x = 8 + 3 * t
        frame[16:32, x:x + 12] = 240
    return frame.clip(0, 255).astype(np.uint8)


def _restored(lq: np.ndarray, t: int) -> np.ndarray:
    """What a GAN upscaler does: the picture enlarged, plus texture drawn anew each frame."""
    big = cv2.resize(lq, (W * SCALE, H * SCALE), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    texture = np.random.default_rng(100 + t).normal(0, 6, big.shape[:2])[..., None]
    return (big + texture).clip(0, 255).astype(np.uint8)


def _run(moving: bool, frames: int = 8, steady: bool = True):
    lq = [_scene(t, moving) for t in range(frames)]
    out = [_restored(f, t) for t, f in enumerate(lq)]
    if steady:
        steadier = TemporalSteadier()
        out = [steadier.push(a, b) for a, b in zip(lq, out)]
    return lq, out


def test_still_texture_flickers_less():
    lq, raw = _run(moving=False, steady=False)
    _, steady = _run(moving=False)
    flows = [consistent_flow(a, b) for a, b in zip(lq, lq[1:])]
    assert flicker(steady, flows) < 0.6 * flicker(raw, flows), (flicker(steady, flows), flicker(raw, flows))


def test_what_moves_keeps_its_own_restoration():
    lq, raw = _run(moving=True, steady=False)
    _, steady = _run(moving=True)
    t = 5
    x = 8 + 3 * t  # the square where it is now, and where it was a frame ago (now wall)
    now = (slice(18 * SCALE, 30 * SCALE), slice((x + 2) * SCALE, (x + 10) * SCALE))
    left = (slice(18 * SCALE, 30 * SCALE), slice((x - 3) * SCALE, (x - 1) * SCALE))
    for region in (now, left):
        assert np.abs(steady[t][region].astype(int) - raw[t][region].astype(int)).mean() < 3.0
    # and the still wall around it is steadied
    wall = (slice(36 * SCALE, 46 * SCALE), slice(4 * SCALE, 60 * SCALE))
    assert np.abs(steady[t][wall].astype(int) - steady[t - 1][wall].astype(int)).mean() < \
        0.7 * np.abs(raw[t][wall].astype(int) - raw[t - 1][wall].astype(int)).mean()


def test_dtype_and_size_are_kept_and_the_first_frame_is_its_own():
    lq = [_scene(t, True) for t in range(3)]
    floats = [_restored(f, t).astype(np.float32) / 255 for t, f in enumerate(lq)]
    steadier = TemporalSteadier()
    out = [steadier.push(a, b) for a, b in zip(lq, floats)]
    assert all(o.dtype == np.float32 and o.shape == f.shape for o, f in zip(out, floats))
    assert np.array_equal(out[0], floats[0])


def test_the_same_bytes_on_one_and_two_opencv_threads():
    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(1)
        _, one = _run(moving=True)
        cv2.setNumThreads(2)
        _, two = _run(moving=True)
    finally:
        cv2.setNumThreads(before)
    assert all(np.array_equal(a, b) for a, b in zip(one, two))


def test_the_option_is_in_a_new_jobs_identity_and_old_jobs_stay_without_it():
    assert VideoJobOptions().identity()["temporal"] == "steady"
    assert "temporal" not in VideoJobOptions(temporal="off").identity()
    old = {k: v for k, v in VideoJobOptions().identity().items() if k != "temporal"}
    assert VideoJobOptions.from_identity(old).temporal == "off"


@pytest.mark.parametrize("steady", ["steady", "off"])
def test_a_video_job_steadies_its_frames_unless_told_not_to(tmp_path, tiny_models, steady):
    from click.testing import CliRunner
    from video_clips import decoded, make_clip

    from archive_restore.cli import cli

    clip = make_clip(tmp_path / "c.mp4", count=6)
    calls = []
    real_push = TemporalSteadier.push

    def recording(self, lq, restored):
        calls.append(lq.shape)
        return real_push(self, lq, restored)

    mp = pytest.MonkeyPatch()
    mp.setattr(TemporalSteadier, "push", recording)
    try:
        result = CliRunner().invoke(cli, ["video", str(clip.path), "--scale", "1", "--preset", "ultrafast",
                                          "--face-detector", "haar", "--temporal", steady, "--models-dir",
                                          str(tiny_models), "--jobs-dir", str(tmp_path / "jobs")])
    finally:
        mp.undo()
    assert result.exit_code == 0, result.output
    assert len(decoded(tmp_path / "c_restored.mp4")[2]) == 6
    assert len(calls) == (6 if steady == "steady" else 0)
