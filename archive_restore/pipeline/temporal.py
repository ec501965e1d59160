"""Frames that do not flicker: the restored frame pulled towards the previous one where the scene did not change.

Each frame is restored on its own, and a GAN upscaler invents texture that need not come out the same
twice; on a still wall the difference shows as shimmer. :class:`TemporalSteadier` follows the motion of
the *input* (OpenCV's DIS optical flow from this frame to the previous one, at the input's size), warps
the previous *output* onto this frame, and blends it in where the input itself did not change there
(the motion-compensated input difference is within the noise, which also leaves out where the flow
failed or a point was occluded): ``out = restored + weight * (previous warped - restored)``. What moves, appears or is
occluded keeps this frame's own restoration. Being recursive, it averages the invented texture over the
frames a point stays still.

It starts afresh with each render chunk (a chunk lies within one shot), so a chunk's frames depend only
on the chunk: resumes and re-runs give the same bytes. ``bench temporal`` measures it.
"""
from __future__ import annotations

import cv2
import numpy as np

BLEND = 0.6          # the previous frame's weight where the scene is still and the flow sure
# input luma difference (0..255) at which a point counts as changed: the weight falls as exp(-(d / this)^2)
NOISE_LEVEL = 6.0
# DIS's presets: the steadier's flow runs every frame (fast: 22 ms at 854x480 here, medium 65 ms); what
# measures flicker (``consistent_flow``, ``bench temporal``) takes the better one
STEADY_PRESET = cv2.DISOPTICAL_FLOW_PRESET_FAST
MEASURE_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM


def _grey(rgb: np.ndarray) -> np.ndarray:
    x = rgb if rgb.dtype == np.uint8 else (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(x), cv2.COLOR_RGB2GRAY)


def optical_flow(a: np.ndarray, b: np.ndarray, preset: int = MEASURE_PRESET) -> np.ndarray:
    """Dense flow from picture ``a`` to ``b`` (HxWx2, pixels): ``a`` at x shows what ``b`` shows at x + flow."""
    dis = cv2.DISOpticalFlow_create(preset)
    return dis.calc(_grey(a), _grey(b), None)


def warp(picture: np.ndarray, flow: np.ndarray, grid: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """``picture`` sampled at x + ``flow(x)`` (bilinear; edges repeated): ``picture`` moved onto the frame the
    flow starts from. ``grid``: the pixel coordinates (``pixel_grid``), when the caller keeps them."""
    xs, ys = grid if grid is not None else pixel_grid(*flow.shape[:2])
    return cv2.remap(picture, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))


def consistent_flow(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The flow from ``a`` to ``b`` and where it is reliable: the backward flow, taken where the forward flow
    lands, brings the point back (within 0.5 px plus 5 % of the motion)."""
    forward, backward = optical_flow(a, b), optical_flow(b, a)
    back = warp(backward, forward)
    error = np.sum((forward + back) ** 2, axis=-1)
    bound = 0.01 * (np.sum(forward ** 2, axis=-1) + np.sum(back ** 2, axis=-1)) + 0.25
    return forward, error < bound


def scaled_map(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``remap``'s map (HxWx2) for a picture of ``size`` (width, height) from a flow at a smaller size: where
    each of its pixels samples, the flow's sample points scaled (pixel centres kept) and enlarged bilinearly."""
    h, w = flow.shape[:2]
    sx, sy = size[0] / w, size[1] / h
    xs, ys = pixel_grid(h, w)
    small = np.dstack([(xs + flow[..., 0] + 0.5) * sx - 0.5, (ys + flow[..., 1] + 0.5) * sy - 0.5])
    return cv2.resize(small, size, interpolation=cv2.INTER_LINEAR)


class TemporalSteadier:
    """Steadies one run of consecutive frames of a shot (see the module); ``push`` each (input, restored).
    Restored frames stay in their dtype (uint8, or float in [0, 1]); the blend is OpenCV's ``blendLinear``."""

    def __init__(self, blend: float = BLEND, noise: float = NOISE_LEVEL):
        self.blend, self.noise = blend, noise
        self._input: np.ndarray | None = None
        self._output: np.ndarray | None = None

    def push(self, lq: np.ndarray, restored: np.ndarray) -> np.ndarray:
        """The steadied ``restored`` (same dtype and size) of input frame ``lq``."""
        if self._input is not None and self.blend > 0 and self._output.shape == restored.shape:
            restored = self._steadied(lq, restored)
        self._input, self._output = lq, restored
        return restored

    def _steadied(self, lq: np.ndarray, picture: np.ndarray) -> np.ndarray:
        grey, before = _grey(lq), _grey(self._input)
        flow = cv2.DISOpticalFlow_create(STEADY_PRESET).calc(grey, before, None)
        changed = np.abs(grey.astype(np.float32) - warp(before.astype(np.float32), flow))
        weight = (self.blend * np.exp(-((changed / self.noise) ** 2))).astype(np.float32)
        size = (picture.shape[1], picture.shape[0])
        where = scaled_map(flow, size)
        previous = cv2.remap(self._output, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        big_weight = cv2.resize(weight, size, interpolation=cv2.INTER_LINEAR)
        return cv2.blendLinear(previous, picture, big_weight, 1.0 - big_weight)
