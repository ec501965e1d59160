"""Face detection behind one interface, with three backends.

- ``retinaface``: facexlib's RetinaFace architecture (MobileNet-0.25 or ResNet-50) with weights found
  in a models directory and loaded here (``weights_only=True``, strict keys); never downloaded by
  facexlib. Boxes, scores and 5 landmarks.
- ``yunet``: OpenCV's ``FaceDetectorYN`` with a YuNet ONNX file. Boxes, scores and 5 landmarks.
- ``haar``: OpenCV's embedded frontal-face Haar cascade; needs no file. Boxes only.

Images follow the project convention: float32 RGB in [0, 1], HxWx3 (gray HxW or HxWx1 is
replicated to three channels). Landmarks are (5, 2) float32 in the FFHQ/RetinaFace order: left eye,
right eye, nose, left mouth corner, right mouth corner, where "left" means the image's left (the
subject's right eye appears on the image's left).

A detector holds its model: create it once with :func:`make_detector` and call ``detect`` for every
image or frame (one detector per thread: the backends keep per-call state).
"""
from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from ..errors import (
    CheckpointError,
    DeviceError,
    InputError,
    ModelNotFoundError,
    UsageError,
)

RETINAFACE_FILES = {
    "mobile0.25": "detection_mobilenet0.25_Final.pth",
    "resnet50": "detection_Resnet50_Final.pth",
}
YUNET_FILES = ("face_detection_yunet_2023mar.onnx", "face_detection_yunet_s_640_640.onnx")
HAAR_FILE = "haarcascade_frontalface_default.xml"

#: RetinaFace weights that share facexlib's state-dict keys but were trained with another network
#: variant, by sha256. ``leaky=False``: plain ReLU where facexlib uses LeakyReLU(0.1).
RETINAFACE_VARIANTS = {
    # biubug6/Face-Detector-1MB-with-landmark @ 2b07565 : weights/mobilenet0.25_Final.pth (MIT)
    "ed6fa7d45a5179f03cb5ce82c73b0c6711372968e53782e88395acee88d319e1": {
        "min_sizes": [[10, 20], [32, 64], [128, 256]],
        "leaky": False,
    },
}
BACKENDS = ("auto", "retinaface", "yunet", "haar")


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face, in the pixel coordinates of the image given to ``detect``.

    ``box`` is (x0, y0, x1, y1); ``landmarks`` is (5, 2) float32 or None (Haar). Faces compare by
    identity (they hold an array).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None
    detector: str

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    def scaled(self, factor: float) -> Face:
        """The same face in an image resized by ``factor`` (pixel centres kept aligned, as cv2.resize)."""
        shift = 0.5 * (factor - 1.0)
        box = tuple(float(v * factor + shift) for v in self.box)
        marks = None if self.landmarks is None else (self.landmarks * factor + shift).astype(np.float32)
        return Face(box, self.score, marks, self.detector)  # type: ignore[arg-type]


