"""``bench faces``: what our face restorer (``--face-restorer ours``) makes of faces it never saw. Held-out aligned
HQ faces (``faces256``, left out of ``train faces``) are brought to the 512 px of an aligned crop, shrunk 4 or 8
times by a degradation drawn from our chain (a face of 128 or 64 px in the photo), and enlarged back to 512 as
the job's alignment enlarges a small face; PSNR-Y and SSIM-Y against the HQ face, for that enlargement (bicubic:
what the restorer starts from) and for the restorer's face. GFPGAN's figures join when its file is present."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..degrade import Degradation
from ..media.folders import image_files, load_rgb, to_float
from ..quality.metrics import psnr_y, ssim_y

SIDE = 512           # the aligned crop's side (``faces.restore.FACE_SIZE``)
SHRINKS = (4, 8)     # how much smaller the faces were in their photos


@dataclass
class FaceFigures:
    method: str
    shrink: int
    faces: int
    psnr: float
    ssim: float


def degraded_faces(folder: Path, shrink: int, seed: int, repeats: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(HQ faces at 512, their degraded copies enlarged back to 512), ``repeats`` degradations per face, each
    drawn from ``(seed, shrink, face, repeat)``."""
    hq, lq = [], []
    for i, path in enumerate(image_files(folder)):
        face = to_float(cv2.resize(load_rgb(path), (SIDE, SIDE), interpolation=cv2.INTER_CUBIC))
        for r in range(repeats):
            small = Degradation.sample(np.random.default_rng([seed, shrink, i, r]), scale=shrink).apply(face)
            lq.append(np.clip(cv2.resize(np.clip(small, 0, 1), (SIDE, SIDE), interpolation=cv2.INTER_CUBIC), 0, 1))
            hq.append(face)
    return hq, lq


def face_restorers(models_dirs: Sequence[Path], device) -> dict:
    """Ours (required) and GFPGAN (when its file is found), by name."""
    from ..faces.restore import find_gfpgan, load_face_restorer, load_own_face_restorer

    restorers = {"ours": load_own_face_restorer(models_dirs, device)}
    gfpgan = find_gfpgan(models_dirs)
    if gfpgan is not None:
        restorers["gfpgan"] = load_face_restorer(gfpgan, device)
    return restorers


def measure_faces(folder: Path, restorers: dict, seed: int = 7, repeats: int = 3,
                  shrinks: Sequence[int] = SHRINKS) -> list[FaceFigures]:
    """Figures for bicubic and for each of ``restorers`` (name -> an object with ``restore(faces)``)."""
    rows = []
    for shrink in shrinks:
        hq, lq = degraded_faces(folder, shrink, seed, repeats)
        outputs = {"bicubic": lq, **{name: list(r.restore(lq)) for name, r in restorers.items()}}
        for name, out in outputs.items():
            rows.append(FaceFigures(name, shrink, len(hq), float(np.mean([psnr_y(o, h) for o, h in zip(out, hq)])),
                                    float(np.mean([ssim_y(o, h) for o, h in zip(out, hq)]))))
    return rows


def format_faces(rows: list[FaceFigures]) -> str:
    lines = ["| restorer | face shrunk | faces | PSNR-Y | SSIM-Y |", "|---|---|---|---|---|"]
    lines += [f"| {r.method} | x{r.shrink} | {r.faces} | {r.psnr:.2f} dB | {r.ssim:.4f} |" for r in rows]
    return "\n".join(lines)
