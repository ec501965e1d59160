"""Every architecture: shapes, save/reload with random weights (the checkpoint rebuilds its own net),
and the loader refusing what it should."""
import json

import pytest
import torch
from safetensors.torch import save_file

from archive_restore.errors import CheckpointError
from archive_restore.nets import (
    BlindDegEncoder, Cleanup, CondSR, DegEncoder, DegSynth, build_cleanup, build_condsr, load_checkpoint, read_header, restore_at_scale,
    save_checkpoint,
)

torch.set_num_threads(1)
CODE = 16


def _nets():
    return {
        "DegEncoder": DegEncoder(code_dim=CODE, width=8, input_size=64),
        "BlindDegEncoder": BlindDegEncoder(code_dim=CODE, width=8, input_size=64),
        "DegSynth": DegSynth(code_dim=CODE, width=8, layers=2),
        "CondSR": CondSR(code_dim=CODE, width=8, blocks=2),
        "Cleanup": Cleanup(code_dim=CODE, width=8, blocks=2),
    }


def _randomise(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model.eval()


def _run(name, model):
    torch.manual_seed(1)
    x, z = torch.rand(2, 3, 32, 32), torch.randn(2, CODE)
    if name == "DegEncoder":
        return model(x, torch.rand(2, 3, 32, 32))
    if name == "BlindDegEncoder":
        return model(x)
    if name == "DegSynth":
        return model(x, z, noise=torch.zeros(2, 1, 8, 8))
    return model(x, z)


def test_output_shapes():
    nets = _nets()
    assert _run("DegEncoder", nets["DegEncoder"]).shape == (2, CODE)
    assert _run("BlindDegEncoder", nets["BlindDegEncoder"]).shape == (2, CODE)
    assert _run("DegSynth", nets["DegSynth"]).shape == (2, 3, 32, 32)
    assert _run("CondSR", nets["CondSR"]).shape == (2, 3, 128, 128)
    assert _run("Cleanup", nets["Cleanup"]).shape == (2, 3, 32, 32)


def test_codes_depend_on_the_pair():
    enc = _randomise(_nets()["DegEncoder"])
    torch.manual_seed(2)
    hq = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        clean = enc(hq, hq)
        noisy = enc((hq + 0.2 * torch.randn_like(hq)).clamp(0, 1), hq)
    assert not torch.allclose(clean, noisy, atol=1e-3)


@pytest.mark.parametrize("name", ["DegEncoder", "BlindDegEncoder", "DegSynth", "CondSR"])
def test_save_reload_every_architecture(tmp_path, name):
    model = _randomise(_nets()[name])
    path = save_checkpoint(model, tmp_path / f"{name}.safetensors", info={"steps": 3})
    loaded = load_checkpoint(path, expect=name)
    assert loaded.arch == name and loaded.info == {"steps": 3} and loaded.args == model.config
    with torch.no_grad():
        assert torch.equal(_run(name, model), _run(name, loaded.model))
    assert not list(tmp_path.glob(".*tmp")), "no temporary file may be left behind"


def test_condsr_code_changes_output_and_twin_ignores_it():
    cond = _randomise(CondSR(code_dim=CODE, width=8, blocks=2))
    twin = _randomise(CondSR(code_dim=CODE, width=8, blocks=2, conditioned=False))
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(cond(x, torch.randn(1, CODE)), cond(x, torch.randn(1, CODE)))
        assert torch.equal(twin(x, torch.randn(1, CODE)), twin(x, torch.randn(1, CODE)))


def test_untrained_condsr_ignores_the_code_and_its_skip_is_bicubic():
    """Zero-initialised modulation: before training every code gives the same picture; and the skip
    is exactly bicubic: with the upsampler's last convolution at zero, the output is bicubic."""
    torch.manual_seed(0)
    model = build_condsr("compact", code_dim=CODE).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x, torch.randn(1, CODE)), model(x, torch.randn(1, CODE)))
        torch.nn.init.zeros_(model.upsample[0].weight)
        torch.nn.init.zeros_(model.upsample[0].bias)
        out = model(x, torch.randn(1, CODE))
    bicubic = torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    assert torch.equal(out, bicubic)


@pytest.mark.parametrize("scale,side", [(1, 16), (2, 32), (4, 64)])
def test_restore_at_scale(scale, side):
    model = CondSR(code_dim=CODE, width=8, blocks=1).eval()
    with torch.no_grad():
        out = restore_at_scale(model, torch.rand(1, 3, 16, 16), torch.randn(1, CODE), scale)
    assert out.shape[-2:] == (side, side)


def test_loader_refuses_foreign_and_mismatched_files(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="no archive-restore header"):
        load_checkpoint(foreign)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        read_header(junk)
    path = save_checkpoint(_nets()["CondSR"], tmp_path / "sr.safetensors")
    with pytest.raises(CheckpointError, match="CondSR, but a DegEncoder was expected"):
        load_checkpoint(path, expect="DegEncoder")
    bad_args = tmp_path / "bad.safetensors"
    meta = {"format": "archive-restore/1", "arch": "CondSR", "args": json.dumps({"code_dim": CODE, "width": 9}), "info": "{}"}
    save_file({"w": torch.zeros(1)}, str(bad_args), metadata=meta)
    with pytest.raises(CheckpointError, match="weights do not match"):
        load_checkpoint(bad_args)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_saved_checkpoint_has_the_usual_file_mode(tmp_path):
    """Regression: safetensors creates its file 0600, so exported models were unreadable to others."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = save_checkpoint(_nets()["CondSR"], tmp_path / "sr.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_untrained_cleanup_is_the_identity_at_any_size():
    """The cleanup's tail and tone start at zero: before training it hands the picture on unchanged,
    odd sizes included (its trunk runs at half resolution)."""
    model = build_cleanup("compact", code_dim=CODE).eval()
    torch.manual_seed(3)
    for shape in ((1, 3, 31, 45), (2, 3, 32, 32)):
        x = torch.rand(*shape)
        with torch.no_grad():
            assert torch.equal(model(x, torch.randn(shape[0], CODE)), x)


def test_cleanup_code_changes_output_and_keeps_the_size():
    model = _randomise(Cleanup(code_dim=CODE, width=8, blocks=2))
    torch.manual_seed(4)
    x = torch.rand(1, 3, 27, 33)
    with torch.no_grad():
        a, b = model(x, torch.randn(1, CODE)), model(x, torch.randn(1, CODE))
    assert a.shape == x.shape
    assert (a - b).abs().mean() > 1e-3
