"""``archive-restore bench quality``: does a code read off a *face* restore a *natural image* under
the same degradation? A seeded protocol that runs on any folders of HQ images and HQ faces.

With ``--upscaler FILE`` it also measures the restoration stack (``pipeline.stack``): the upscaler
alone on the LQ (row ``NAME``, the file's stem) and the code-steered cleanup before it, blended
towards CondSR at ``--fidelity``, with the face, blind and oracle codes (``NAME+face_code`` ...);
several ``--fidelity`` values give a row per value (``NAME+face_code@0.3``), the trade-off curve.
At ``--scale 1`` or ``2`` the stack has a row per way of reaching a scale below the upscaler's
(``NAME+face_code/full``, ``/reduced``, ``/cleanup``: ``pipeline.stack.upscale_to``), each with the seconds
the stack took per image (``seconds``: on this machine, with its load; compare them within one run).
Every row has PSNR-Y and SSIM (fidelity) and NIQE (naturalness, no reference; on 256 px crops it
rests on few patches, so judge naturalness on full-size photos with ``bench niqe``)."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..codes import (
    blind_code,
    blind_face_code,
    image_to_tensor,
    paired_face_code,
    paired_image_code,
    tensor_to_image,
)
from ..degrade import Degradation
from ..errors import DataError, UsageError
from ..media.folders import image_files, load_rgb, to_float
from ..nets import load_checkpoint
from ..pipeline.adapt import Adaptation, fine_tune
from ..pipeline.stack import DEFAULT_FIDELITY, SCALE_METHODS, resize_to, stack_restore
from ..quality.metrics import psnr_y, ssim_y
from ..quality.niqe import niqe_or_none
from ..upscalers.upscaler import Upscaler, load_upscaler, resolve_upscaler
from ..weights.folders import find_model

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
    upscalers: Sequence[Path] = ()
    fidelities: Sequence[float] = (DEFAULT_FIDELITY,)
    precisions: Sequence[str] = ("auto",)  # the upscalers' precision on the CPU; several: rows NAME@PRECISION
    sheet: Path | None = None
    adapt: bool = False  # rows NAME+face_code+adapt: the cleanup fine-tuned to each face code
    restorer: str = "hq"  # the restored face the face code and --adapt read: the HQ face (a perfect face restorer)
                          # or ours (``--faces-without-restorer ours``'s)


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
    """The shipped networks the protocol measures, loaded once (the cleanup only with upscalers)."""

    def __init__(self, dirs: Sequence[Path], cleanup: bool = False):
        self.encoder = load_checkpoint(find_model("deg_encoder", dirs), expect="DegEncoder").model
        self.blind = load_checkpoint(find_model("blind_encoder", dirs), expect="BlindDegEncoder").model
        self.sr = load_checkpoint(find_model("condsr_compact", dirs), expect="CondSR").model
        self.uncond = load_checkpoint(find_model("condsr_uncond_compact", dirs), expect="CondSR").model
        self.cleanup = load_checkpoint(find_model("cleanup_compact", dirs), expect="Cleanup").model if cleanup else None


def _upscaler(path: Path, precision: str = "auto") -> Upscaler:
    upscaler = load_upscaler(resolve_upscaler(str(path)), precision=precision)
    if upscaler.scale != 4:
        raise UsageError(f"--upscaler {path}: a x{upscaler.scale} model; the protocol measures x4 models")
    return upscaler


def method_outputs(models: Models, upscalers: dict[str, Upscaler], lq: torch.Tensor, size: tuple[int, int],
                   codes: dict[str, torch.Tensor], fidelities: Sequence[float],
                   seconds: dict[str, list[float]] | None = None,
                   adapted: dict[str, torch.nn.Module] | None = None) -> dict[str, torch.Tensor]:
    """Every method's restoration of one LQ image at ``size``; ``codes``: its face, blind and oracle codes. The
    stack's rows are named ``NAME+CODE``, or ``NAME+CODE@F`` when several fidelities are measured
    (the upscaled cleanup and CondSR's picture are computed once and blended per fidelity), with ``/METHOD``
    below the upscaler's scale; the stack's seconds per row are appended to ``seconds``. ``adapted``: per code
    name, the cleanup fine-tuned to that code (``--adapt``): rows ``NAME+CODE+adapt``."""
    scale = size[0] // lq.shape[-2]
    outputs = {
        "bicubic": _up(lq, size),
        "uncond": resize_to(models.uncond(lq), size),
        **{name: resize_to(models.sr(lq, z), size) for name, z in codes.items()},
    }
    methods = [None] if scale >= 4 else list(SCALE_METHODS)
    for name, upscaler in upscalers.items():
        outputs[name] = resize_to(upscaler(lq).float(), size)
        runs = [(code_name, "", models.cleanup) for code_name in codes]
        runs += [(code_name, "+adapt", cleanup) for code_name, cleanup in (adapted or {}).items()]
        for code_name, suffix, cleanup in runs:
            z = codes[code_name]
            faithful = outputs[code_name].clamp(0, 1)
            for method in methods:
                started = time.perf_counter()
                sharp = stack_restore(lq, z, cleanup, upscaler, fidelity=0.0, scale=scale,
                                      **({"method": method} if method else {}))
                took = time.perf_counter() - started
                for f in fidelities:
                    key = f"{name}+{code_name}{suffix}" if len(fidelities) == 1 else f"{name}+{code_name}{suffix}@{f:g}"
                    key += f"/{method}" if method else ""
                    outputs[key] = sharp * (1 - f) + faithful * f
                    if seconds is not None:
                        seconds.setdefault(key, []).append(took)
    return outputs


def face_pairs(faces: list[np.ndarray], degs: list[Degradation], restorer: str,
               models_dirs: Sequence[Path] = ()) -> list[tuple[np.ndarray, np.ndarray]]:
    """For degradation k, held-out face k (cyclically) carrying it, and its restored face at the HQ face's size:
    the HQ face itself (``restorer`` "hq": a perfect face restorer) or our face restorer's, which reads the LQ
    face enlarged to its 512 px as a job's aligned crop is."""
    lqs = [np.clip(deg.apply(faces[k % len(faces)]), 0, 1).astype(np.float32) for k, deg in enumerate(degs)]
    if restorer == "hq":
        return [(lq, faces[k % len(faces)]) for k, lq in enumerate(lqs)]
    if restorer != "ours":
        raise UsageError(f"unknown face restorer {restorer!r}; choose hq or ours")
    from ..faces.restore import load_own_face_restorer

    restored = load_own_face_restorer(models_dirs).restore([_aligned(lq) for lq in lqs])
    return [(lq, cv2.resize(r, faces[k % len(faces)].shape[1::-1], interpolation=cv2.INTER_AREA))
            for k, (lq, r) in enumerate(zip(lqs, restored))]


def face_codes(models: Models, pairs: list[tuple[np.ndarray, np.ndarray]], restorer: str = "hq") -> torch.Tensor:
    """The code of each (LQ face, restored face), read as the photo and video jobs read a face: with GFPGAN (the HQ
    face standing in for its) the paired code at the face's own scale (``paired_face_code``); with our face
    restorer, whose faces give codes no nearer than the blind encoder's, the blind code of the aligned LQ face."""
    if restorer == "ours":
        return torch.cat([blind_face_code(models.blind, image_to_tensor(_aligned(lq))) for lq, _ in pairs])
    return torch.cat([paired_face_code(models.encoder, image_to_tensor(lq), image_to_tensor(restored),
                                       source_pixels=lq.shape[1]) for lq, restored in pairs])


def _aligned(lq_face: np.ndarray) -> np.ndarray:
    """An LQ face enlarged to the 512 px of a job's aligned crop (bicubic)."""
    from ..faces.restore import FACE_SIZE as ALIGNED

    return cv2.resize(lq_face, (ALIGNED, ALIGNED), interpolation=cv2.INTER_CUBIC)


def run_quality(cfg: QualityConfig, progress: bool = True) -> dict:
    torch.manual_seed(cfg.seed)
    images = _load_folder(cfg.images, "HQ")[: cfg.max_images]
    faces = load_faces(cfg.faces, FACE_SIZE)
    degs = [Degradation.sample(np.random.default_rng([cfg.seed, k]), scale=cfg.scale) for k in range(cfg.degradations)]
    upscalers = {Path(p).stem + (f"@{precision}" if len(cfg.precisions) > 1 else ""): _upscaler(Path(p), precision)
                 for p in cfg.upscalers for precision in cfg.precisions}
    models = Models(cfg.models, cleanup=bool(upscalers))
    pairs = face_pairs(faces, degs, cfg.restorer, cfg.models)
    z_face = face_codes(models, pairs, cfg.restorer)
    adapter = Adapting() if cfg.adapt and upscalers else None
    face_adapted = [adapter.tune(models.cleanup, z, *pair) for z, pair in zip(z_face, pairs)] if adapter else []
    scores: dict[str, list[tuple[float, float, float]]] = {}
    sheet = Sheet(cfg.sheet) if cfg.sheet else None
    hits, hq_niqe, seconds = [], [], {}
    bar = tqdm(images, desc="bench quality", unit="image", disable=not progress)
    with torch.inference_mode():
        for index, (_, img) in enumerate(bar):
            hq = center_crop(img, cfg.crop, cfg.scale)
            hq_t = image_to_tensor(hq)
            hq_niqe.append(niqe_or_none(hq))
            lqs = [image_to_tensor(np.clip(d.apply(hq), 0, 1)) for d in degs]
            z_oracle = torch.cat([paired_image_code(models.encoder, lq, hq_t) for lq in lqs])
            hits += (torch.cdist(z_face, z_oracle).argmin(dim=1) == torch.arange(len(degs))).tolist()
            for k, lq in enumerate(lqs):
                codes = {"face_code": z_face[k : k + 1], "blind_code": blind_code(models.blind, lq, cfg.scale),
                         "oracle_code": z_oracle[k : k + 1]}
                adapted = {"face_code": face_adapted[k]} if adapter else None
                outputs = method_outputs(models, upscalers, lq, hq.shape[:2], codes, cfg.fidelities, seconds, adapted)
                restored = {name: tensor_to_image(out) for name, out in outputs.items()}
                for name, image in restored.items():
                    scores.setdefault(name, []).append(
                        (psnr_y(image, hq, cfg.scale), ssim_y(image, hq, cfg.scale), niqe_or_none(image)))
                if sheet is not None and k == index % len(lqs):
                    sheet.add(hq, restored)
    if sheet is not None:
        sheet.write()
    result = {
        name: {"psnr_y": float(np.mean([s[0] for s in vals])), "ssim": float(np.mean([s[1] for s in vals])),
               "niqe": _mean_of_measured([s[2] for s in vals]),
               **({"seconds": float(np.mean(seconds[name]))} if name in seconds else {})}
        for name, vals in scores.items()
    }
    result.update(
        retrieval_top1=float(np.mean(hits)),
        hq_niqe=_mean_of_measured(hq_niqe),
        images=len(images),
        faces=len(faces),
        degradations=cfg.degradations,
        scale=cfg.scale,
        seed=cfg.seed,
        crop=cfg.crop,
        images_dir=str(cfg.images),
        faces_dir=str(cfg.faces),
        restored_faces=cfg.restorer,
        cpu_seconds_per_256=cpu_time_per_256(models.sr),
        upscalers={name: {"file": u.ref.path, "sha256": u.ref.sha256, "source": u.ref.source,
                          "runtime": u.runtime.name} for name, u in upscalers.items()},
        fidelity=list(cfg.fidelities),
    )
    if adapter is not None:
        result["adapt"] = {**asdict(adapter.settings), "seconds_per_code": round(adapter.seconds / adapter.codes, 2),
                           "codes": adapter.codes}
    return result


class Adapting:
    """``--adapt``: the shipped cleanup fine-tuned for each degradation as ``run --adapt on`` does (``pipeline.adapt``,
    the jobs' settings) on the face its code was read from: the LQ face and its restored face, both at the LQ
    face's size; timed."""

    def __init__(self) -> None:
        self.settings = Adaptation()
        self.seconds, self.codes = 0.0, 0

    def tune(self, cleanup: torch.nn.Module, code: torch.Tensor, lq: np.ndarray, restored: np.ndarray) -> torch.nn.Module:
        clean = cv2.resize(restored.astype(np.float32), lq.shape[1::-1], interpolation=cv2.INTER_AREA)
        started = time.perf_counter()
        with torch.inference_mode(False), torch.enable_grad():
            tuned = fine_tune(cleanup, code.detach().cpu().numpy().reshape(-1), [(lq, clean)], self.settings)
        self.seconds += time.perf_counter() - started
        self.codes += 1
        return tuned


def _mean_of_measured(values: Sequence[float | None]) -> float | None:
    measured = [v for v in values if v is not None]
    return float(np.mean(measured)) if measured else None


class Sheet:
    """A few crops per method side by side, one PNG: a row per example (HQ, then every method)."""

    def __init__(self, path: Path, examples: int = 4, crop: int = 128):
        self.path, self.examples, self.crop = Path(path), examples, crop
        self.rows: list[tuple[list[str], list[np.ndarray]]] = []

    def add(self, hq: np.ndarray, restored: dict[str, np.ndarray]) -> None:
        if len(self.rows) < self.examples:
            names = ["HQ", *restored]
            self.rows.append((names, [center_crop(im, self.crop, 1) for im in (hq, *restored.values())]))

    def write(self) -> None:
        if not self.rows:
            return
        names, crops = self.rows[0]
        label = np.ones((24, crops[0].shape[1], 3), np.float32)
        header = np.concatenate([_label(label.copy(), n) for n in names], axis=1)
        body = [np.concatenate(crops, axis=1) for _, crops in self.rows]
        sheet = np.concatenate([header, *body], axis=0)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(self.path), cv2.cvtColor(np.round(np.clip(sheet, 0, 1) * 255).astype(np.uint8), cv2.COLOR_RGB2BGR))


