"""Degradation codes from faces and images, and their robust combination over a photo, folder or shot."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .nets import BlindDegEncoder, DegEncoder
from .nets.degnet import fit_to


def image_to_tensor(img: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """HxWx3 float32 [0,1] -> 1x3xHxW tensor."""
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0).to(device)


def tensor_to_image(t: torch.Tensor) -> np.ndarray:
    """1x3xHxW (or 3xHxW) tensor -> HxWx3 float32 [0,1]."""
    if t.ndim == 4:
        t = t[0]
    return t.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


@torch.inference_mode()
def paired_face_code(encoder: DegEncoder, lq_face: torch.Tensor, hq_face: torch.Tensor, source_pixels: float,
                     native_scale: int = 4) -> torch.Tensor:
    """The paired code (1 x D) of one aligned face, read at the scale the encoder learned: the HQ
    face ``native_scale`` times as wide as the LQ face is in its picture (``source_pixels``). A small
    face is read whole at the encoder's input size, as in training; a larger one at that x4 size,
    as tiles averaged (``paired_image_code``), instead of being shrunk to the input size, which would
    weaken its blur and noise and misreport the degradation."""
    size = int(np.clip(round(native_scale * source_pixels), encoder.input_size, hq_face.shape[-1]))
    return paired_image_code(encoder, fit_to(lq_face, size).clamp(0, 1), fit_to(hq_face, size))


@torch.inference_mode()
def paired_image_code(encoder: DegEncoder, lq: torch.Tensor, hq: torch.Tensor, max_tiles: int = 16) -> torch.Tensor:
    """The paired code of a whole (LQ, HQ) image pair larger than the encoder's input: the mean code of
    ``input_size`` tiles at the image's own resolution. Encoding the whole picture at once would shrink
    it to the input size first, which weakens its blur and noise and so misreports the degradation."""
    size = encoder.input_size
    if lq.shape[-2:] != hq.shape[-2:]:
        lq = F.interpolate(lq, size=hq.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
    if min(hq.shape[-2:]) <= size:
        return encoder(lq, hq)
    pairs = torch.cat([lq, hq], dim=1)
    tiles = lq_patches(pairs, size, max_tiles)
    return encoder(tiles[:, :3], tiles[:, 3:]).mean(dim=0, keepdim=True)


def lq_patches(lq: torch.Tensor, patch: int, max_patches: int = 16) -> torch.Tensor:
    """Up to ``max_patches`` ``patch``-sized crops on a regular grid of a 1xCxHxW image
    (the whole image resized up when it is smaller than one patch)."""
    _, _, h, w = lq.shape
    if h < patch or w < patch:
        return F.interpolate(lq, size=(patch, patch), mode="bicubic", align_corners=False).clamp(0, 1)
    ny, nx = h // patch, w // patch
    ys = np.linspace(0, h - patch, num=min(ny, 4)).round().astype(int)
    xs = np.linspace(0, w - patch, num=min(nx, max(1, max_patches // len(ys)))).round().astype(int)
    return torch.cat([lq[..., y : y + patch, x : x + patch] for y in ys for x in xs])


@torch.inference_mode()
def blind_code(blind: BlindDegEncoder, lq: torch.Tensor, native_scale: int = 4) -> torch.Tensor:
    """One code for a whole LQ image from the LQ alone: patches at the image's own resolution, each
    enlarged to the encoder's input size as in training, encoded, and combined robustly."""
    patch = blind.input_size // native_scale
    crops = lq_patches(lq, patch)
    crops = F.interpolate(crops, size=(blind.input_size,) * 2, mode="bicubic", align_corners=False).clamp(0, 1)
    return robust_mean(blind(crops))


@torch.inference_mode()
def blind_face_code(blind: BlindDegEncoder, lq_faces: torch.Tensor) -> torch.Tensor:
    """Codes of aligned LQ faces (any size; resized to the encoder's input size) without a restorer."""
    return blind(lq_faces)


def robust_mean(codes: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean of codes (N x D) after dropping outliers (distance to the median code above
    median + 3 MAD). Returns 1 x D."""
    codes = codes.float()
    if weights is None:
        weights = torch.ones(codes.shape[0], device=codes.device)
    weights = weights.float().to(codes.device)
    if codes.shape[0] > 2:
        dist = (codes - codes.median(dim=0).values).norm(dim=1)
        med = dist.median()
        keep = dist <= med + 3 * (dist - med).abs().median() + 1e-6
        codes, weights = codes[keep], weights[keep]
    return (codes * weights[:, None]).sum(0, keepdim=True) / weights.sum().clamp_min(1e-8)
