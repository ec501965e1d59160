"""Shot boundaries, chunking, the face tracker and the per-shot code fallbacks."""
from __future__ import annotations

import numpy as np
import pytest
from video_clips import frame_pixels

from archive_restore.faces import Face
from archive_restore.faces.track import BoxFilter, Crop, FaceTracker, iou
from archive_restore.pipeline.shots import ShotDetector, ShotOptions, chunk_ranges
from archive_restore.pipeline.video import BLIND, FACES, NEIGHBOUR, WHOLE, Analysis, Shot


# -------------------------------------------------------------------------------------------- shots
def _cuts(frames, options=ShotOptions()) -> list[int]:
    detector = ShotDetector(options)
    return [i for i, f in enumerate(frames) if detector.push(f)]


def test_hard_cuts_are_found_and_motion_is_not_a_cut():
    starts = (9, 17, 30)
    frames = [frame_pixels(i, 96, 64, shot=sum(i >= s for s in starts)) for i in range(40)]
    assert _cuts(frames) == list(starts)


def test_noise_and_fades_do_not_cut(rng):
    base = frame_pixels(0, 96, 64).astype(np.float32)
    noisy = [np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8) for _ in range(20)]
    fade = [np.clip(base * (1 - i / 40), 0, 255).astype(np.uint8) for i in range(20)]
    assert _cuts(noisy) == [] and _cuts(fade) == []


def test_a_shot_shorter_than_min_frames_is_not_cut_again():
    frames = [frame_pixels(0, 64, 48, shot=s) for s in (0, 0, 0, 0, 0, 1, 2, 2, 2, 2, 2)]
    assert _cuts(frames, ShotOptions(min_frames=3)) == [5]


def test_chunk_ranges():
    assert chunk_ranges(10, 20, 4) == [(10, 13), (13, 17), (17, 20)]
    assert chunk_ranges(0, 5, 120) == [(0, 5)]


# ------------------------------------------------------------------------------------------ tracker
def _face(x, y, w=40, score=0.9):
    return Face((x, y, x + w, y + w), score, None, "test")


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)


def test_kalman_follows_constant_velocity():
    f = BoxFilter((0, 0, 20, 20), frame=0)
    for frame in range(3, 30, 3):
        f.predict(frame)
        f.correct((frame * 4, 0, frame * 4 + 20, 20))
    x0, _, x1, _ = f.predict(33)
    assert abs(x0 - 132) < 3 and abs(x1 - x0 - 20) < 2


def test_tracks_keep_identity_while_faces_move_fast():
    """Two faces moving 10 px per frame, detected every 4 frames (40 px jumps, no overlap without
    the velocity): the Kalman prediction keeps each on its own track."""
    tracker = FaceTracker(iou_threshold=0.3)
    for frame in range(0, 40, 4):
        a, b = _face(10 + 10 * frame, 20), _face(10 + 10 * frame, 200)
        linked = tracker.update([b, a] if frame % 8 else [a, b], frame)
        for track, face in linked:
            track.offer(Crop(face.score * (1 + frame), frame, face))
    tracks = tracker.finish()
    assert len(tracks) == 2
    for track in tracks:
        assert track.hits == 10
        ys = {c.face.box[1] for c in track.best}
        assert len(ys) == 1  # never swapped with the other face
        assert [c.frame for c in track.crops()] == [36, 32, 28]  # the 3 best, best first


def test_a_lost_face_ends_its_track_and_a_new_one_starts():
    tracker = FaceTracker(max_misses=1)
    tracker.update([_face(0, 0)], 0)
    tracker.update([], 5)
    tracker.update([], 10)
    tracker.update([_face(0, 0)], 15)
    assert [t.hits for t in tracker.finish()] == [1, 1]


# ----------------------------------------------------------------------------------- code fallbacks
def _shots(with_faces: set[int], count: int) -> list[Shot]:
    shots = []
    for i in range(count):
        shot = Shot(i, i * 10, i * 10, blind=[np.full(4, -1.0, np.float32)])
        if i in with_faces:
            shot.code, shot.source, shot.confidence = np.full(4, float(i), np.float32), FACES, 0.8
        shots.append(shot)
    return shots


def _fill(shots):
    analysis = Analysis.__new__(Analysis)
    analysis.shots = shots
    analysis._fill_codes()
    return shots


def test_shots_without_faces_borrow_from_the_nearest_then_the_video_then_blind():
    shots = _fill(_shots({1, 2}, 6))
    assert [s.source for s in shots] == [NEIGHBOUR, FACES, FACES, NEIGHBOUR, NEIGHBOUR, WHOLE]
    assert shots[0].code[0] == 1 and shots[3].code[0] == 2 and shots[4].code[0] == 2
    assert [s.confidence for s in shots[:5]] == [0.4, 0.8, 0.8, 0.4, 0.4]  # a neighbour's code, half as sure
    # shot 5 is too far from both: the whole video's code, the mean of the two face shots' (all 1 and all 2)
    assert np.array_equal(shots[5].code, np.full(4, 1.5, np.float32)) and shots[5].confidence == 0.2
    assert shots[5].detail == "whole video (2 shots with faces)"
    blind = _fill(_shots(set(), 2))
    assert [s.source for s in blind] == [BLIND, BLIND] and blind[0].code[0] == -1


def test_background_calls_run_in_order_and_raise_errors():
    from archive_restore.pipeline.video import _Background

    seen = []
    with _Background(seen.append, 2, "test") as worker:
        for i in range(10):
            worker.put(i)
    assert seen == list(range(10))

    def fail(value):
        raise ValueError(f"bad {value}")

    with pytest.raises(ValueError, match="bad 0"):
        with _Background(fail, 2, "test") as worker:
            for i in range(5):
                worker.put(i)
