"""Face tracking across frames: IoU matching plus a constant-velocity Kalman filter (numpy only).

Our own small SORT-like tracker (facexlib's SORT breaks on numpy 2). Faces are detected every k
frames; between detections each track's filter predicts where its box has moved, and a detection is
linked to the track whose predicted box overlaps it most (greedy, best IoU first, at least
``iou_threshold``), and failing any overlap to the nearest predicted centre within ``distance_gate``
face sizes. Unmatched detections start tracks; a track missed ``max_misses`` detection rounds
in a row ends. Each track keeps its ``keep`` best crops by a quality score the caller supplies
(``faces.align.face_quality``: size x detector score x sharpness).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .detect import Face


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class BoxFilter:
    """Kalman filter on (cx, cy, w, h) with constant velocity; time in frames."""

    def __init__(self, box: tuple[float, ...], frame: int) -> None:
        self.x = np.concatenate([_centre_size(box), np.zeros(4)])
        size = max(box[2] - box[0], box[3] - box[1], 1.0)
        self.P = np.diag([size, size, size, size, 10 * size, 10 * size, 10 * size, 10 * size]) ** 2 / 100
        self.frame = frame

    def predict(self, frame: int) -> tuple[float, ...]:
        """Advance the state to ``frame`` and return the predicted box."""
        dt = frame - self.frame
        if dt > 0:
            F = np.eye(8)
            F[:4, 4:] = dt * np.eye(4)
            size = max(self.x[2], self.x[3], 1.0)
            Q = np.diag([1, 1, 1, 1, 0.1, 0.1, 0.1, 0.1]) * (0.05 * size) ** 2 * dt
            self.x, self.P = F @ self.x, F @ self.P @ F.T + Q
            self.frame = frame
        return self.box

    def correct(self, box: tuple[float, ...]) -> None:
        """Fold in a measured box at the current frame."""
        H = np.hstack([np.eye(4), np.zeros((4, 4))])
        size = max(box[2] - box[0], box[3] - box[1], 1.0)
        R = np.eye(4) * (0.1 * size) ** 2
        innovation = _centre_size(box) - H @ self.x
        S = H @ self.P @ H.T + R
        K = self.P @ H.T @ np.linalg.inv(S)
        self.x = self.x + K @ innovation
        self.P = (np.eye(8) - K @ H) @ self.P

    @property
    def box(self) -> tuple[float, ...]:
        cx, cy, w, h = self.x[:4]
        w, h = max(w, 1.0), max(h, 1.0)
        return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _centre_distance(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Distance between box centres, in units of the larger box's size."""
    ca, cb = _centre_size(a), _centre_size(b)
    size = max(ca[2], ca[3], cb[2], cb[3], 1.0)
    return float(np.hypot(*(ca[:2] - cb[:2])) / size)


def _greedy(scored: list[tuple[float, int, int]], accept, pairs: list[tuple[int, int]]) -> None:
    """Add (track, face) pairs from best score down while ``accept(score)``, each used once."""
    used_t = {t for t, _ in pairs}
    used_f = {f for _, f in pairs}
    for score, ti, fi in scored:
        if not accept(score):
            break
        if ti not in used_t and fi not in used_f:
            used_t.add(ti)
            used_f.add(fi)
            pairs.append((ti, fi))


def _centre_size(box: tuple[float, ...]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dtype=np.float64)


@dataclass(order=True)
class Crop:
    """A candidate crop of a track: its quality, frame index, the face and any payload (an aligned
    crop, a code)."""

    quality: float
    frame: int
    face: Face = field(compare=False)
    payload: Any = field(compare=False, default=None)


@dataclass
class Track:
    """One face followed through frames."""

    id: int
    filter: BoxFilter
    first_frame: int
    last_frame: int
    hits: int = 1
    misses: int = 0
    keep: int = 3
    best: list[Crop] = field(default_factory=list)  # a min-heap by quality

    def would_keep(self, quality: float) -> bool:
        """Whether a crop of this quality would enter the best ``keep``."""
        return len(self.best) < self.keep or quality > self.best[0].quality

    def offer(self, crop: Crop) -> None:
        """Keep ``crop`` if it is among the best ``keep`` seen."""
        if len(self.best) < self.keep:
            heapq.heappush(self.best, crop)
        elif crop.quality > self.best[0].quality:
            heapq.heapreplace(self.best, crop)

    def crops(self) -> list[Crop]:
        """The kept crops, best first."""
        return sorted(self.best, reverse=True)


class FaceTracker:
    """Links detections made every few frames into tracks."""

    def __init__(self, iou_threshold: float = 0.3, max_misses: int = 2, keep: int = 3,
                 distance_gate: float = 1.5) -> None:
        self.iou_threshold = iou_threshold
        self.distance_gate = distance_gate
        self.max_misses = max_misses
        self.keep = keep
        self.active: list[Track] = []
        self.ended: list[Track] = []
        self._next_id = 0

    def update(self, faces: list[Face], frame: int) -> list[tuple[Track, Face]]:
        """Link the faces detected at ``frame`` to tracks; returns each face with its track."""
        predicted = [t.filter.predict(frame) for t in self.active]
        pairs = self._match(predicted, faces)
        linked: list[tuple[Track, Face]] = []
        matched_tracks = set()
        for ti, fi in pairs:
            track, face = self.active[ti], faces[fi]
            track.filter.correct(face.box)
            track.hits, track.misses, track.last_frame = track.hits + 1, 0, frame
            matched_tracks.add(ti)
            linked.append((track, face))
        self._age(matched_tracks)
        matched_faces = {fi for _, fi in pairs}
        for fi, face in enumerate(faces):
            if fi not in matched_faces:
                linked.append((self._start(face, frame), face))
        return linked

    def _match(self, predicted: list[tuple[float, ...]], faces: list[Face]) -> list[tuple[int, int]]:
        """Greedy matching, best IoU first; then, for what is left, the nearest centres within
        ``distance_gate`` face sizes (a new track has no velocity yet, so its first jump between
        detections may not overlap)."""
        pairs: list[tuple[int, int]] = []
        scores = [(iou(p, f.box), ti, fi) for ti, p in enumerate(predicted) for fi, f in enumerate(faces)]
        _greedy(sorted(scores, reverse=True), lambda s: s >= self.iou_threshold, pairs)
        nearness = [(-_centre_distance(p, f.box), ti, fi) for ti, p in enumerate(predicted)
                    for fi, f in enumerate(faces)]
        _greedy(sorted(nearness, reverse=True), lambda s: -s <= self.distance_gate, pairs)
        return pairs

    def _age(self, matched: set[int]) -> None:
        alive = []
        for ti, track in enumerate(self.active):
            if ti not in matched:
                track.misses += 1
            (self.ended if track.misses > self.max_misses else alive).append(track)
        self.active = alive

    def _start(self, face: Face, frame: int) -> Track:
        track = Track(self._next_id, BoxFilter(face.box, frame), frame, frame, keep=self.keep)
        self._next_id += 1
        self.active.append(track)
        return track

    def finish(self) -> list[Track]:
        """End every track (e.g. at a shot boundary) and return all tracks since the last finish,
        in the order they started."""
        tracks = sorted(self.ended + self.active, key=lambda t: t.id)
        self.ended, self.active = [], []
        return tracks
