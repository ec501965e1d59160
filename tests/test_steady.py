"""Steady faces along a track: on a synthetic clip of a still face with per-frame noise and landmark
jitter, smoothing reduces the frame-to-frame change of the pasted face; a moving face is followed.
Faces are followed along tracks (``SteadyFaces``) through the engine's paste path, the steadiness
benchmark and the video job's render."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from archive_restore.bench.steady import face_region, flicker, measure, still_face_clip
from archive_restore.cli import cli
from archive_restore.faces import align_face, feather_mask, paste_back
from archive_restore.faces.align import FFHQ_TEMPLATE_512, box_to_landmarks
from archive_restore.faces.detect import Face
from archive_restore.faces.steady import SteadyFaces, TrackSmoother
from archive_restore.pipeline import video as video_module
from archive_restore.pipeline.engine import Engine, EngineOptions

SIZE, CROP, FRAMES = 128, 256, 16


def _scene(rng: np.random.Generator) -> np.ndarray:
    """A textured still picture (smoothed noise), float RGB."""
    texture = cv2.GaussianBlur(rng.random((SIZE, SIZE, 3)).astype(np.float32), (0, 0), 2.0)
    return np.clip((texture - texture.mean()) * 4 + 0.5, 0, 1)


TRUE_MARKS = (FFHQ_TEMPLATE_512 * (SIZE / 2 / 512) + SIZE / 4).astype(np.float32)


def _face(marks: np.ndarray) -> Face:
    return Face((SIZE / 4, SIZE / 4, 3 * SIZE / 4, 3 * SIZE / 4), 1.0, marks, "test")


def _render(scene, rng, smoother: TrackSmoother | None, shift=(0.0, 0.0)) -> list[np.ndarray]:
    """Each frame: noisy LQ, jittered landmarks, 'restored' face (the aligned crop), pasted into the scene."""
    frames = []
    for t in range(FRAMES):
        lq = np.clip(scene + rng.normal(0, 0.04, scene.shape), 0, 1).astype(np.float32)
        marks = TRUE_MARKS + np.float32(t) * np.float32(shift) + rng.normal(0, 0.8, TRUE_MARKS.shape).astype(np.float32)
        if smoother is not None:
            marks = smoother.landmarks(marks)
        aligned = align_face(lq, _face(marks), CROP)
        restored = aligned.crop if smoother is None else smoother.face(aligned, aligned.crop)
        frames.append(paste_back(scene, restored, aligned, mask=feather_mask(CROP, "ellipse")))
    return frames


def _flicker(frames: list[np.ndarray], region: np.ndarray) -> float:
    """Mean absolute change between consecutive frames inside ``region``."""
    return float(np.mean([np.abs(b - a)[region].mean() for a, b in zip(frames, frames[1:])]))


def test_smoothing_reduces_the_flicker_of_a_still_pasted_face():
    scene = _scene(np.random.default_rng(0))
    aligned = align_face(scene, _face(TRUE_MARKS), CROP)
    inside = paste_back(np.zeros_like(scene), np.ones((CROP, CROP, 3), np.float32), aligned,
                        mask=feather_mask(CROP, "ellipse"))[:, :, 0] > 0.5

    raw = _flicker(_render(scene, np.random.default_rng(1), None), inside)
    steady = _flicker(_render(scene, np.random.default_rng(1), TrackSmoother()), inside)
    print(f"frame-to-frame mean |diff| of the pasted face: {raw:.4f} raw, {steady:.4f} smoothed")
    assert steady < 0.7 * raw


def test_a_moving_face_is_followed_without_lag_or_ghosts():
    smoother = TrackSmoother()
    rng = np.random.default_rng(2)
    scene = _scene(rng)
    for t in range(6):
        marks = TRUE_MARKS + np.float32(6 * t)  # 6 px per frame diagonally: real motion
        smoothed = smoother.landmarks(marks)
        assert np.abs(smoothed - marks).max() < 1e-4
        aligned = align_face(scene, _face(smoothed), CROP)
        crop = aligned.crop.copy()
        assert np.array_equal(smoother.face(aligned, crop), crop)  # no blend with a face that moved


def test_reset_forgets_the_track():
    smoother = TrackSmoother()
    smoother.landmarks(TRUE_MARKS)
    smoother.reset()
    assert np.array_equal(smoother.landmarks(TRUE_MARKS + 0.5), TRUE_MARKS + 0.5)


def test_landmark_jitter_of_a_still_face_is_averaged_away():
    rng, smoother = np.random.default_rng(3), TrackSmoother()
    raw = [TRUE_MARKS + rng.normal(0, 0.8, TRUE_MARKS.shape).astype(np.float32) for _ in range(40)]
    smoothed = [smoother.landmarks(m) for m in raw]
    error = [float(np.mean([np.abs(m - TRUE_MARKS).mean() for m in s[10:]])) for s in (raw, smoothed)]
    step = [float(np.mean([np.abs(b - a).mean() for a, b in zip(s[10:], s[11:])])) for s in (raw, smoothed)]
    print(f"landmark error {error[0]:.3f} raw, {error[1]:.3f} smoothed; step {step[0]:.3f} raw, {step[1]:.3f} smoothed")
    assert step[1] < 0.5 * step[0]


# ------------------------------------------------------------------------------ faces along tracks

def _box_face(x: float, y: float, side: float = 40.0) -> Face:
    return Face((x, y, x + side, y + side), 0.9, None, "test")


def test_faces_are_followed_along_tracks_each_with_its_own_smoother():
    steady = SteadyFaces(max_misses=2)
    first = steady.follow([_box_face(10, 10), _box_face(200, 10)])
    assert len(first) == 2 and first[0][1] is not first[1][1]
    smoothers = {round(f.box[0]): s for f, s in first}

    jittered = steady.follow([_box_face(11, 10), _box_face(199, 11)])
    assert {round(f.box[0]) // 10: s for f, s in jittered} == {1: smoothers[10], 19: smoothers[200]}
    assert all(f.landmarks is not None for f, _ in jittered)  # smoothed box landmarks for Haar faces

    # the detector misses the right face: it is still pasted, near where it was, with its smoother
    missed = steady.follow([_box_face(10, 10)])
    assert len(missed) == 2
    coasted = next((f, s) for f, s in missed if f.box[0] > 100)
    assert coasted[1] is smoothers[200] and abs(coasted[0].box[0] - 199.5) < 2

    steady.follow([_box_face(10, 10)])
    gone = steady.follow([_box_face(10, 10)])  # missed three frames in a row: its track ended
    assert len(gone) == 1 and gone[0][1] is smoothers[10]
    back = steady.follow([_box_face(10, 10), _box_face(200, 10)])
    assert len(back) == 2 and all(s is not smoothers[200] for _, s in back)  # a new track, a new smoother


def test_landmarks_of_a_jittering_detection_are_steadied():
    rng, steady = np.random.default_rng(4), SteadyFaces()
    raw, smoothed = [], []
    for _ in range(20):
        face = _box_face(*(50 + rng.normal(0, 1.0, 2)), side=120)
        ((followed, _),) = steady.follow([face])
        raw.append(box_to_landmarks(face.box))
        smoothed.append(followed.landmarks)
    step = [np.mean([np.abs(b - a).mean() for a, b in zip(m[5:], m[6:])]) for m in (raw, smoothed)]
    assert step[1] < 0.6 * step[0]


# ------------------------------------------------------- the paste path, the benchmark, the render

@pytest.fixture
def engine(tiny_models, random_restorer) -> Engine:
    return Engine(EngineOptions(scale=1, device="cpu", face_detector="haar", models_dirs=(tiny_models, random_restorer)))


def test_steadied_paste_flickers_less_on_a_still_noisy_face(engine, face_rgb):
    face = face_rgb.astype(np.float32) / 255
    result = measure(engine, face, frames=12, noise=0.03, seed=0)
    print("\n".join(result.lines()))
    assert result.restorer == "GFPGANv1.4"  # the random-weight stand-in, found as GFPGAN
    assert result.steady < 0.5 * result.raw


def test_bench_steady_command_prints_both_figures(tiny_models, tmp_path, monkeypatch, face_rgb):
    from PIL import Image

    monkeypatch.delenv("ARCHIVE_RESTORE_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    Image.fromarray(face_rgb).save(tmp_path / "face.png")
    result = CliRunner().invoke(cli, ["bench", "steady", "--image", str(tmp_path / "face.png"), "--width",
                                      str(face_rgb.shape[1]), "--frames", "4", "--restorer", "identity",
                                      "--models-dir", str(tiny_models)])
    assert result.exit_code == 0, result.output
    assert "face restorer: identity" in result.output
    assert "pasted, per frame" in result.output and "pasted, steadied" in result.output


def _write_clip(path: Path, frames: list[np.ndarray]) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"crf": "4", "preset": "ultrafast"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt, stream.codec_context.time_base = "yuv444p", Fraction(1, 1000)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv444p")
            frame.pts, frame.time_base = 40 * i, Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


class _Unsteady(SteadyFaces):
    """The render as it was before: every frame's faces on their own."""

    def follow(self, faces):
        return [(f, None) for f in faces]


