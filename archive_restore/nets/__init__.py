"""The networks, written from the ReDegNet paper's description: encoders, synthesiser, restorer."""
from .checkpoint import (
    ARCHITECTURES,
    Checkpoint,
    load_checkpoint,
    read_header,
    save_checkpoint,
)
from .cleanup import Cleanup, build_cleanup
from .condsr import SIZES, CondSR, build_condsr, restore_at_scale
from .degnet import BlindDegEncoder, DegEncoder
from .degsynth import DegSynth

__all__ = [
    "ARCHITECTURES", "Checkpoint", "load_checkpoint", "read_header", "save_checkpoint",
    "SIZES", "Cleanup", "build_cleanup", "CondSR", "build_condsr", "restore_at_scale", "BlindDegEncoder", "DegEncoder", "DegSynth",
]
