"""``archive-restore bench quality``: does a code read off a *face* restore a *natural image* under
the same degradation? A seeded protocol that runs on any folders of HQ images and HQ faces."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .codes import blind_code, image_to_tensor, paired_face_code, paired_image_code, tensor_to_image
from .degrade import Degradation
from .errors import DataError, UsageError
from .metrics import psnr_y, ssim_y
from .models import find_model
from .nets import load_checkpoint
from .train.data import image_files, load_rgb, to_float

METHODS = ("bicubic", "uncond", "face_code", "blind_code", "oracle_code")
FACE_SIZE = 256  # held-out faces at their own size; at x4 their LQ faces are 64 px wide


@dataclass
class QualityConfig:
    images: Path
    faces: Path
    degradations: int = 12
    scale: int = 4
    seed: int = 0
    crop: int = 256
    max_images: int | None = None
    models: Sequence[Path] = ()
    compare: Sequence[Path] = ()


def center_crop(img: np.ndarray, size: int, multiple: int) -> np.ndarray:
    """The central ``size`` square (or the largest that fits), sides a multiple of ``multiple``."""
    side = min(size, min(img.shape[:2])) // multiple * multiple
    y, x = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
    return img[y : y + side, x : x + side]


def _load_folder(folder: Path, what: str) -> list[tuple[str, np.ndarray]]:
    files = image_files(folder)
    if not files:
        raise DataError(f"no {what} images found in {folder}")
    return [(str(p.relative_to(folder)), to_float(load_rgb(p))) for p in files]


def _up(lq: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(lq, size=size, mode="bicubic", align_corners=False).clamp(0, 1)


class Models:
    """The shipped networks the protocol measures, loaded once."""

    def __init__(self, dirs: Sequence[Path]):
        self.encoder = load_checkpoint(find_model("deg_encoder", dirs), expect="DegEncoder").model
        self.blind = load_checkpoint(find_model("blind_encoder", dirs), expect="BlindDegEncoder").model
        self.sr = load_checkpoint(find_model("condsr_compact", dirs), expect="CondSR").model
        self.uncond = load_checkpoint(find_model("condsr_uncond_compact", dirs), expect="CondSR").model


def _spandrel_model(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    from spandrel import ModelLoader

    desc = ModelLoader().load_from_file(str(path))
    if desc.scale != 4:
        raise UsageError(f"--compare {path}: a x{desc.scale} model; the protocol compares x4 models")
    desc.model.eval()
    return lambda lq: desc(lq)


def face_codes(models: Models, faces: list[np.ndarray], degs: list[Degradation]) -> torch.Tensor:
    """For degradation k, the paired code of held-out face k (cyclically) carrying that degradation,
    read as the photo and video jobs read a face (``paired_face_code``, at the face's own scale)."""
    codes = []
    for k, deg in enumerate(degs):
        hq = faces[k % len(faces)]
        lq = np.clip(deg.apply(hq), 0, 1)
        codes.append(paired_face_code(models.encoder, image_to_tensor(lq), image_to_tensor(hq), source_pixels=lq.shape[1]))
    return torch.cat(codes)


def run_quality(cfg: QualityConfig, progress: bool = True) -> dict:
    torch.manual_seed(cfg.seed)
    images = _load_folder(cfg.images, "HQ")[: cfg.max_images]
    faces = load_faces(cfg.faces, FACE_SIZE)
    degs = [Degradation.sample(np.random.default_rng([cfg.seed, k]), scale=cfg.scale) for k in range(cfg.degradations)]
    models = Models(cfg.models)
    compare = {Path(p).name: _spandrel_model(Path(p)) for p in cfg.compare}
    z_face = face_codes(models, faces, degs)
    scores: dict[str, list[tuple[float, float]]] = {m: [] for m in (*METHODS, *compare)}
    hits = []
    bar = tqdm(images, desc="bench quality", unit="image", disable=not progress)
    with torch.inference_mode():
        for _, img in bar:
            hq = center_crop(img, cfg.crop, cfg.scale)
            hq_t = image_to_tensor(hq)
            lqs = [image_to_tensor(np.clip(d.apply(hq), 0, 1)) for d in degs]
            z_oracle = torch.cat([paired_image_code(models.encoder, lq, hq_t) for lq in lqs])
            hits += (torch.cdist(z_face, z_oracle).argmin(dim=1) == torch.arange(len(degs))).tolist()
            for k, lq in enumerate(lqs):
                outputs = {
                    "bicubic": _up(lq, hq.shape[:2]),
                    "uncond": models.uncond(lq),
                    "face_code": models.sr(lq, z_face[k : k + 1]),
                    "blind_code": models.sr(lq, blind_code(models.blind, lq, cfg.scale)),
                    "oracle_code": models.sr(lq, z_oracle[k : k + 1]),
                    **{name: fn(lq) for name, fn in compare.items()},
                }
                for name, out in outputs.items():
                    restored = tensor_to_image(out)
                    scores[name].append((psnr_y(restored, hq, cfg.scale), ssim_y(restored, hq, cfg.scale)))
    result = {
        name: {"psnr_y": float(np.mean([s[0] for s in vals])), "ssim": float(np.mean([s[1] for s in vals]))}
        for name, vals in scores.items()
    }
    result.update(
        retrieval_top1=float(np.mean(hits)),
        images=len(images),
        faces=len(faces),
        degradations=cfg.degradations,
        scale=cfg.scale,
        seed=cfg.seed,
        crop=cfg.crop,
        images_dir=str(cfg.images),
        faces_dir=str(cfg.faces),
        cpu_seconds_per_256=cpu_time_per_256(models.sr),
    )
    return result


def load_faces(folder: Path, size: int) -> list[np.ndarray]:
    """Aligned HQ faces resized (area) to ``size`` x ``size``, as the encoders saw them in training."""
    files = image_files(folder)
    if not files:
        raise DataError(f"no face images found in {folder}")
    return [to_float(cv2.resize(load_rgb(p), (size, size), interpolation=cv2.INTER_AREA)) for p in files]


def cpu_time_per_256(model: torch.nn.Module, repeats: int = 3) -> float:
    """Seconds for one 256x256 input through the restorer on the CPU (best of ``repeats``)."""
    lq = torch.rand(1, 3, 256, 256)
    z = torch.zeros(1, model.code_dim)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(lq, z)
            best = min(best, time.perf_counter() - t0)
    return best


def format_table(result: dict) -> str:
    rows = [name for name in result if isinstance(result[name], dict) and "psnr_y" in result[name]]
    lines = [f"{'method':<28} {'PSNR-Y (dB)':>11} {'SSIM':>7}"]
    for name in rows:
        lines.append(f"{name:<28} {result[name]['psnr_y']:>11.3f} {result[name]['ssim']:>7.4f}")
    lines.append(f"code retrieval top-1 (face -> natural, among {result['degradations']}): {result['retrieval_top1']:.1%}")
    lines.append(
        f"{result['images']} images x {result['degradations']} degradations, x{result['scale']}, seed {result['seed']}; "
        f"CondSR CPU time per 256x256 input: {result['cpu_seconds_per_256']:.3f} s"
    )
    return "\n".join(lines)