def test_the_video_render_steadies_a_still_face(tmp_path, tiny_models, random_restorer, face_rgb, engine,
                                                monkeypatch):
    face = face_rgb[: face_rgb.shape[0] // 2 * 2].astype(np.float32) / 255
    clip = [np.round(f * 255).astype(np.uint8) for f in still_face_clip(face, 8, 0.03, seed=1)]
    _write_clip(tmp_path / "still.mp4", clip)
    region = face_region(engine, face)

    def render(name: str) -> float:
        out = tmp_path / f"{name}.mp4"
        result = CliRunner().invoke(cli, ["video", str(tmp_path / "still.mp4"), "-o", str(out), "--scale", "1",
                                          "--preset", "ultrafast", "--crf", "4", "--face-detector", "haar",
                                          "--models-dir", str(tiny_models), "--models-dir", str(random_restorer),
                                          "--jobs-dir", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        with av.open(str(out)) as container:
            frames = [f.to_ndarray(format="rgb24").astype(np.float32) / 255 for f in container.decode(video=0)]
        assert len(frames) == 8
        return flicker(frames, region)

    steady = render("steady")
    monkeypatch.setattr(video_module, "SteadyFaces", _Unsteady)
    unsteady = render("unsteady")
    print(f"video render, pasted face frame-to-frame |diff|: {unsteady:.4f} per frame, {steady:.4f} steadied")
    assert steady < 0.8 * unsteady
