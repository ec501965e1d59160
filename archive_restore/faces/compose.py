"""Putting restored faces back into a restored picture.

Each restored face is brought to the colour of the picture around it (mean and standard deviation
of each Lab channel, measured on the ring where the face is blended in, transferred from the face to
the picture's values), made gray when the photo is gray, blended with the picture's own face by
``fidelity``, and pasted through a soft mask so no edge shows: the face parsing model's face region
when one is loaded (``faces.parse``), a feathered ellipse otherwise.
"""
from __future__ import annotations

import cv2
import numpy as np

from .align import AlignedFace, _footprint, crop_to_image_matrix, feather_mask, paste_back
from .restore import blend

MASK_SIZE = 128          # crop-space size of the feathered mask ``face_alpha`` warps into a picture
RING = (0.05, 0.95)      # mask values where the face blends into the picture
STD_RATIO = (0.5, 2.0)   # limits of the contrast change colour matching may apply


def is_gray(rgb: np.ndarray, tolerance: float = 1.0 / 255.0) -> bool:
    """True when the three channels of an RGB image agree (a black-and-white photo stored as RGB)."""
    rgb = np.asarray(rgb)
    return rgb.ndim == 2 or rgb.shape[2] == 1 or float(np.ptp(rgb, axis=2).max(initial=0.0)) <= tolerance


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """Luma (Rec. 601, as OpenCV) replicated to three channels."""
    luma = cv2.cvtColor(np.ascontiguousarray(rgb, np.float32), cv2.COLOR_RGB2GRAY)
    return np.repeat(luma[:, :, None], 3, axis=2)


def ring_weights(mask: np.ndarray) -> np.ndarray:
    """Where a crop-space blending mask is neither 0 nor 1: the band around the face oval."""
    return ((mask > RING[0]) & (mask < RING[1])).astype(np.float32)


def match_colour(face: np.ndarray, reference: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``face`` with each Lab channel's weighted mean and std moved to those of ``reference``
    (both crop-sized float RGB in [0, 1]; ``weights`` the crop-space area to measure)."""
    if float(weights.sum()) < 16:
        return face
    lab_face = cv2.cvtColor(np.ascontiguousarray(face, np.float32), cv2.COLOR_RGB2LAB)
    lab_ref = cv2.cvtColor(np.ascontiguousarray(reference, np.float32), cv2.COLOR_RGB2LAB)
    mean_f, std_f = _weighted_stats(lab_face, weights)
    mean_r, std_r = _weighted_stats(lab_ref, weights)
    ratio = np.clip(std_r / np.maximum(std_f, 1e-3), *STD_RATIO)
    matched = (lab_face - mean_f) * ratio + mean_r
    return np.clip(cv2.cvtColor(matched.astype(np.float32), cv2.COLOR_LAB2RGB), 0.0, 1.0)


def _weighted_stats(lab: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = weights[:, :, None] / weights.sum()
    mean = (lab * w).sum(axis=(0, 1))
    std = np.sqrt(((lab - mean) ** 2 * w).sum(axis=(0, 1)))
    return mean, std


def picture_face(picture: np.ndarray, aligned: AlignedFace, crop_size: int, scale: float) -> np.ndarray:
    """The face as it stands in ``picture`` (the detection image resized by ``scale``), in crop space."""
    to_image = crop_to_image_matrix(aligned, crop_size, scale)
    to_crop = cv2.invertAffineTransform(to_image)
    return cv2.warpAffine(np.ascontiguousarray(picture, np.float32), to_crop, (crop_size, crop_size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def compose_face(
    picture: np.ndarray,
    restored_face: np.ndarray,
    aligned: AlignedFace,
    scale: float = 1.0,
    fidelity: float = 0.0,
    gray: bool = False,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """``picture`` (a new array) with ``restored_face`` colour-matched and pasted in.

    ``picture`` is the restored picture, ``scale`` times the size of the image ``aligned`` was cut
    from; ``fidelity`` 1 keeps the picture's own face, 0 pastes the restored one; ``mask`` the
    crop-space paste-back mask (a feathered ellipse when None).
    """
    size = restored_face.shape[0]
    mask = feather_mask(size, "ellipse") if mask is None else mask
    own = picture_face(picture, aligned, size, scale)
    face = to_gray(restored_face) if gray else restored_face
    face = match_colour(face, own, ring_weights(mask))
    if fidelity:
        face = blend(face, own, fidelity)
    return paste_back(picture, face, aligned, mask=mask, scale=scale)


def face_alpha(aligned: AlignedFace, height: int, width: int, scale: float = 1.0,
               shape: str = "ellipse") -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """Where ``aligned``'s face lies in a picture of ``height`` x ``width`` (the detection image resized by
    ``scale``): the area (x0, y0, x1, y1) and, over it, the face's feathered mask (``feather_mask`` of
    ``shape``, as ``compose_face`` pastes through; float32 in [0, 1]); None when the face is outside."""
    matrix = crop_to_image_matrix(aligned, MASK_SIZE, scale)
    area = _footprint(matrix, MASK_SIZE, height, width)
    if area is None:
        return None
    x0, y0, x1, y1 = area
    local = matrix.copy()
    local[:, 2] -= (x0, y0)
    alpha = cv2.warpAffine(feather_mask(MASK_SIZE, shape), local, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT)
    return area, np.clip(alpha, 0.0, 1.0)
