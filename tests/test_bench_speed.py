"""The fast forward equals CondSR's eager forward within its tolerance, out-of-memory falls back to
smaller batches then tiles (said once each), and ``bench speed`` writes every figure on a tiny clip."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from archive_restore.bench.speed import KEYS
from archive_restore.cli import cli
from archive_restore.errors import DeviceError
from archive_restore.nets import BlindDegEncoder, CondSR, restore_at_scale, save_checkpoint
from archive_restore.pipeline.forward import (CPU_TOLERANCE, CUDA_TOLERANCE, FastCondSR, FrameRestorer,
                                              bicubic_phases, restore_nhwc)

torch.set_num_threads(1)


def _net(conditioned: bool = True, seed: int = 0) -> CondSR:
    """A tiny CondSR with every weight random (FiLM too, so that folding it into the convolutions matters)."""
    torch.manual_seed(seed)
    model = CondSR(code_dim=16, width=8, blocks=2, conditioned=conditioned)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model.eval()


def _nchw(out: torch.Tensor) -> torch.Tensor:
    return out.permute(0, 3, 1, 2)


def _close(ours: torch.Tensor, eager: torch.Tensor, tolerance: float = CPU_TOLERANCE) -> bool:
    """Within ``tolerance`` of the eager result, relative to its range when that exceeds [0, 1]
    (random weights give raw outputs beyond the image range)."""
    return float((ours - eager).abs().max()) <= tolerance * max(1.0, float(eager.abs().max()))


def test_bicubic_phases_are_pytorchs_bicubic():
    lq = torch.rand(2, 3, 7, 9)
    base = F.conv2d(F.pad(lq, (2, 2, 2, 2), mode="replicate"), bicubic_phases(4), groups=3)
    ours = F.pixel_shuffle(base, 4)
    assert (ours - F.interpolate(lq, scale_factor=4, mode="bicubic", align_corners=False)).abs().max() < 1e-5


@pytest.mark.parametrize("conditioned", [True, False])
def test_fast_forward_matches_eager(conditioned):
    model = _net(conditioned)
    fast = FastCondSR(model)
    lq = torch.rand(3, 3, 13, 17)
    z = torch.randn(16)
    with torch.no_grad():
        eager = model(lq, z[None].expand(3, -1))
        assert _close(_nchw(fast(lq, z)), eager)
        codes = torch.randn(3, 16)  # different codes within one batch
        assert _close(_nchw(fast(lq, codes)), model(lq, codes))
        for scale in (1, 2, 4):
            ref = restore_at_scale(model, lq, z[None].expand(3, -1), scale).clamp(0, 1)
            assert _close(_nchw(restore_nhwc(fast, lq, z, scale)), ref)
    assert next(model.parameters()).is_contiguous()  # the model itself is left as it was


def test_frame_restorer_batches_and_tiles_agree_with_eager():
    model = _net()
    code = np.random.default_rng(0).standard_normal(16).astype(np.float32)
    frames = [np.random.default_rng(i).random((20, 24, 3), dtype=np.float32) for i in range(3)]
    out = FrameRestorer(FastCondSR(model), 4, batch=2, tile=256).restore(frames, code)
    with torch.no_grad():
        eager = model(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2), torch.from_numpy(code)[None].expand(3, -1))
    assert np.abs(np.stack(out) - eager.clamp(0, 1).permute(0, 2, 3, 1).numpy()).max() < CPU_TOLERANCE
    uint8 = FrameRestorer(FastCondSR(model), 4, batch=3).restore([(f * 255).round().astype(np.uint8) for f in frames], code)
    assert uint8[0].shape == (80, 96, 3) and uint8[0].dtype == np.float32
    tiled = FrameRestorer(FastCondSR(model), 4, tile=12, overlap=4).restore(frames[:1], code)
    assert tiled[0].shape == (80, 96, 3) and np.abs(tiled[0] - out[0]).mean() < 0.05


class _Flaky:
    """A fast forward that runs out of memory on batches over one frame or inputs over ``limit`` pixels."""

    def __init__(self, fast: FastCondSR, limit: int):
        self.fast, self.limit, self.calls, self.ooms = fast, limit, 0, 0
        self.scale, self.device, self.model = fast.scale, fast.device, fast.model

    def __call__(self, lq, z=None):
        self.calls += 1
        if lq.shape[0] > 1 or max(lq.shape[-2:]) > self.limit:
            self.ooms += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (fake)")
        return self.fast(lq, z)


def test_out_of_memory_retries_smaller_batch_then_smaller_tiles_and_says_so_once():
    model = _net()
    code = np.zeros(16, np.float32)
    frames = [np.random.default_rng(i).random((40, 36, 3), dtype=np.float32) for i in range(5)]
    said = []
    flaky = _Flaky(FastCondSR(model), limit=24)
    restorer = FrameRestorer(flaky, 4, batch=4, tile=256, overlap=4, min_tile=8, notify=said.append)
    out = restorer.restore(frames, code)
    assert (restorer.batch, restorer.tile) == (1, 20)  # 4 -> 2 -> 1 frames, then tile 40 -> 20
    assert len(said) == 2 and "smaller batches (now 2" in said[0] and "smaller tiles (now 20 pixels)" in said[1]
    assert restorer.notices == said and flaky.ooms == 3
    # the rest of the frames ran at the reduced sizes, with no further out-of-memory errors
    direct = FrameRestorer(FastCondSR(model), 4, batch=1, tile=20, overlap=4).restore(frames, code)
    assert len(out) == 5 and all(np.array_equal(a, b) for a, b in zip(out, direct))


def test_out_of_memory_at_the_smallest_tile_is_a_device_error():
    flaky = _Flaky(FastCondSR(_net()), limit=4)
    restorer = FrameRestorer(flaky, 4, batch=2, tile=32, min_tile=16, notify=lambda m: None)
    with pytest.raises(DeviceError, match="out of memory on cpu even one frame at a time"):
        restorer.restore([np.zeros((30, 30, 3), np.float32)] * 2, np.zeros(16, np.float32))


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="no CUDA device here: autocast, pinned memory and non-blocking copies need one")
def test_cuda_path_as_jobs_run_it_matches_eager_fp32():
    """As in production: CondSR itself on the GPU (its FiLM folded there, outside the autocast), frames
    uploaded as uint8 and as float, whole frames batched and frames in tiles, through the reused
    pinned buffers; every result within CUDA_TOLERANCE of the eager fp32 forward on the CPU."""
    import copy

    model = _net()
    device = torch.device("cuda")
    fast = FastCondSR(copy.deepcopy(model).to(device))
    assert fast.device.type == "cuda" and fast.dtype in (torch.bfloat16, torch.float16)
    code = np.random.default_rng(1).standard_normal(16).astype(np.float32)
    frames = [np.random.default_rng(i).random((32, 40, 3), dtype=np.float32) for i in range(4)]
    with torch.no_grad():
        lq = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
        eager = model(lq, torch.from_numpy(code)[None].expand(4, -1)).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    restorer = FrameRestorer(fast, 4, batch=4)
    out = restorer.restore(frames, code)
    assert restorer._pinned is not None and restorer._pinned.is_pinned()
    assert np.abs(np.stack(out) - eager).max() < CUDA_TOLERANCE
    kept = [o.copy() for o in out]
    restorer.restore([1 - f for f in frames], code)  # refills the reused pinned buffers
    assert all(np.array_equal(a, b) for a, b in zip(out, kept))  # what was returned is not a view of them
    uint8 = [(f * 255).round().astype(np.uint8) for f in frames]
    from_uint8 = FrameRestorer(fast, 4, batch=4).restore(uint8, code)
    assert np.abs(np.stack(from_uint8) - eager).max() < CUDA_TOLERANCE + 4 / 255  # the input rounded to 8 bits
    tiled = FrameRestorer(fast, 4, batch=4, tile=24, overlap=4).restore(frames, code)
    assert np.abs(np.stack(tiled) - eager).mean() < 0.05  # as on the CPU: tile seams are blended, not exact


def test_bench_speed_on_a_tiny_clip_writes_every_figure(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHIVE_RESTORE_THREADS", "1")
    models = tmp_path / "models"
    models.mkdir()
    torch.manual_seed(0)
    save_checkpoint(BlindDegEncoder(code_dim=16, width=8, input_size=64), models / "blind_encoder.safetensors")
    save_checkpoint(CondSR(code_dim=16, width=8, blocks=1), models / "condsr_compact.safetensors")
    out = tmp_path / "speed.json"
    result = CliRunner().invoke(cli, ["bench", "speed", "--size", "compact", "--device", "cpu", "--frames", "3",
                                      "--width", "40", "--height", "32", "--batch", "2", "--quiet",
                                      "--models-dir", str(models), "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    figures = data["compact"]
    assert set(figures) == set(KEYS)
    for key in ("decode_fps", "forward_fps", "eager_forward_fps", "end_to_end_fps", "per_frame_loop_fps", "peak_rss_mb"):
        assert figures[key] > 0, key
    assert (figures["frames"], figures["width"], figures["height"], figures["scale"], figures["batch"]) == (3, 40, 32, 4, 2)
    assert figures["device"] == "cpu" and figures["peak_gpu_mb"] is None
    assert figures["end_to_end_over_forward"] == pytest.approx(figures["end_to_end_fps"] / figures["forward_fps"], rel=0.01, abs=1e-3)  # rounded to 3 places
    assert "condsr_compact.safetensors" in data["meta"]["weights"]["compact"]
    assert "end_to_end_fps" in result.output and "per_frame_loop_fps" in result.output


def _stack_files(tmp_path):
    """Tiny random networks for the stack (blind encoder, CondSR, cleanup) and a random SRVGG x4 in the official
    .pth layout."""
    from spandrel.architectures.Compact import Compact

    from archive_restore.nets import Cleanup

    models = tmp_path / "models"
    models.mkdir()
    torch.manual_seed(0)
    save_checkpoint(BlindDegEncoder(code_dim=16, width=8, input_size=64), models / "blind_encoder.safetensors")
    save_checkpoint(CondSR(code_dim=16, width=8, blocks=1), models / "condsr_compact.safetensors")
    save_checkpoint(Cleanup(code_dim=16, width=8, blocks=1), models / "cleanup_compact.safetensors")
    upscaler = tmp_path / "tiny-x4.pth"
    torch.save({"params": Compact(num_feat=8, num_conv=2, upscale=4).state_dict()}, upscaler)
    return models, upscaler


def test_bench_speed_has_a_row_for_the_stack_with_each_upscaler(tmp_path, monkeypatch):
    """--upscaler FILE adds a row keyed by the file's stem, measured on the stack (cleanup -> that
    upscaler -> the CondSR blend) with the jobs' defaults: the end-to-end render writes a 4x video."""
    models, upscaler = _stack_files(tmp_path)
    out = tmp_path / "speed.json"
    from archive_restore.upscalers import runtime as rt

    frames_through = {"torch": 0, "channels-last": 0}  # the baselines run the upscaler eagerly, ours as chosen
    for runtime in (rt.TorchRuntime, rt.ChannelsLastRuntime):
        def counted(self, x, call=runtime.__call__):
            frames_through[self.name] += x.shape[0]
            return call(self, x)
        monkeypatch.setattr(runtime, "__call__", counted)
    result = CliRunner().invoke(cli, ["bench", "speed", "--device", "cpu", "--frames", "3", "--width", "40",
                                      "--height", "32", "--batch", "2", "--quiet", "--upscaler", str(upscaler),
                                      "--models-dir", str(models), "--json", str(out), "--runtime", "channels-last"])
    assert result.exit_code == 0, result.output
    # eager forward and per-frame loop: 3 frames each, plus the eager warm-up frame
    assert frames_through["torch"] == 3 + 1 + 3, frames_through
    assert frames_through["channels-last"] >= 3 + 3, frames_through  # our forward and the job's render
    data = json.loads(out.read_text())
    assert set(data) == {"compact", "tiny-x4", "meta"}  # compact by default, large only when asked for
    row = data["tiny-x4"]
    assert set(row) == set(KEYS) and row["frames"] == 3 and (row["batch"], row["tile"]) == (2, None)
    for key in ("forward_fps", "eager_forward_fps", "end_to_end_fps", "per_frame_loop_fps", "peak_rss_mb"):
        assert row[key] > 0, key
    assert "tiny-x4.pth" in data["meta"]["weights"]["tiny-x4"] and "cleanup_compact" in data["meta"]["weights"]["tiny-x4"]
    assert "tiny-x4" in result.output.splitlines()[0]