def _label(canvas: np.ndarray, text: str) -> np.ndarray:
    scale = min(0.4, 0.4 * canvas.shape[1] / max(1, 8 * len(text)))
    cv2.putText(canvas, text, (2, 16), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


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
    timed = any("seconds" in result[name] for name in rows)
    lines = [f"{'method':<36} {'PSNR-Y (dB)':>11} {'SSIM':>7} {'NIQE':>7}" + (f" {'s/image':>8}" if timed else "")]
    for name in rows:
        r = result[name]
        niqe_text = "-" if r.get("niqe") is None else f"{r['niqe']:.3f}"
        took = (f" {r['seconds']:>8.3f}" if "seconds" in r else f" {'-':>8}") if timed else ""
        lines.append(f"{name:<36} {r['psnr_y']:>11.3f} {r['ssim']:>7.4f} {niqe_text:>7}{took}")
    if result.get("adapt"):
        a = result["adapt"]
        lines.append(f"+adapt: the cleanup fine-tuned to each code ({a['steps']} steps, lr {a['lr']:g}, batch "
                     f"{a['batch']}, crop {a['crop']}; {a['codes']} codes, {a['seconds_per_code']} s a code)")
    if result.get("restored_faces") == "ours":
        lines.append("face codes: the blind encoder's on each LQ face, as jobs with our face restorer read them; "
                     "--adapt learns from our face restorer's faces")
    if result.get("hq_niqe") is not None:
        lines.append(f"NIQE of the HQ crops themselves: {result['hq_niqe']:.3f} (the floor the NIQE column is read against)")
    lines.append(f"code retrieval top-1 (face -> natural, among {result['degradations']}): {result['retrieval_top1']:.1%}")
    lines.append(
        f"{result['images']} images x {result['degradations']} degradations, x{result['scale']}, seed {result['seed']}; "
        f"CondSR CPU time per 256x256 input: {result['cpu_seconds_per_256']:.3f} s"
    )
    if result.get("upscalers"):
        lines.append(f"upscaler rows: the upscaler alone, and NAME+CODE = cleanup steered by CODE, the upscaler, "
                     f"blended towards CondSR at fidelity {', '.join(f'{f:g}' for f in result['fidelity'])}")
        runtimes = ", ".join(f"{name} {u['runtime']}" for name, u in result["upscalers"].items())
        lines.append(f"upscaler runtimes: {runtimes}")
    return "\n".join(lines)
