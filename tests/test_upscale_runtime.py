"""The upscaler's CPU runtimes (torch, channels-last, ONNX Runtime, ncnn): each matches torch fp32,
``auto`` picks among those that run here and remembers its answer, the ONNX export is cached by the
weights' sha256, CUDA always runs torch, and ``bench runtime`` prints and writes its figures.

The networks are the tiny random-weight Real-ESRGAN layouts of tests/test_upscalers.py, written as
official ``.pth`` files and as ncnn ``.param``/``.bin`` pairs in tmp_path. The user's cache is a
tmp folder (``Path.home`` patched); conftest's ``$ARCHIVE_RESTORE_UPSCALER_RUNTIME`` is removed.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_upscalers import _rrdb, _save, _srvgg, write_rrdb_ncnn, write_srvgg_ncnn

from archive_restore.upscalers import runtime as rt
from archive_restore.cli import cli
from archive_restore.errors import UsageError
from archive_restore.upscalers.upscaler import load_upscaler, resolve_upscaler


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """An empty user cache, and ``auto`` left to choose."""
    monkeypatch.setattr(Path, "home", lambda: tmp_path / "home")
    monkeypatch.delenv(rt.ENV_VAR, raising=False)
    return tmp_path / "home"


def _installed(runtime: str) -> None:
    for module in rt.PACKAGES.get(runtime, ()):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed here (a dependency of the project: `make install`)")


def _lq(n: int = 2, size: int = 12) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(3))


def with_splits(param: Path) -> Path:
    """The ``.param`` with a Split layer after every blob that several layers read, as ncnn's own
    converters write it (ncnn hands each blob to one reader; test_upscalers' writer leaves them out)."""
    head, body = param.read_text().splitlines()[:2], param.read_text().splitlines()[2:]
    rows = [line.split() for line in body]
    readers: dict[str, int] = {}
    for row in rows:
        for blob in row[4:4 + int(row[2])]:
            readers[blob] = readers.get(blob, 0) + 1
    taken: dict[str, int] = {}
    out, blobs = [], int(head[1].split()[1])
    for row in rows:
        n_in, n_out = int(row[2]), int(row[3])
        inputs = row[4:4 + n_in]
        for i, blob in enumerate(inputs):
            if readers[blob] > 1:
                inputs[i] = f"{blob}_{taken.get(blob, 0)}"
                taken[blob] = taken.get(blob, 0) + 1
        out.append(" ".join(row[:4] + inputs + row[4 + n_in:]))
        for blob in row[4 + n_in:4 + n_in + n_out]:
            if readers.get(blob, 0) > 1:
                copies = [f"{blob}_{i}" for i in range(readers[blob])]
                out.append(f"Split split_{blob} 1 {len(copies)} {blob} {' '.join(copies)}")
                blobs += len(copies)
    param.write_text(f"{head[0]}\n{len(out)} {blobs}\n" + "\n".join(out) + "\n")
    return param


FILES = {
    "rrdb.pth": lambda folder: _save(_rrdb(), folder / "rrdb.pth", "params_ema"),
    "srvgg.pth": lambda folder: _save(_srvgg(), folder / "srvgg.pth", "params"),
    "rrdb.param": lambda folder: with_splits(write_rrdb_ncnn(_rrdb(), folder)),
    "srvgg.param": lambda folder: write_srvgg_ncnn(_srvgg(), folder),
}


@pytest.mark.parametrize("runtime", rt.RUNTIMES)
@pytest.mark.parametrize("kind", list(FILES))
def test_each_runtime_matches_torch_fp32(tmp_path, kind, runtime):
    _installed(runtime)
    path = FILES[kind](tmp_path)
    ref = resolve_upscaler(str(path))
    reference = load_upscaler(ref, runtime="torch")
    if runtime == "ncnn" and path.suffix != ".param":
        with pytest.raises(UsageError, match=r"ncnn runs ncnn \.param/\.bin files only"):
            load_upscaler(ref, runtime=runtime)
        return
    up = load_upscaler(ref, runtime=runtime)
    assert up.runtime.name == runtime
    if runtime == "ncnn":  # fp32 storage and arithmetic, whatever this CPU's ncnn would pick by default
        opt = up.runtime.net.opt
        assert not (opt.use_fp16_storage or opt.use_fp16_arithmetic or opt.use_bf16_storage or opt.use_vulkan_compute)
    lq = _lq()
    out, expected = up(lq), reference(lq)
    assert out.shape == expected.shape == (2, 3, 48, 48) and out.dtype == torch.float32
    assert float((out - expected).abs().max()) <= rt.TOLERANCE
    odd = _lq(1, 13)  # the Upscaler's padding and crop around the runtime
    assert float((up(odd) - reference(odd)).abs().max()) <= rt.TOLERANCE


def test_fastest_is_the_fastest_that_matches_torch():
    rows = [rt.Measured("torch", 1.0, 0.0), rt.Measured("channels-last", 0.5, 2e-3),
            rt.Measured("onnxruntime", 0.7, 1e-6), rt.Measured("ncnn", None, None, "not installed")]
    assert rt.fastest(rows) == "onnxruntime"
    assert rt.fastest(rows[1:2] + rows[3:]) == "torch"  # nothing matches: torch itself


def test_auto_probes_once_and_remembers_its_answer(tmp_path, home, monkeypatch):
    path = _save(_srvgg(), tmp_path / "srvgg.pth", "params")
    probes = []
    real_probe = rt.probe
    monkeypatch.setattr(rt, "probe", lambda *a, **k: probes.append(1) or real_probe(*a, **k))
    first = load_upscaler(resolve_upscaler(str(path)), progress=False)
    choices = json.loads((home / ".cache" / "archive-restore" / "runtimes" / "choices.json").read_text())
    (entry,) = choices.values()
    assert first.runtime.name == entry["runtime"] == rt.pick([rt.Measured(**m) for m in entry["measured"]])
    assert [m["runtime"] for m in entry["measured"]] == list(rt.RUNTIMES + rt.OPT_IN)
    assert any("ncnn runs ncnn .param/.bin files only" in m["note"] for m in entry["measured"])
    second = load_upscaler(resolve_upscaler(str(path)), progress=False)
    assert second.runtime.name == first.runtime.name and len(probes) == 1  # read back, not measured again
    _save(_srvgg(seed=1), tmp_path / "other.pth", "params")
    load_upscaler(resolve_upscaler(str(tmp_path / "other.pth")), progress=False)
    assert len(probes) == 2  # other weights: measured anew


def test_auto_falls_back_to_torch_when_a_runtime_is_missing(tmp_path, monkeypatch):
    path = _save(_srvgg(), tmp_path / "srvgg.pth", "params")
    monkeypatch.setattr(rt, "PACKAGES", {"onnxruntime": ("no_such_onnxruntime",), "ncnn": ("no_such_ncnn",)})
    monkeypatch.setattr(rt, "RUNTIMES", ("torch", "onnxruntime", "ncnn"))  # the only other candidates: missing
    assert load_upscaler(resolve_upscaler(str(path)), progress=False).runtime.name == "torch"
    monkeypatch.setenv(rt.ENV_VAR, "onnxruntime")
    assert load_upscaler(resolve_upscaler(str(path))).runtime.name == "torch"
    with pytest.raises(UsageError, match=r"onnxruntime: the no_such_onnxruntime package is not installed"):
        load_upscaler(resolve_upscaler(str(path)), runtime="onnxruntime")
    with pytest.raises(UsageError, match="unknown upscaler runtime 'tensorrt'"):
        load_upscaler(resolve_upscaler(str(path)), runtime="tensorrt")


def test_the_onnx_export_is_cached_by_the_weights_sha256(tmp_path, home, monkeypatch):
    _installed("onnxruntime")
    exports = []
    real_export = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: exports.append(1) or real_export(*a, **k))
    path = _save(_srvgg(), tmp_path / "srvgg.pth", "params")
    ref = resolve_upscaler(str(path))
    first = load_upscaler(ref, runtime="onnxruntime")
    assert first.runtime.path == home / ".cache" / "archive-restore" / "runtimes" / f"{ref.sha256}-opset{rt.OPSET}.onnx"
    assert first.runtime.path.is_file() and len(exports) == 1
    assert load_upscaler(ref, runtime="onnxruntime").runtime.path == first.runtime.path and len(exports) == 1
    _save(_srvgg(seed=1), path, "params")  # the same file name, other weights
    other = load_upscaler(resolve_upscaler(str(path)), runtime="onnxruntime")
    assert other.runtime.path != first.runtime.path and len(exports) == 2
    lq = _lq()
    reference = load_upscaler(resolve_upscaler(str(path)), runtime="torch")
    assert float((other(lq) - reference(lq)).abs().max()) <= rt.TOLERANCE  # the new weights, not the cached old


