"""Alignment of a face to the FFHQ 512 template, and the way back (paste-back with a soft mask).

A similarity transform (rotation, uniform scale, translation) maps the 5 landmarks of a detected face
onto the standard FFHQ template; the aligned crop is what face restorers and the degradation encoder
read. ``paste_back`` warps a (restored) crop back into the picture, which may be the detection image
itself or an upscaled version of it (``scale``), and blends it through a feathered mask.

Crop borders that fall outside the picture are filled by reflection (``border="reflect"``, the
default: no hard edge for a network to restore) or with mid-gray (``border="gray"``).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from ..errors import InputError
from .detect import Face

#: FFHQ 5-point template for a 512x512 crop: left eye, right eye, nose, left and right mouth corner
#: (image left/right), as used by the face-restoration community (facexlib's face helper).
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float32,
)

#: Where the 5 template points fall inside a Haar cascade box, as fractions of its width and height
#: (measured with the cascade on FFHQ-aligned crops, made symmetric). Used for faces without landmarks.
BOX_LANDMARKS = np.array(
    [
        [0.321, 0.381],
        [0.679, 0.381],
        [0.500, 0.591],
        [0.341, 0.754],
        [0.659, 0.754],
    ],
    dtype=np.float32,
)

BORDERS = {"reflect": cv2.BORDER_REFLECT_101, "gray": cv2.BORDER_CONSTANT}


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """An aligned crop and the 2x3 affine matrices between it and the image it was cut from.

    ``matrix`` maps image pixels to crop pixels; ``inverse`` maps crop pixels back to the image.
    """

    crop: np.ndarray
    matrix: np.ndarray
    inverse: np.ndarray
    face: Face | None = None

    @property
    def size(self) -> int:
        return int(self.crop.shape[0])

    @property
    def source_pixels(self) -> float:
        """How many pixels of the source image the crop's width spans (its resolution there)."""
        return float(self.size / np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))


def template(size: int = 512) -> np.ndarray:
    """The FFHQ template scaled to a ``size`` x ``size`` crop."""
    return FFHQ_TEMPLATE_512 * np.float32(size / 512.0)


def estimate_affine(landmarks: np.ndarray, size: int = 512) -> np.ndarray:
    """2x3 similarity matrix from image coordinates to the ``size`` template (LMEDS, as is usual)."""
    points = np.asarray(landmarks, dtype=np.float32).reshape(5, 2)
    if not np.all(np.isfinite(points)):
        raise InputError("face landmarks contain NaN or infinity; cannot align")
    matrix, _ = cv2.estimateAffinePartial2D(points, template(size), method=cv2.LMEDS)
    if matrix is None:
        raise InputError(f"cannot fit an alignment to landmarks {points.tolist()} (degenerate points)")
    return matrix.astype(np.float64)


def box_to_landmarks(box: tuple[float, float, float, float]) -> np.ndarray:
    """Typical 5 landmarks inside a frontal face box (x0, y0, x1, y1), for detectors without landmarks."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"face box {box} is empty")
    origin = np.array([x0, y0], dtype=np.float32)
    extent = np.array([x1 - x0, y1 - y0], dtype=np.float32)
    return origin + BOX_LANDMARKS * extent


def as_rgb(image: np.ndarray) -> np.ndarray:
    """float32 HxWx3 view or copy of a project image (gray HxW / HxWx1 replicated)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"expected an HxWx3, HxWx1 or HxW image; got shape {image.shape}")
    return image.astype(np.float32, copy=False)


def face_landmarks(face: Face) -> np.ndarray:
    """The face's landmarks, or typical ones placed in its box."""
    return face.landmarks if face.landmarks is not None else box_to_landmarks(face.box)


def align_face(image: np.ndarray, face: Face, size: int = 512, border: str = "reflect") -> AlignedFace:
    """Cut ``face`` out of ``image`` aligned to the FFHQ template: a float32 ``size`` x ``size`` x 3 crop."""
    if border not in BORDERS:
        raise InputError(f"unknown border {border!r}; choose one of {', '.join(BORDERS)}")
    matrix = estimate_affine(face_landmarks(face), size)
    crop = cv2.warpAffine(
        as_rgb(image),
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=BORDERS[border],
        borderValue=(0.5, 0.5, 0.5),
    )
    return AlignedFace(crop, matrix, cv2.invertAffineTransform(matrix), face)


