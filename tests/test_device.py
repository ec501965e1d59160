"""The device: which one, what it computes in, out-of-memory on every supported torch, and how work is
sized to it (whole frames batched when they fit, tiles when they do not). What needs a GPU runs where
there is one; the rest is shown on the CPU with torch's CUDA queries stood in for."""
import numpy as np
import pytest
import torch

from archive_restore.compute import device as device_module
from archive_restore.compute.device import autocast_dtype, is_out_of_memory, resolve_device
from archive_restore.errors import DeviceError
from archive_restore.nets import CondSR
from archive_restore.compute.cpu import threads_for
from archive_restore.pipeline.forward import FastCondSR, FrameRestorer

torch.set_num_threads(1)


def _net(seed: int = 0) -> CondSR:
    torch.manual_seed(seed)
    model = CondSR(code_dim=16, width=8, blocks=2)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model.eval()


# ------------------------------------------------------------------------------------ out of memory
def test_out_of_memory_is_recognised_on_torch_before_2_5(monkeypatch):
    """torch.OutOfMemoryError exists from torch 2.5; before, only torch.cuda.OutOfMemoryError."""
    cuda_oom = torch.cuda.OutOfMemoryError
    monkeypatch.delattr(torch, "OutOfMemoryError")
    assert is_out_of_memory(cuda_oom("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))  # a failed pinned allocation
    assert not is_out_of_memory(RuntimeError("Expected all tensors to be on the same device"))
    assert not is_out_of_memory(ValueError("out of range"))


class _Flaky:
    """CondSR's fast forward that runs out of memory on inputs over ``limit`` pixels a side, or on more
    than one frame at a time, raising ``error``."""

    def __init__(self, limit: int, error: type[BaseException] = torch.cuda.OutOfMemoryError, batch_limit: int = 1):
        self.fast, self.limit, self.error, self.batch_limit = FastCondSR(_net()), limit, error, batch_limit
        self.scale, self.device, self.bytes_per_pixel = self.fast.scale, self.fast.device, self.fast.bytes_per_pixel
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, lq, z=None):
        self.shapes.append(tuple(lq.shape))
        if lq.shape[0] > self.batch_limit or max(lq.shape[-2:]) > self.limit:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB (fake)")
        return self.fast(lq, z)


def test_out_of_memory_fallback_works_without_torch_out_of_memory_error(monkeypatch):
    monkeypatch.delattr(torch, "OutOfMemoryError")
    flaky = _Flaky(limit=24)
    restorer = FrameRestorer(flaky, 4, batch=1, tile=256, overlap=4, min_tile=8, notify=lambda m: None)
    out = restorer.restore([np.zeros((40, 36, 3), np.float32)], np.zeros(16, np.float32))
    assert out[0].shape == (160, 144, 3) and restorer.tile == 20


def test_out_of_memory_on_a_tiled_frame_halves_the_tile_first():
    """A frame that runs in tiles is one frame per pass already: halving the batch would only waste a retry."""
    said = []
    flaky = _Flaky(limit=24, batch_limit=4)
    restorer = FrameRestorer(flaky, 4, batch=4, tile=32, overlap=4, min_tile=8, notify=said.append)
    frames = [np.random.default_rng(i).random((40, 40, 3), dtype=np.float32) for i in range(2)]
    restorer.restore(frames, np.zeros(16, np.float32))
    assert (restorer.batch, restorer.tile) == (4, 16) and len(said) == 1 and "smaller tiles (now 16" in said[0]
    assert sum(max(s[-2:]) > 24 for s in flaky.shapes) == 1  # one failed pass, then tiles that fit


def test_an_error_that_is_not_out_of_memory_is_raised_as_it_is():
    flaky = _Flaky(limit=4, error=ValueError)
    with pytest.raises(ValueError, match="fake"):
        FrameRestorer(flaky, 4, batch=1, tile=256).restore([np.zeros((8, 8, 3), np.float32)], None)


# ------------------------------------------------------------------------------- the default tile
def test_default_plan_batches_whole_frames_that_fit_and_tiles_those_that_do_not():
    fast = FastCondSR(_net())
    per_frame = 100 * 120 * fast.bytes_per_pixel  # 100x120 frames: well under CPU_BATCH_BYTES
    roomy = FrameRestorer(fast, 4, batch=4, budget=10 * per_frame)
    assert roomy.plan((100, 120)) == (4, 120)  # whole frames, the batch asked for
    assert FrameRestorer(fast, 4, batch=4, budget=2 * per_frame).plan((100, 120)) == (2, 120)  # as many as fit
    tight = FrameRestorer(fast, 4, batch=4, budget=per_frame // 4, min_tile=16)
    batch, tile = tight.plan((100, 120))
    assert batch == 1 and 16 <= tile < 100 and tile % 16 == 0 and tile * tile * fast.bytes_per_pixel <= per_frame // 4
    fixed = FrameRestorer(fast, 4, batch=4, tile=64)  # a fixed --tile is kept
    assert fixed.plan((100, 120)) == (1, 64) and fixed.plan((60, 50)) == (4, 64)


def test_on_the_cpu_large_frames_run_one_at_a_time():
    """A batch is slower per frame than single frames once a pass outgrows the caches (CPU_BATCH_BYTES)."""
    from archive_restore.pipeline.forward import CPU_BATCH_BYTES

    fast = FastCondSR(_net())
    side = int((CPU_BATCH_BYTES / fast.bytes_per_pixel) ** 0.5) + 1  # one frame just over the batch limit
    assert FrameRestorer(fast, 4, batch=4, budget=20 * side * side * fast.bytes_per_pixel).plan((side, side)) == (1, side)


def test_default_plan_runs_frames_whole_and_the_result_matches_eager():
    model = _net()
    code = np.random.default_rng(0).standard_normal(16).astype(np.float32)
    frames = [np.random.default_rng(i).random((300, 20, 3), dtype=np.float32) for i in range(3)]
    out = FrameRestorer(FastCondSR(model), 4, batch=3).restore(frames, code)  # 300 px: over the old 256 default
    with torch.no_grad():
        lq = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
        eager = model(lq, torch.from_numpy(code)[None].expand(3, -1)).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert np.abs(np.stack(out) - eager).max() < 1e-5  # whole: no tile seams at all (fp32 rounding only)


# ------------------------------------------------------------------------------------- precision
def test_folded_film_stays_fp32_under_autocast():
    """gamma and beta come from the code in fp32 even when the caller is inside an autocast region
    (as the trunk is on a GPU): rounding them to bf16 before folding would shift every output."""
    fast = FastCondSR(_net(), "cpu", dtype=torch.bfloat16)
    z = torch.randn(16)
    reference = FastCondSR(_net(), "cpu")._blocks(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        folded = fast._blocks(z)
    assert all(a.dtype == torch.float32 and torch.equal(a, b) for fa, fb in zip(folded, reference) for a, b in zip(fa, fb))


def test_bf16_on_sm80_and_later_fp16_before_fp32_on_the_cpu(monkeypatch):
    cuda = torch.device("cuda")
    assert autocast_dtype(torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: not including_emulation and False)
    assert autocast_dtype(cuda) is torch.float16  # a T4 or V100: bf16 only emulated
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert autocast_dtype(cuda) is torch.bfloat16

    def old_torch(*args, **kwargs):  # torch < 2.3: no including_emulation
        if kwargs:
            raise TypeError("is_bf16_supported() got an unexpected keyword argument 'including_emulation'")
        return True

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", old_torch)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert autocast_dtype(cuda) is torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert autocast_dtype(cuda) is torch.bfloat16


# ---------------------------------------------------------------------------------------- devices
def test_auto_says_when_a_gpu_is_there_but_unusable(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "gpu_present", lambda: True)
    said = []
    assert resolve_device("auto", notify=said.append) == torch.device("cpu")
    assert len(said) == 1 and "cannot use it" in said[0] and "running on the CPU" in said[0]
    with pytest.raises(DeviceError, match="a GPU is present, but this torch build cannot use it"):
        resolve_device("cuda")
    monkeypatch.setattr(device_module, "gpu_present", lambda: False)
    said.clear()
    assert resolve_device("auto", notify=said.append) == torch.device("cpu") and said == []


def test_a_cuda_index_beyond_the_machines_gpus_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceError, match=r"--device cuda:1: this machine has 1 CUDA device \(cuda:0\)"):
        resolve_device("cuda:1")
    with pytest.raises(DeviceError, match="unknown device 'gpu'"):
        resolve_device("gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="shows an unusable GPU; this machine has a usable one")
def test_a_gpu_that_fails_its_first_allocation_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(DeviceError, match=r"cuda:1 cannot be used: .*use --device cpu, or another --device cuda:N"):
        resolve_device("cuda:1")  # this torch has no working CUDA: the first allocation fails as a bad driver's would


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; none here")
def test_cuda_devices_by_index():
    assert resolve_device("cuda") == torch.device("cuda", 0)
    last = torch.cuda.device_count() - 1
    assert resolve_device(f"cuda:{last}") == torch.device("cuda", last)


# ---------------------------------------------------------------------------------------- threads
def test_threads_follow_the_cores_the_probe_saw_working():
    assert threads_for(1.85, 2) == 2 and threads_for(1.42, 2) == 2  # a quiet 2-core machine, as measured here
    assert threads_for(1.05, 2) == 1 and threads_for(1.3, 2) == 1  # another process holds a core
    assert threads_for(3.7, 8) == 4 and threads_for(0.7, 4) == 1 and threads_for(9.0, 8) == 8


@pytest.mark.parametrize("tile", [None, 24])
def test_frames_rounded_on_the_device_are_what_the_encoder_would_round(tile):
    """``as_uint8`` (the video render without faces to paste) gives exactly the bytes the encoder's
    own rounding of the float frames gives, whole frames and tiles alike."""
    from archive_restore.media.video import to_uint8

    code = np.random.default_rng(0).standard_normal(16).astype(np.float32)
    frames = [np.random.default_rng(i).random((20, 36, 3), dtype=np.float32) for i in range(3)]
    restorer = FrameRestorer(FastCondSR(_net()), 4, batch=2, tile=tile, overlap=4)
    floats, ints = restorer.restore(frames, code), restorer.restore(frames, code, as_uint8=True)
    assert all(i.dtype == np.uint8 and i.shape == (80, 144, 3) for i in ints)
    assert all(np.array_equal(to_uint8(f), i) for f, i in zip(floats, ints))
    assert len(np.unique(ints[0])) > 50  # real pictures, not a constant


def test_half_precision_on_the_cpu_only_where_it_is_fast():
    """fp16 where it convolves at least HALF_SPEEDUP x faster than fp32 (the more precise half), else
    bf16 where that is, else fp32 (None)."""
    from archive_restore.compute.cpu import HALF_SPEEDUP, half_for

    fp16, bf16 = torch.float16, torch.bfloat16
    assert half_for(6.9, {fp16: 1.12, bf16: 1.11}) is fp16  # AMX-FP16 (this project's CPU): fp16 though bf16 ties
    assert half_for(6.9, {fp16: 7.5, bf16: 1.2}) is bf16  # AMX-BF16 only (Sapphire Rapids)
    assert half_for(6.9, {bf16: 1.2}) is bf16  # a build without fp16 convolutions
    assert half_for(6.9, {fp16: 6.0, bf16: 9.0}) is None and half_for(6.9, {}) is None  # no AMX
    assert half_for(2 * HALF_SPEEDUP, {fp16: 2.0}) is fp16 and half_for(2 * HALF_SPEEDUP - 0.01, {fp16: 2.0}) is None


def test_the_cpu_half_precision_probe_times_each_on_one_thread(monkeypatch):
    from archive_restore.compute import cpu

    seen = []

    def seconds(threads, repeats=9, dtype=torch.float32):
        seen.append((threads, dtype))
        if dtype is torch.float16:
            raise RuntimeError("no fp16 convolution in this build")
        return {torch.float32: 6.9, torch.bfloat16: 1.2}[dtype]

    monkeypatch.setattr(cpu, "_conv_seconds", seconds)
    cpu.half_seconds.cache_clear()
    before = torch.get_num_threads()
    try:
        assert cpu.cpu_half_dtype() is torch.bfloat16
        assert cpu.cpu_half_dtype() is torch.bfloat16 and len(seen) == 3  # measured once per process
    finally:
        cpu.half_seconds.cache_clear()
    assert {threads for threads, _ in seen} == {1} and torch.get_num_threads() == before
