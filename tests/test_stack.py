"""The restoration stack: cleanup steered by the code -> upscaler -> blend towards CondSR, on whole
images (the benchmark) and on frames in batches or tiles (the jobs)."""
import numpy as np
import pytest
import torch
from spandrel.architectures.Compact import Compact

from archive_restore.nets import CondSR, Cleanup
from archive_restore.pipeline.forward import CUDA_TOLERANCE, FastCondSR
from archive_restore.pipeline.stack import StackRestorer, resize_to, stack_restore

torch.set_num_threads(1)
CODE = 16


def _randomise(model, seed=0, std=0.05):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn_like(p))
    return model.eval()


@pytest.fixture
def nets():
    cleanup = _randomise(Cleanup(code_dim=CODE, width=8, blocks=1), 0)
    condsr = _randomise(CondSR(code_dim=CODE, width=8, blocks=1), 1)
    torch.manual_seed(2)
    upscaler = Compact(num_feat=8, num_conv=2, upscale=4).eval()
    return cleanup, condsr, upscaler


def test_fidelity_blends_the_upscaled_cleanup_with_condsr(nets):
    cleanup, condsr, upscaler = nets
    torch.manual_seed(3)
    lq, z = torch.rand(2, 3, 12, 16), torch.randn(1, CODE)
    with torch.no_grad():
        sharp = upscaler(cleanup(lq, z.expand(2, -1)).clamp(0, 1)).clamp(0, 1)
        faithful = condsr(lq, z.expand(2, -1)).clamp(0, 1)
    assert torch.allclose(stack_restore(lq, z, cleanup, upscaler, condsr, fidelity=0.0), sharp, atol=1e-6)
    assert torch.allclose(stack_restore(lq, z, cleanup, upscaler, condsr, fidelity=1.0), faithful, atol=1e-6)
    mid = stack_restore(lq, z, cleanup, upscaler, condsr, fidelity=0.25)
    assert torch.allclose(mid, 0.75 * sharp + 0.25 * faithful, atol=1e-6)
    assert stack_restore(lq, z, cleanup, upscaler, condsr, 0.0, scale=2).shape == (2, 3, 24, 32)


def test_the_code_reaches_the_pixels_through_the_cleanup(nets):
    cleanup, condsr, upscaler = nets
    torch.manual_seed(4)
    lq = torch.rand(1, 3, 12, 12)
    a = stack_restore(lq, torch.randn(1, CODE), cleanup, upscaler, fidelity=0.0)
    b = stack_restore(lq, torch.randn(1, CODE), cleanup, upscaler, fidelity=0.0)
    assert (a - b).abs().mean() > 1e-3


def _restorer(nets, tile, batch=2, fidelity=0.3, scale=4):
    cleanup, condsr, upscaler = nets
    return StackRestorer(cleanup, upscaler, 4, FastCondSR(condsr, "cpu"), fidelity, scale, torch.device("cpu"), batch, tile)


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_frames_restored_whole_in_batches_match_the_stack(nets, scale):
    cleanup, condsr, upscaler = nets
    rng = np.random.default_rng(5)
    frames = [rng.random((20, 28, 3), dtype=np.float32) for _ in range(3)]
    code = rng.standard_normal(CODE).astype(np.float32)
    out = _restorer(nets, tile=64, scale=scale).restore(frames, code)
    assert [o.shape for o in out] == [(20 * scale, 28 * scale, 3)] * 3
    for frame, restored in zip(frames, out):
        lq = torch.from_numpy(frame).permute(2, 0, 1)[None]
        expected = stack_restore(lq, torch.from_numpy(code)[None], cleanup, upscaler, condsr, 0.3, scale)
        assert np.abs(restored - expected[0].permute(1, 2, 0).numpy()).max() < 1e-4


def test_frames_larger_than_a_tile_run_in_tiles_without_seams(nets):
    rng = np.random.default_rng(6)
    frame = np.clip(np.cumsum(rng.random((72, 90, 3), dtype=np.float32), axis=1) / 90, 0, 1).astype(np.float32)
    code = rng.standard_normal(CODE).astype(np.float32)
    whole = _restorer(nets, tile=128).restore([frame], code)[0]
    tiled = _restorer(nets, tile=48).restore([frame], code)[0]
    assert tiled.shape == whole.shape == (288, 360, 3)
    assert np.abs(tiled - whole).mean() < 0.01