@lru_cache(maxsize=8)
def feather_mask(size: int, shape: str = "rect") -> np.ndarray:
    """Soft blending mask in crop space: 1 inside, 0 at the crop border, feathered over ~10% of ``size``.

    ``shape`` is ``rect`` (the whole aligned crop) or ``ellipse`` (the face oval only). Being defined
    in crop space, the feathering scales with the face once warped into the picture. Read-only.
    """
    mask = np.zeros((size, size), dtype=np.float32)
    margin = max(2, round(0.06 * size))
    if shape == "rect":
        mask[margin:-margin, margin:-margin] = 1.0
    elif shape == "ellipse":
        centre = (size // 2, round(0.55 * size))
        axes = (round(0.36 * size), round(0.45 * size))
        cv2.ellipse(mask, centre, axes, 0, 0, 360, 1.0, thickness=-1)
    else:
        raise InputError(f"unknown mask shape {shape!r}; choose 'rect' or 'ellipse'")
    sigma = 0.025 * size
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma)
    mask.setflags(write=False)
    return mask


def _resize_map(factor: float) -> np.ndarray:
    """3x3 map from pixel coordinates to those of the image resized by ``factor`` (cv2.resize centres)."""
    shift = 0.5 * (factor - 1.0)
    return np.array([[factor, 0, shift], [0, factor, shift], [0, 0, 1]], dtype=np.float64)


def _homogeneous(matrix: np.ndarray) -> np.ndarray:
    return np.vstack([matrix, [0.0, 0.0, 1.0]])


def crop_to_image_matrix(aligned: AlignedFace, crop_size: int, scale: float = 1.0) -> np.ndarray:
    """2x3 map from a ``crop_size`` crop (e.g. a restorer's output) into the image resized by ``scale``."""
    full = _resize_map(scale) @ _homogeneous(aligned.inverse) @ _resize_map(aligned.size / crop_size)
    return full[:2]


def _footprint(matrix: np.ndarray, crop_size: int, height: int, width: int) -> tuple[int, ...] | None:
    """Integer (x0, y0, x1, y1) of the warped crop clipped to the image, or None when outside."""
    corners = np.array([[0, 0], [crop_size, 0], [0, crop_size], [crop_size, crop_size]], dtype=np.float64)
    mapped = corners @ matrix[:, :2].T + matrix[:, 2]
    x0, y0 = np.floor(mapped.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(mapped.max(axis=0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    return None if x0 >= x1 or y0 >= y1 else (int(x0), int(y0), int(x1), int(y1))


def _crop_mask(mask: np.ndarray, crop_size: int) -> np.ndarray:
    weights = np.asarray(mask, dtype=np.float32)
    weights = weights[:, :, 0] if weights.ndim == 3 else weights
    if weights.shape != (crop_size, crop_size):
        raise InputError(f"mask must be {crop_size}x{crop_size} like the restored crop; got {np.shape(mask)}")
    return weights


def paste_back(
    image: np.ndarray,
    restored_crop: np.ndarray,
    aligned: AlignedFace,
    mask: np.ndarray | None = None,
    scale: float = 1.0,
) -> np.ndarray:
    """``image`` (a new float32 HxWx3 array) with ``restored_crop`` warped back and blended in.

    ``image`` is the picture the face was detected on, or that picture resized by ``scale`` (faces
    found on the LQ input, pasted into the x2/x4 restored output). ``restored_crop`` may be larger
    than the aligned crop (a restorer that also upscales). ``mask`` is a crop-space weight in [0, 1]
    of the restored crop's size; by default :func:`feather_mask`.
    """
    out = as_rgb(image).copy()
    crop = as_rgb(restored_crop)
    crop_size = crop.shape[0]
    if crop.shape[1] != crop_size:
        raise InputError(f"restored crop must be square; got shape {crop.shape}")
    weights = feather_mask(crop_size) if mask is None else _crop_mask(mask, crop_size)
    matrix = crop_to_image_matrix(aligned, crop_size, scale)
    area = _footprint(matrix, crop_size, *out.shape[:2])
    if area is None:
        return out
    x0, y0, x1, y1 = area
    local = matrix.copy()
    local[:, 2] -= (x0, y0)
    size = (x1 - x0, y1 - y0)
    face = cv2.warpAffine(crop, local, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(weights, local, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    alpha = np.clip(alpha, 0.0, 1.0)[:, :, None]
    region = out[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = region + alpha * (face - region)
    return out


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of a crop's luminance (float [0, 1] scale)."""
    gray = cv2.cvtColor(as_rgb(crop), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_32F).var())


def face_quality(face: Face, image: np.ndarray, crop_size: int = 256) -> float:
    """A score in [0, 1] for choosing the best crops of a face: size x detector score x sharpness.

    - size: ``min(1, sqrt(w * h) / 256)``, a face of 256 px or more counts in full;
    - sharpness: ``v / (v + 0.001)`` with ``v`` the variance of the Laplacian of the crop aligned at
      ``crop_size`` (a fixed size, so upsampled small faces score low).
    """
    size_term = min(1.0, float(np.sqrt(max(face.width, 0.0) * max(face.height, 0.0))) / 256.0)
    crop = align_face(image, face, size=crop_size).crop
    variance = sharpness(crop)
    return float(np.clip(face.score, 0.0, 1.0) * size_term * variance / (variance + 0.001))
