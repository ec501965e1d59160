"""Faces: detection (RetinaFace, YuNet, Haar behind one interface), FFHQ alignment and paste-back."""
from .align import (
    FFHQ_TEMPLATE_512,
    AlignedFace,
    align_face,
    box_to_landmarks,
    estimate_affine,
    face_quality,
    feather_mask,
    paste_back,
)
from .detect import Face, FaceDetector, find_model_file, make_detector

__all__ = [
    "FFHQ_TEMPLATE_512",
    "AlignedFace",
    "Face",
    "FaceDetector",
    "align_face",
    "box_to_landmarks",
    "estimate_affine",
    "face_quality",
    "feather_mask",
    "find_model_file",
    "make_detector",
    "paste_back",
]