@pytest.mark.parametrize("runtime", ["onnxruntime", "ncnn"])
def test_runtimes_take_torchs_thread_count(tmp_path, runtime):
    _installed(runtime)
    up = load_upscaler(resolve_upscaler(str(write_srvgg_ncnn(_srvgg(), tmp_path))), runtime=runtime)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            up(_lq())
            if runtime == "onnxruntime":
                options = up.runtime.session().get_session_options()
                assert options.intra_op_num_threads == threads
                assert not options.enable_cpu_mem_arena  # the largest pass's buffers are not kept for good
            else:
                assert up.runtime.net.opt.num_threads == threads
    finally:
        torch.set_num_threads(before)


def test_cuda_always_runs_torch(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (none here): on CUDA every runtime request runs torch")
    path = _save(_srvgg(), tmp_path / "srvgg.pth", "params")
    for runtime in rt.CHOICES:
        up = load_upscaler(resolve_upscaler(str(path)), "cuda", runtime=runtime)
        assert up.runtime.name == "torch" and next(up.model.parameters()).is_cuda
        assert up(_lq().cuda()).is_cuda


def test_bench_runtime_prints_and_writes_every_runtime(tmp_path):
    path = write_srvgg_ncnn(_srvgg(), tmp_path)
    out = tmp_path / "runtime.json"
    result = CliRunner().invoke(cli, ["bench", "runtime", "--upscaler", str(path), "--size", "16", "--runs", "2",
                                      "--no-compile", "--json", str(out), "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    item = figures["upscalers"]["tiny-srvgg"]
    assert sorted(item["runtimes"]) == sorted(rt.RUNTIMES + rt.OPT_IN + ("torch-compile",))
    torch_row = item["runtimes"]["torch"]
    assert torch_row["max_diff"] == 0.0 and len(torch_row["runs"]) == 2 and torch_row["seconds"] > 0
    half = item["runtimes"]["half"]  # measured where this CPU has fast fp16, else a row saying why not
    assert (half["seconds"] is not None) == (rt.reduced_missing("half") is None)
    assert half["seconds"] is not None or "no fast fp16 convolution" in half["note"]
    ran = [name for name, row in item["runtimes"].items() if row["seconds"] is not None and name in rt.RUNTIMES]
    assert all(item["runtimes"][name]["max_diff"] <= rt.TOLERANCE for name in ran)
    assert item["fastest"] in ran and item["auto"] in rt.RUNTIMES
    assert f"auto picks: {item['auto']}" in result.output and "16x16 input" in result.output


@pytest.mark.parametrize("kind", ["rrdb.pth", "srvgg.pth"])
def test_half_runs_the_network_in_fp16_but_reads_the_picture_in_fp32(tmp_path, kind, monkeypatch):
    """``half``, asked for by name: a copy of the network in fp16 whose first convolution stays fp32; the
    output is float32, close to torch fp32 but not equal; the loaded module stays the fp32 reference."""
    monkeypatch.setattr(rt, "reduced_missing", lambda name: None)  # the mechanics, on any CPU (fast or not)
    ref = resolve_upscaler(str(FILES[kind](tmp_path)))
    reference = load_upscaler(ref, runtime="torch")
    up = load_upscaler(ref, runtime="half")
    assert up.runtime.name == "half"
    entry, _ = __import__("archive_restore.nets.realesrgan", fromlist=["entry_conv"]).entry_conv(up.runtime.model)
    weights = [p.dtype for p in up.runtime.model.parameters()]
    assert entry.conv.weight.dtype == torch.float32 and weights.count(torch.float32) == 2  # its weight and bias
    assert set(weights) == {torch.float16, torch.float32} and next(up.model.parameters()).dtype == torch.float32
    lq = _lq()
    out, expected = up(lq), reference(lq)
    assert out.dtype == torch.float32 and out.shape == expected.shape == (2, 3, 48, 48)
    assert 0 < float((out - expected).abs().max()) < 2e-2


def test_auto_admits_a_reduced_precision_only_when_it_is_fast_and_close():
    """``pick``: a reduced-precision runtime wins only at least MIN_SPEEDUP x faster than the fastest fp32
    runtime that matches torch and, on the probe picture, MIN_PSNR dB or more from torch fp32 and never
    MAX_DIFF away; else the fp32 runtime."""
    fp32 = [rt.Measured("torch", 1.0, 0.0, psnr=100.0), rt.Measured("channels-last", 0.6, 1e-6, psnr=100.0)]
    close = dict(max_diff=4 / 255, psnr=52.0)
    assert rt.pick(fp32 + [rt.Measured("bf16", 0.3, **close)]) == "bf16"
    assert rt.pick(fp32 + [rt.Measured("bf16", 0.3, **close), rt.Measured("half", 0.2, **close)]) == "half"
    assert rt.pick(fp32 + [rt.Measured("bf16", 0.41, **close)]) == "channels-last"  # 1.46 x: not worth it
    assert rt.pick(fp32 + [rt.Measured("bf16", 0.39, **close)]) == "bf16"  # 1.54 x
    wrong = rt.Measured("bf16", 0.05, 0.5, psnr=20.0)  # fast but wrong: refused
    assert rt.pick(fp32 + [wrong]) == "channels-last"
    assert rt.pick(fp32 + [rt.Measured("bf16", 0.05, 9 / 255, psnr=50.0)]) == "channels-last"  # one pixel too far
    assert rt.pick(fp32 + [rt.Measured("bf16", 0.05, 2 / 255, psnr=44.9)]) == "channels-last"  # too noisy overall
    assert rt.pick(fp32 + [rt.Measured("bf16", None, None, "no fast bf16 convolution")]) == "channels-last"


def test_a_fast_but_wrong_precision_is_refused_and_fp32_never_runs_one(tmp_path, home, monkeypatch):
    """Through the probe itself: a reduced runtime that is fast but far from fp32 is measured and refused;
    a fast and close one is taken; at precision fp32 none is even measured."""
    path = _save(_srvgg(), tmp_path / "srvgg.pth", "params")
    model = load_upscaler(resolve_upscaler(str(path)), runtime="torch").model

    class Fake:
        def __init__(self, name, error):
            self.name, self.error = name, error

        def __call__(self, x):
            return model(x) + self.error  # no work beside torch's own: as fast as torch, never 1.5 x faster

    def runners(model, weights, reduced=False):
        built = {"torch": rt.TorchRuntime(model)}
        if reduced:
            built["bf16"] = Fake("bf16", 0.0)
        return built, []

    monkeypatch.setattr(rt, "runners", runners)
    monkeypatch.setattr(rt, "MIN_SPEEDUP", 0.5)  # the fake runs no faster: admit it on closeness alone
    weights = rt.Weights(path, "fast-and-close")
    assert rt.choose(model, weights, progress=False) == "bf16"
    assert rt.choose(model, weights, progress=False, precision="fp32") == "torch"
    monkeypatch.setattr(rt, "runners", lambda model, weights, reduced=False: (
        {"torch": rt.TorchRuntime(model), **({"bf16": Fake("bf16", 0.2)} if reduced else {})}, []))
    assert rt.choose(model, rt.Weights(path, "fast-and-wrong"), progress=False) == "torch"
    monkeypatch.setenv(rt.PRECISION_ENV, "fp32")  # the variable, as --precision's envvar sets it
    assert rt.choose(model, rt.Weights(path, "asked-fp32"), progress=False) == "torch"
    monkeypatch.setenv(rt.PRECISION_ENV, "fp64")
    with pytest.raises(UsageError, match="unknown precision 'fp64'; choose one of auto, fp32"):
        rt.choose(model, rt.Weights(path, "bad"), progress=False)


def test_a_reduced_runtime_can_be_asked_for_by_name(tmp_path, monkeypatch):
    monkeypatch.setattr(rt, "reduced_missing", lambda name: None)
    path = _save(_srvgg(), tmp_path / "srvgg.pth", "params")
    monkeypatch.setenv(rt.ENV_VAR, "half")
    assert load_upscaler(resolve_upscaler(str(path))).runtime.name == "half"
    monkeypatch.setenv(rt.ENV_VAR, "bf16")
    up = load_upscaler(resolve_upscaler(str(path)))
    assert up.runtime.name == "bf16" and {p.dtype for p in up.runtime.model.parameters()} == {torch.bfloat16,
                                                                                               torch.float32}


def test_half_is_refused_where_it_would_not_pay_or_cannot_run(tmp_path, monkeypatch):
    from archive_restore.compute import cpu

    path = _save(_srvgg(), tmp_path / "srvgg.pth", "params")
    speedups = {torch.float16: 0.6, torch.bfloat16: 3.2}  # AMX-BF16 only (this project's CPU): fp16 is not fast
    monkeypatch.setattr(cpu, "half_speedups", lambda: speedups)
    with pytest.raises(UsageError, match=r"half: this CPU has no fast fp16 convolution \(AMX-FP16"):
        load_upscaler(resolve_upscaler(str(path)), runtime="half")
    assert load_upscaler(resolve_upscaler(str(path)), runtime="bf16").runtime.name == "bf16"
    speedups = {torch.float16: 6.1, torch.bfloat16: 1.4}
    assert load_upscaler(resolve_upscaler(str(path)), runtime="half").runtime.name == "half"
    with pytest.raises(UsageError, match=r"bf16: this CPU has no fast bf16 convolution \(AMX-BF16, or AVX-512"):
        load_upscaler(resolve_upscaler(str(path)), runtime="bf16")
    with pytest.raises(UsageError, match="RRDBNet and SRVGGNetCompact layouts only, not Conv2d"):
        rt.HalfRuntime(torch.nn.Conv2d(3, 3, 3))