def test_bench_speed_gives_a_row_per_precision_in_one_run(tmp_path, monkeypatch):
    """--precision fp32 --precision auto: the stack's row twice (NAME@fp32, NAME@auto), each engine and job at
    its own precision."""
    from archive_restore.pipeline import engine as engine_module

    models, upscaler = _stack_files(tmp_path)
    built = []
    init = engine_module.Engine.__init__

    def recorded(self, options):
        built.append((options.upscaler, options.precision))
        init(self, options)

    monkeypatch.setattr(engine_module.Engine, "__init__", recorded)
    out = tmp_path / "speed.json"
    result = CliRunner().invoke(cli, ["bench", "speed", "--device", "cpu", "--frames", "2", "--width", "32",
                                      "--height", "24", "--batch", "2", "--quiet", "--upscaler", str(upscaler),
                                      "--precision", "fp32", "--precision", "auto", "--models-dir", str(models),
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert set(data) == {"compact", "tiny-x4@fp32", "tiny-x4@auto", "meta"}
    assert [p for u, p in built if u != "condsr"] == ["fp32", "auto"]
    assert all(data[name]["end_to_end_fps"] > 0 for name in ("tiny-x4@fp32", "tiny-x4@auto"))
    header = result.output.splitlines()[0]
    assert "tiny-x4@fp32" in header and "tiny-x4@auto" in header