def test_resize_to_shrinks_by_area_and_keeps_a_matching_size():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert resize_to(x, (4, 4)) is x
    assert torch.equal(resize_to(x, (2, 2)), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; none here")
def test_the_stack_on_cuda_matches_the_cpu(nets):
    """Frames whole and in tiles through the stack on CUDA give what the CPU gives: the cleanup and
    CondSR run under the GPU's autocast (bf16 on sm80+, fp16 before), so within CUDA_TOLERANCE."""
    import copy

    rng = np.random.default_rng(7)
    frames = [rng.random((40, 56, 3), dtype=np.float32) for _ in range(2)]
    code = rng.standard_normal(CODE).astype(np.float32)
    cpu = _restorer(nets, tile=32).restore(frames, code)
    cleanup, condsr, upscaler = (copy.deepcopy(n).cuda() for n in nets)
    gpu = StackRestorer(cleanup, upscaler, 4, FastCondSR(condsr, "cuda"), 0.3, 4, torch.device("cuda"), 2, 32)
    out = gpu.restore(frames, code)
    for a, b in zip(cpu, out):
        assert np.abs(a - b).max() < CUDA_TOLERANCE
    auto = StackRestorer(cleanup, upscaler, 4, FastCondSR(condsr, "cuda"), 0.3, 4, torch.device("cuda"), 2)
    assert auto.plan(frames[0].shape[:2]) == (2, 56)  # the default on a GPU: whole frames, batched
    whole = auto.restore(frames[:1] * 3, code)
    assert np.abs(whole[0] - cpu[0]).max() < CUDA_TOLERANCE


def _textured(height=96, width=128, seed=8) -> np.ndarray:
    """A picture with what photos have: smooth shading, edges and fine texture, in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    shade = 0.25 + 0.5 * (x / width)[..., None] * np.array([1.0, 0.8, 0.6], np.float32)
    shade[20:60, 30:70] = (0.85, 0.3, 0.2)  # a block with sharp edges
    return np.clip(shade + 0.08 * rng.standard_normal((height, width, 3)).astype(np.float32), 0, 1)


@pytest.mark.parametrize("dtype, bound", [(torch.float16, 2e-4), (torch.bfloat16, 1e-3)])
def test_the_faithful_branch_in_half_precision_moves_the_picture_by_fidelity_times_its_error(nets, dtype, bound):
    """The shipped CondSR in fp16/bf16 as the faithful branch: the stack's picture moves by at most
    ``fidelity`` times CondSR's own half-precision error, within ``bound`` of the fp32 stack (fp16:
    4.2e-5 at most on real photos); and it did run in half precision (the pictures differ)."""
    from archive_restore.weights.folders import find_model
    from archive_restore.nets import load_checkpoint

    condsr = load_checkpoint(find_model("condsr_compact", ()), "cpu", expect="CondSR").model
    cleanup = _randomise(Cleanup(code_dim=condsr.code_dim, width=8, blocks=1), 0)
    upscaler = nets[2]
    picture = _textured()
    code = np.random.default_rng(9).standard_normal(condsr.code_dim).astype(np.float32) * 0.5
    device, fidelity = torch.device("cpu"), 0.1

    def stack(faithful):
        restorer = StackRestorer(cleanup, upscaler, 4, faithful, fidelity, 4, device, 1, tile=256)
        return restorer.restore([picture], code)[0]

    full, half = stack(FastCondSR(condsr, device)), stack(FastCondSR(condsr, device, dtype=dtype))
    lq = torch.from_numpy(picture).permute(2, 0, 1)[None]
    z = torch.from_numpy(code)[None]
    own_error = (FastCondSR(condsr, device, dtype=dtype)(lq, z) - FastCondSR(condsr, device)(lq, z)).abs().max()
    moved = np.abs(half - full).max()
    assert 0 < moved <= fidelity * float(own_error) + 1e-6
    assert moved <= bound


def test_the_stack_runs_its_faithful_branch_in_the_precision_the_cpu_is_fast_in(monkeypatch, nets):
    """``faithful_dtype``: on the CPU what ``cpu_half_dtype`` measured (fp16 here, where AMX has it;
    None, fp32, where no half precision is fast); the Engine's stack takes it, CondSR alone never."""
    from archive_restore.pipeline import engine as engine_module
    from archive_restore.pipeline import stack as stack_module

    cpu = torch.device("cpu")
    for measured in (torch.float16, torch.bfloat16, None):
        monkeypatch.setattr(stack_module, "cpu_half_dtype", lambda m=measured: m)
        assert stack_module.faithful_dtype(cpu) is measured

    class Options:
        scale, tile, fidelity, precision, faithful, scale_method = 4, None, 0.1, "auto", "auto", "full"

    class Bare(engine_module.Engine):
        def __init__(self, upscaler):  # no files: only what frame_restorer reads
            self.sr, self.cleanup, self.upscaler, self.device = nets[1], nets[0], upscaler, cpu
            self.options, self._restorer = Options(), None

    monkeypatch.setattr(engine_module, "faithful_dtype", lambda device: torch.float16)
    upscaler = nets[2]
    upscaler.scale = 4
    assert Bare(upscaler).frame_restorer().net.faithful.dtype is torch.float16
    assert Bare(None).frame_restorer().net.dtype is None  # CondSR alone: fp32 on the CPU
