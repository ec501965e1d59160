"""Seeded, parameterised degradations of archive photos and videos (DESIGN.md section 3).

    deg = Degradation.sample(rng, scale=4)   # a random chain from the training distribution
    lq = deg.apply(hq)                        # float32 [0, 1], shape (H // 4, W // 4, C)
    vec = deg.params_vector()                 # (PARAM_DIM,) effective strengths, see params.py
    Degradation.from_dict(deg.to_dict())      # JSON round trip

Modules: stages (protocol, registry), blur, resample, noise, compress, archive (the stage kinds),
chain (Degradation), sampling (the training distribution), params (the parameter vector).
"""
from .archive import ColorCast, DustScratches, Fade, Halftone, Interlace
from .blur import AnisotropicBlur, DefocusBlur, GaussianBlur, MotionBlur
from .chain import Degradation
from .compress import JpegCompression, VideoCodec, jpeg_encode
from .noise import FilmGrain, GaussianNoise, PoissonNoise
from .params import PARAM_DIM, PARAM_NAMES
from .resample import Resize
from .sampling import SEVERITY_SHARES
from .stages import Stage, stage_from_dict

__all__ = [
    "PARAM_DIM", "PARAM_NAMES", "SEVERITY_SHARES", "AnisotropicBlur", "ColorCast", "DefocusBlur",
    "Degradation", "DustScratches", "Fade", "FilmGrain", "GaussianBlur", "GaussianNoise",
    "Halftone", "Interlace", "JpegCompression", "MotionBlur", "PoissonNoise", "Resize", "Stage",
    "VideoCodec", "jpeg_encode", "stage_from_dict",
]
