"""The quality benchmark runs its whole protocol on any folders and writes every figure to JSON."""
import json

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from archive_restore.cli import cli
from archive_restore.metrics import psnr_y, ssim_y
from archive_restore.nets import BlindDegEncoder, CondSR, DegEncoder, save_checkpoint

torch.set_num_threads(1)


def _write_models(folder):
    torch.manual_seed(0)
    save_checkpoint(DegEncoder(code_dim=16, width=8, input_size=64), folder / "deg_encoder.safetensors")
    save_checkpoint(BlindDegEncoder(code_dim=16, width=8, input_size=64), folder / "blind_encoder.safetensors")
    save_checkpoint(CondSR(code_dim=16, width=8, blocks=1), folder / "condsr_compact.safetensors")
    save_checkpoint(CondSR(code_dim=16, width=8, blocks=1, conditioned=False), folder / "condsr_uncond_compact.safetensors")


def test_bench_quality_on_a_tiny_folder(tmp_path):
    rng = np.random.default_rng(0)
    images, faces, models = tmp_path / "images", tmp_path / "faces", tmp_path / "models"
    for folder in (images, faces, models):
        folder.mkdir()
    for i in range(2):
        small = rng.random((12, 12, 3))
        cv2.imwrite(str(images / f"{i}.png"), (cv2.resize(small, (96, 96)) * 255).astype(np.uint8))
        cv2.imwrite(str(faces / f"{i}.png"), (cv2.resize(small, (64, 64)) * 255).astype(np.uint8))
    _write_models(models)
    out = tmp_path / "q.json"
    result = CliRunner().invoke(cli, ["bench", "quality", "--images", str(images), "--faces", str(faces),
                                      "--degradations", "3", "--models-dir", str(models), "--json", str(out), "--seed", "5"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    for method in ("bicubic", "uncond", "face_code", "blind_code", "oracle_code"):
        assert 5 < data[method]["psnr_y"] < 60 and 0 < data[method]["ssim"] <= 1
        assert method in result.output
    assert 0 <= data["retrieval_top1"] <= 1
    assert (data["images"], data["degradations"], data["seed"], data["scale"]) == (2, 3, 5, 4)
    assert data["cpu_seconds_per_256"] > 0
    # Untrained nets start at bicubic plus a zero-initialised modulation: the same figures with the code or without.
    assert abs(data["face_code"]["psnr_y"] - data["oracle_code"]["psnr_y"]) < 1e-6


def test_bench_quality_without_models_says_how_to_get_them(tmp_path, monkeypatch):
    import archive_restore.models as models

    monkeypatch.setattr(models, "REPO_MODELS", tmp_path / "no-repo-models")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("ARCHIVE_RESTORE_MODELS", raising=False)
    (tmp_path / "i").mkdir()
    cv2.imwrite(str(tmp_path / "i" / "a.png"), np.zeros((64, 64, 3), np.uint8))
    result = CliRunner().invoke(cli, ["bench", "quality", "--images", str(tmp_path / "i"), "--faces", str(tmp_path / "i")])
    assert result.exit_code == 1
    assert "error: model file deg_encoder.safetensors not found" in result.output and "archive-restore train" in result.output


def test_metrics_known_values():
    rng = np.random.default_rng(0)
    ref = rng.random((32, 32, 3)).astype(np.float32)
    assert psnr_y(ref, ref) == float("inf")
    assert ssim_y(ref, ref) > 0.999
    noisy = np.clip(ref + 0.05, 0, 1)
    assert 20 < psnr_y(noisy, ref) < 40 and ssim_y(noisy, ref) < 1


def _stack_setup(tmp_path, side: int, upscaler_name: str, seed: int):
    """One ``side`` px image, the tiny networks with a cleanup, and a random-weight Real-ESRGAN compact
    (SRVGGNetCompact) saved the way its official .pth files are."""
    from spandrel.architectures.Compact import Compact

    from archive_restore.nets import Cleanup

    rng = np.random.default_rng(seed)
    images, models = tmp_path / "images", tmp_path / "models"
    images.mkdir(), models.mkdir()
    cv2.imwrite(str(images / "a.png"), (cv2.resize(rng.random((8, 8, 3)), (side, side)) * 255).astype(np.uint8))
    _write_models(models)
    save_checkpoint(Cleanup(code_dim=16, width=8, blocks=1), models / "cleanup_compact.safetensors")
    torch.manual_seed(0)
    upscaler = tmp_path / upscaler_name
    torch.save({"params": Compact(num_feat=8, num_conv=2, upscale=4).state_dict()}, upscaler)
    return images, models, upscaler


def test_bench_quality_upscaler_rows_alone_and_in_the_stack_with_niqe_and_a_sheet(tmp_path):
    """--upscaler adds the upscaler alone and the stack with each code (a random-weight SRVGG here)."""
    images, models, esrgan = _stack_setup(tmp_path, 96, "realesr-compact-x4.pth", seed=1)
    out, sheet = tmp_path / "q.json", tmp_path / "sheet.png"
    result = CliRunner().invoke(cli, ["bench", "quality", "--images", str(images), "--faces", str(images),
                                      "--degradations", "2", "--models-dir", str(models), "--upscaler", str(esrgan),
                                      "--fidelity", "0.5", "--json", str(out), "--sheet", str(sheet)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    rows = ["bicubic", "uncond", "face_code", "blind_code", "oracle_code", "realesr-compact-x4",
            *(f"realesr-compact-x4+{code}" for code in ("face_code", "blind_code", "oracle_code"))]
    for name in rows:
        assert name in result.output
        assert all(np.isfinite(data[name][key]) for key in ("psnr_y", "ssim", "niqe"))
    assert data["fidelity"] == [0.5] and data["upscalers"]["realesr-compact-x4"]["sha256"]
    assert np.isfinite(data["hq_niqe"]) and "NIQE of the HQ crops" in result.output
    # the stack is not the upscaler alone: the cleanup and the blend towards CondSR change the picture
    assert data["realesr-compact-x4+face_code"]["psnr_y"] != data["realesr-compact-x4"]["psnr_y"]
    picture = cv2.imread(str(sheet))
    assert picture.shape[:2] == (24 + 96, 96 * (len(rows) + 1))  # a label row; HQ + a column per method


def test_bench_quality_several_fidelities_give_a_row_each_on_the_blend_line(tmp_path):
    """Rows NAME+CODE@F: the upscaled cleanup blended with CondSR's picture, F = 0 and 1 at the ends."""
    images, models, esrgan = _stack_setup(tmp_path, 64, "up.pth", seed=2)
    out = tmp_path / "q.json"
    args = ["bench", "quality", "--images", str(images), "--faces", str(images), "--degradations", "1",
            "--models-dir", str(models), "--upscaler", str(esrgan), "--json", str(out)]
    result = CliRunner().invoke(cli, [*args, "--fidelity", "0", "--fidelity", "1"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["fidelity"] == [0.0, 1.0]
    assert data["bicubic"]["niqe"] is None  # a 64 px crop is too small for NIQE: not measured, not a failure
    # fidelity 1 is CondSR's own picture with that code; 0 is not
    assert data["up+face_code@1"]["psnr_y"] == pytest.approx(data["face_code"]["psnr_y"], abs=1e-6)
    assert data["up+face_code@0"]["psnr_y"] != pytest.approx(data["face_code"]["psnr_y"], abs=1e-3)