class FaceDetector(Protocol):
    """What every backend offers."""

    name: str

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in ``image`` (float32 RGB [0, 1]), best score first."""
        ...


def find_model_file(filename: str, models_dirs: Sequence[Path | str]) -> Path | None:
    """The first ``models_dir/filename`` that exists, or None."""
    for folder in models_dirs:
        candidate = Path(folder).expanduser() / filename
        if candidate.is_file():
            return candidate
    return None


def make_detector(
    name: str = "auto", models_dirs: Sequence[Path | str] = (), device: str = "cpu"
) -> FaceDetector:
    """A ready detector: ``auto`` (RetinaFace, else YuNet, else Haar, by the files found), or one backend.

    Asking for ``retinaface`` or ``yunet`` when no models directory holds its file raises
    :class:`ModelNotFoundError` naming the files and the folders searched. ``device`` ("cpu",
    "cuda", "cuda:1") applies to RetinaFace; the OpenCV backends run on the CPU.
    """
    if name not in BACKENDS:
        raise UsageError(f"unknown face detector {name!r}; choose one of {', '.join(BACKENDS)}")
    if name in ("auto", "retinaface"):
        found = _find_retinaface(models_dirs, device)
        if found is not None:
            return RetinaFaceDetector(found[1], network=found[0], device=device)
        if name == "retinaface":
            raise _not_found("RetinaFace", list(RETINAFACE_FILES.values()), models_dirs)
    if name in ("auto", "yunet"):
        path = _first_found(YUNET_FILES, models_dirs)
        if path is not None:
            return YuNetDetector(path)
        if name == "yunet":
            raise _not_found("YuNet", list(YUNET_FILES), models_dirs)
    return HaarDetector()


def _first_found(filenames: Sequence[str], models_dirs: Sequence[Path | str]) -> Path | None:
    for filename in filenames:
        path = find_model_file(filename, models_dirs)
        if path is not None:
            return path
    return None


def _find_retinaface(models_dirs: Sequence[Path | str], device: str) -> tuple[str, Path] | None:
    """(network name, weights path); ResNet-50 is preferred on a GPU, MobileNet-0.25 on the CPU."""
    order = ["resnet50", "mobile0.25"] if device.startswith("cuda") else ["mobile0.25", "resnet50"]
    for network in order:
        path = find_model_file(RETINAFACE_FILES[network], models_dirs)
        if path is not None:
            return network, path
    return None


def _not_found(what: str, filenames: Sequence[str], models_dirs: Sequence[Path | str]) -> ModelNotFoundError:
    searched = ", ".join(str(Path(d).expanduser()) for d in models_dirs) or "no models directory given"
    return ModelNotFoundError(
        f"{what} face detector needs {' or '.join(filenames)}; not found in: {searched}. "
        "Put the file in a models directory, or use the 'haar' detector, which needs no file."
    )


# ----------------------------------------------------------------------------- image preparation


def to_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """Project image (float RGB [0, 1], HxWx3, HxWx1 or HxW; uint8 also accepted) -> BGR uint8 HxWx3."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"face detection needs an HxWx3, HxWx1 or HxW image; got shape {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(np.nan_to_num(image.astype(np.float32)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image[:, :, ::-1])


def downscale(bgr: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """A copy whose longer side is at most ``max_side``, and the factor back to the original (>= 1)."""
    height, width = bgr.shape[:2]
    longest = max(height, width)
    if longest <= max_side:
        return bgr, 1.0
    factor = longest / max_side
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    return cv2.resize(bgr, size, interpolation=cv2.INTER_AREA), factor


def _make_face(box, score, landmarks, detector: str, factor: float) -> Face:
    """A Face from detector output on an image ``factor`` times smaller than the original."""
    face = Face(
        tuple(float(v) for v in box),  # type: ignore[arg-type]
        float(score),
        None if landmarks is None else np.asarray(landmarks, dtype=np.float32).reshape(5, 2),
        detector,
    )
    return face if factor == 1.0 else face.scaled(factor)


def _by_score(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda f: f.score, reverse=True)


# ----------------------------------------------------------------------------- RetinaFace


class RetinaFaceDetector:
    """facexlib's RetinaFace network with weights loaded from a local file (never downloaded)."""

    name = "retinaface"

    def __init__(
        self,
        weights: Path,
        network: str = "mobile0.25",
        device: str = "cpu",
        score_threshold: float = 0.8,
        nms_threshold: float = 0.4,
        max_side: int = 1600,
    ) -> None:
        self.weights = Path(weights)
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_side = max_side
        self.net = load_retinaface(self.weights, network, device)

    def detect(self, image: np.ndarray) -> list[Face]:
        import torch

        bgr, factor = downscale(to_bgr_uint8(image), self.max_side)
        with torch.inference_mode():
            rows = self.net.detect_faces(
                bgr,
                conf_threshold=self.score_threshold,
                nms_threshold=self.nms_threshold,
                use_origin_size=True,
            )
        faces = [_make_face(r[0:4], r[4], r[5:15], self.name, factor) for r in np.asarray(rows, np.float32)]
        return _by_score(faces)


def _torch_device(device: str):
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise DeviceError(f"unknown device {device!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} was asked for but CUDA is not available; use 'cpu'")
    return dev


def load_retinaface(weights: Path, network: str, device: str = "cpu"):
    """facexlib's RetinaFace module with ``weights`` loaded strictly, in eval mode on ``device``."""
    from facexlib.detection.retinaface import RetinaFace

    dev = _torch_device(device)
    state = _read_state_dict(weights)
    with warnings.catch_warnings():  # torchvision's "pretrained is deprecated" for resnet50
        warnings.simplefilter("ignore", UserWarning)
        net = RetinaFace(network_name=network, half=False, device=dev)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights} is not a RetinaFace {network} state dict: {exc}") from exc
    _apply_variant(net, RETINAFACE_VARIANTS.get(sha256_of(weights), {}))
    return net.to(dev).eval().requires_grad_(False)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _apply_variant(net, variant: dict) -> None:
    """Adapt this instance (not facexlib's class) to weights trained with other anchors or activations."""
    import torch

    if "min_sizes" in variant:
        net.cfg = {**net.cfg, "min_sizes": variant["min_sizes"]}
    if variant.get("leaky", True):
        return
    for module in list(net.modules()):
        for name, child in module.named_children():
            if isinstance(child, torch.nn.LeakyReLU):
                setattr(module, name, torch.nn.ReLU(inplace=True))


def _read_state_dict(weights: Path) -> dict:
    """The tensors in ``weights`` (a plain or ``module.``-prefixed state dict, possibly under a key)."""
    import torch

    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(f"cannot read {weights} as a weights-only torch checkpoint: {exc}") from exc
    for key in ("state_dict", "params", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise CheckpointError(f"{weights} holds a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


# ----------------------------------------------------------------------------- YuNet


class YuNetDetector:
    """OpenCV's FaceDetectorYN with a YuNet ONNX file; large images are detected on a smaller copy."""

    name = "yunet"

    def __init__(
        self,
        model: Path,
        score_threshold: float = 0.7,
        nms_threshold: float = 0.3,
        max_side: int = 1280,
        top_k: int = 5000,
    ) -> None:
        self.model = Path(model)
        self.max_side = max_side
        try:
            self.net = cv2.FaceDetectorYN.create(
                str(self.model), "", (320, 320), score_threshold, nms_threshold, top_k
            )
        except cv2.error as exc:
            raise CheckpointError(f"OpenCV cannot load {self.model} as a YuNet model: {exc}") from exc

    def detect(self, image: np.ndarray) -> list[Face]:
        bgr, factor = downscale(to_bgr_uint8(image), self.max_side)
        height, width = bgr.shape[:2]
        self.net.setInputSize((width, height))
        _, rows = self.net.detect(bgr)
        if rows is None:
            return []
        # Row: x, y, w, h, then 5 (x, y) landmarks (OpenCV names them right eye, left eye, nose tip,
        # right and left mouth corner: the subject's right, which is the image's left, as in
        # RetinaFace; so the order is already ours), then the score.
        faces = [
            _make_face((r[0], r[1], r[0] + r[2], r[1] + r[3]), r[14], r[4:14], self.name, factor)
            for r in rows
        ]
        return _by_score(faces)


# ----------------------------------------------------------------------------- Haar


class HaarDetector:
    """OpenCV's embedded frontal-face Haar cascade (no landmarks; needs no downloaded file).

    ``score`` is ``n / (n + min_neighbors)`` for a box confirmed by ``n`` overlapping windows: 0.5 at
    the acceptance limit, approaching 1 as more windows agree.
    """

    name = "haar"

    def __init__(
        self,
        scale_factor: float = 1.1,
        min_neighbors: int = 6,
        min_size_fraction: float = 0.04,
        max_side: int = 1280,
    ) -> None:
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size_fraction = min_size_fraction
        self.max_side = max_side
        path = Path(cv2.data.haarcascades) / HAAR_FILE
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise ModelNotFoundError(f"OpenCV's Haar cascade {path} is missing; opencv-python>=4.8,<5 has it")

    def detect(self, image: np.ndarray) -> list[Face]:
        bgr, factor = downscale(to_bgr_uint8(image), self.max_side)
        gray = cv2.equalizeHist(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
        side = max(20, round(self.min_size_fraction * min(gray.shape)))
        boxes, neighbours = self.cascade.detectMultiScale2(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(side, side)
        )
        faces = [
            _make_face((x, y, x + w, y + h), n / (n + self.min_neighbors), None, self.name, factor)
            for (x, y, w, h), n in zip(np.reshape(boxes, (-1, 4)), np.ravel(neighbours))
        ]
        return _by_score(faces)
