"""Steady faces along a track: on a synthetic clip of a still face with per-frame noise and landmark
jitter, smoothing reduces the frame-to-frame change of the pasted face; a moving face is followed."""
from __future__ import annotations

import cv2
import numpy as np

from archive_restore.faces import align_face, feather_mask, paste_back
from archive_restore.faces.align import FFHQ_TEMPLATE_512
from archive_restore.faces.detect import Face
from archive_restore.faces.steady import TrackSmoother

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
