"""The quality benchmark runs its whole protocol on any folders and writes every figure to JSON."""
import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from archive_restore.bench.quality import center_crop
from archive_restore.cli import cli
from archive_restore.codes import image_to_tensor, tensor_to_image
from archive_restore.degrade import Degradation
from archive_restore.media.folders import load_rgb, to_float
from archive_restore.nets import BlindDegEncoder, CondSR, DegEncoder, save_checkpoint
from archive_restore.nets.layers import FiLM
from archive_restore.quality.metrics import psnr_y, ssim_y

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
    condsr = CondSR(code_dim=16, width=8, blocks=1)
    with torch.no_grad():
        for film in (m for m in condsr.modules() if isinstance(m, FiLM)):
            film.proj.weight.normal_(0, 2.0)  # the code modulates the blocks: each code gives its own picture
    save_checkpoint(condsr, models / "condsr_compact.safetensors")
    out = tmp_path / "q.json"
    result = CliRunner().invoke(cli, ["bench", "quality", "--images", str(images), "--faces", str(faces),
                                      "--degradations", "3", "--models-dir", str(models), "--json", str(out), "--seed", "5"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    for method in ("bicubic", "uncond", "face_code", "blind_code", "oracle_code"):
        assert 0 < data[method]["ssim"] <= 1 and np.isfinite(data[method]["psnr_y"])
        assert method in result.output
    assert 0 <= data["retrieval_top1"] <= 1
    assert (data["images"], data["degradations"], data["seed"], data["scale"]) == (2, 3, 5, 4)
    assert data["cpu_seconds_per_256"] > 0
    # The bicubic row is the protocol's figure, recomputed here: each image's central crop, degraded
    # by each seeded degradation, enlarged bicubically, PSNR-Y without a 4 px border, averaged.
    expected = []
    for path in sorted(images.iterdir()):
        hq = center_crop(to_float(load_rgb(path)), 256, 4)
        for k in range(3):
            lq = np.clip(Degradation.sample(np.random.default_rng([5, k]), scale=4).apply(hq), 0, 1)
            up = F.interpolate(image_to_tensor(lq), size=hq.shape[:2], mode="bicubic", align_corners=False)
            expected.append(psnr_y(tensor_to_image(up.clamp(0, 1)), hq, 4))
    assert data["bicubic"]["psnr_y"] == pytest.approx(float(np.mean(expected)), abs=1e-9)
    # Each code row is CondSR with its own codes: the face's and the oracle's codes differ, so do the
    # rows (measured 1.1e-4 dB apart: these default-initialised encoders give close codes; the same
    # codes would give the same figure to 1e-12).
    assert abs(data["face_code"]["psnr_y"] - data["oracle_code"]["psnr_y"]) > 2e-5


def test_bench_quality_without_models_says_how_to_get_them(tmp_path, monkeypatch):
    import archive_restore.weights.folders as models

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
    ref = (rng.random((32, 32, 3)) * 0.9).astype(np.float64)
    assert psnr_y(ref, ref) == float("inf")
    assert ssim_y(ref, ref) == pytest.approx(1.0, abs=1e-12)
    # Every channel 0.05 brighter (nothing clipped): Y moves by 0.05 * (65.481 + 128.553 + 24.966) / 255
    # everywhere, so PSNR = -20 log10 of that: 27.342 dB.
    shift = 0.05 * (65.481 + 128.553 + 24.966) / 255
    assert psnr_y(ref + 0.05, ref) == pytest.approx(-20 * np.log10(shift), abs=1e-9)
    # On a flat picture only SSIM's luminance term is left: (2ab + c1) / (a^2 + b^2 + c1), Y in 0..255.
    flat = np.full((32, 32, 3), 0.4)
    a, b, c1 = (16 + 219 * 0.45), (16 + 219 * 0.4), (0.01 * 255) ** 2
    assert ssim_y(flat + 0.05, flat) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-9)


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


def test_bench_quality_below_x4_has_a_timed_row_per_scale_method(tmp_path):
    """--scale 2: the stack's rows NAME+CODE/full, /reduced and /cleanup, each with its seconds per image; the
    methods give different pictures."""
    images, models, esrgan = _stack_setup(tmp_path, 64, "up.pth", seed=3)
    out = tmp_path / "q.json"
    result = CliRunner().invoke(cli, ["bench", "quality", "--images", str(images), "--faces", str(images),
                                      "--degradations", "2", "--scale", "2", "--models-dir", str(models),
                                      "--upscaler", str(esrgan), "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["scale"] == 2 and "s/image" in result.output
    rows = [f"up+face_code/{method}" for method in ("full", "reduced", "cleanup")]
    for name in rows:
        assert np.isfinite(data[name]["psnr_y"]) and data[name]["seconds"] > 0, name
    assert len({data[name]["psnr_y"] for name in rows}) == 3
    assert "seconds" not in data["bicubic"] and "up+face_code" not in data


def test_bench_quality_adapt_adds_the_stack_with_the_cleanup_fine_tuned_on_each_face(tmp_path):
    """--adapt: rows NAME+face_code+adapt, restored with a cleanup fine-tuned for each degradation on its face (not
    the shipped one), and the settings and seconds per code said; the blind code has no face to learn from."""
    from archive_restore.pipeline.adapt import Adaptation

    images, models, esrgan = _stack_setup(tmp_path, 64, "up.pth", seed=3)
    out = tmp_path / "q.json"
    result = CliRunner().invoke(cli, ["bench", "quality", "--images", str(images), "--faces", str(images),
                                      "--degradations", "2", "--models-dir", str(models), "--upscaler", str(esrgan),
                                      "--fidelity", "0", "--adapt", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["up+face_code+adapt"]["psnr_y"] != pytest.approx(data["up+face_code"]["psnr_y"], abs=1e-4)
    assert "up+blind_code+adapt" not in data and "up+oracle_code+adapt" not in data
    assert data["adapt"]["codes"] == 2 and data["adapt"]["steps"] == Adaptation().steps
    assert "+adapt: the cleanup fine-tuned to each code" in result.output


def test_bench_quality_reads_faces_as_jobs_with_our_face_restorer_do(tmp_path):
    """--restored-faces ours: the face code is the blind encoder's on each LQ face (as jobs with our face restorer
    read it), whatever the restorer gives; --adapt learns from our restorer's faces (a restorer that brightens its
    faces gives another adapted row); the rows without a face code are as with the HQ faces."""
    from archive_restore.nets.face_net import FaceNet
    from archive_restore.weights.folders import MODEL_FILES

    images, models, esrgan = _stack_setup(tmp_path, 64, "up.pth", seed=3)
    condsr = CondSR(code_dim=16, width=8, blocks=1)
    with torch.no_grad():
        for film in (m for m in condsr.modules() if isinstance(m, FiLM)):
            film.proj.weight.normal_(0, 2.0)  # the code modulates the blocks: each code gives its own picture
    save_checkpoint(condsr, models / "condsr_compact.safetensors")
    runs = {}
    for name, restorer, brighten in (("hq", "hq", 0.0), ("ours", "ours", 0.0), ("brighter", "ours", 0.3)):
        torch.manual_seed(0)
        net = FaceNet(features=4, depth=2)
        torch.nn.init.zeros_(net.out.weight)
        torch.nn.init.constant_(net.out.bias, brighten)
        save_checkpoint(net, models / MODEL_FILES["face_net"])
        out = tmp_path / f"{name}.json"
        result = CliRunner().invoke(cli, ["bench", "quality", "--images", str(images), "--faces", str(images),
                                          "--degradations", "2", "--models-dir", str(models), "--upscaler",
                                          str(esrgan), "--fidelity", "0", "--adapt", "--restored-faces", restorer,
                                          "--json", str(out)])
        assert result.exit_code == 0, result.output
        runs[name] = json.loads(out.read_text())
    hq, ours, brighter = runs["hq"], runs["ours"], runs["brighter"]
    assert (hq["restored_faces"], ours["restored_faces"]) == ("hq", "ours")
    assert ours["face_code"]["psnr_y"] == pytest.approx(brighter["face_code"]["psnr_y"], abs=1e-9)
    assert ours["face_code"]["psnr_y"] != pytest.approx(hq["face_code"]["psnr_y"], abs=1e-4)
    assert ours["up+face_code+adapt"]["psnr_y"] != pytest.approx(brighter["up+face_code+adapt"]["psnr_y"], abs=1e-4)
    for row in ("bicubic", "blind_code", "oracle_code", "up"):
        assert ours[row]["psnr_y"] == pytest.approx(hq[row]["psnr_y"], abs=1e-6)
    assert ours["adapt"]["codes"] == 2
