"""Our own face restorer (``--faces-without-restorer ours``: ``nets.face_net.FaceNet`` through ``OwnFaceRestorer``): faces read at 128 px and brought back to 512, pasted as GFPGAN's are, with blind
codes; where its file is missing, faces go ``faithful``, said once."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from archive_restore.cli import cli
from archive_restore.faces.restore import OwnFaceRestorer
from archive_restore.nets import save_checkpoint
from archive_restore.nets.face_net import FaceNet
from archive_restore.weights.folders import MODEL_FILES


def _face_net(brighten: float = 0.0, features: int = 4) -> FaceNet:
    """A tiny FaceNet whose last convolution is zero: it gives its input back, plus ``brighten``."""
    torch.manual_seed(0)
    net = FaceNet(features=features, depth=2)
    torch.nn.init.zeros_(net.out.weight)
    torch.nn.init.constant_(net.out.bias, brighten)
    return net.eval()


@pytest.fixture
def ours(tmp_path) -> Path:
    folder = tmp_path / "ours"
    folder.mkdir()
    save_checkpoint(_face_net(brighten=0.15), folder / MODEL_FILES["face_net"])
    return folder


@pytest.fixture(autouse=True)
def no_user_models(tmp_path, monkeypatch):
    monkeypatch.delenv("ARCHIVE_RESTORE_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_faces_are_read_at_128_and_come_back_at_512_blended_by_fidelity():
    faces = np.random.default_rng(0).random((3, 200, 200, 3), dtype=np.float32)
    restorer = OwnFaceRestorer(_face_net(), Path("face_net.safetensors"), torch.device("cpu"), batch=2)
    out = restorer.restore(faces)
    x = F.interpolate(torch.from_numpy(faces).permute(0, 3, 1, 2), size=(128, 128), mode="area")
    expected = F.interpolate(x, size=(512, 512), mode="bicubic", align_corners=False).clamp(0, 1)
    np.testing.assert_allclose(out, expected.permute(0, 2, 3, 1).numpy(), atol=1e-5)
    half = restorer.restore(faces, fidelity=0.5)
    assert 0 < np.abs(half - out).mean() < np.abs(out - restorer.restore(faces, fidelity=1.0)).mean()
    assert restorer.name == "face_net" and restorer.restore([]).shape == (0, 512, 512, 3)


def test_a_face_and_its_mirror_image_are_restored_alike_the_network_seeing_both():
    """Self-ensemble: the network runs on the face and on its mirror image (mirrored back), and the two are
    averaged (bench faces: +0.07 dB at x4, +0.06 at x8); so a mirrored face comes back as the mirrored result."""
    torch.manual_seed(1)
    net = FaceNet(features=4, depth=2).eval()
    restorer = OwnFaceRestorer(net, Path("face_net.safetensors"), torch.device("cpu"))
    face = np.random.default_rng(1).random((1, 128, 128, 3), dtype=np.float32)
    out = restorer.restore(face)
    np.testing.assert_allclose(restorer.restore(face[:, :, ::-1]), out[:, :, ::-1], atol=1e-5)
    x = torch.from_numpy(face).permute(0, 3, 1, 2)
    with torch.no_grad():
        mean = ((net(x) + net(x.flip(3)).flip(3)) / 2).clamp(0, 1)
    expected = F.interpolate(mean, size=(512, 512), mode="bicubic", align_corners=False).clamp(0, 1)
    np.testing.assert_allclose(out, expected.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def _run(args, jobs, expect=0):
    result = CliRunner().invoke(cli, [str(a) for a in args] + ["--jobs-dir", str(jobs)])
    assert result.exit_code == expect, result.output
    return result


def _items(result, jobs: Path) -> tuple[dict, dict[str, dict]]:
    job_id = result.stdout.split()[1].rstrip(":")
    status = json.loads(_run(["status", job_id, "--json"], jobs).stdout)
    return status, {i["key"]: i for i in status["items"]}


def test_a_photo_job_with_our_restorer_pastes_its_faces_and_reads_blind_codes(tmp_path, tiny_models, ours, face_rgb):
    inp, jobs = tmp_path / "in", tmp_path / "jobs"
    inp.mkdir()
    Image.fromarray(face_rgb).save(inp / "a.png")
    common = ["--face-detector", "haar", "--scale", "2", "--models-dir", tiny_models, "--models-dir", ours]
    result = _run(["run", inp, "-o", tmp_path / "ours", *common, "--faces-without-restorer", "ours"], jobs)
    assert result.stderr.count("no GFPGAN") == 1 and "restored by our own small face restorer" in result.stderr
    status, items = _items(result, jobs)
    assert status["job"]["options"]["faces_without_restorer"] == "ours"  # recorded, CondSR alone or not
    item = items["a.png"]
    assert item["code_source"] == "faces" and item["extra"]["face_codes"] == "blind"
    assert item["extra"]["faces_restored"] == item["faces"] >= 1 and item["extra"]["face_restorer"] == "face_net"
    plain = _run(["run", inp, "-o", tmp_path / "plain", *common, "--faces-without-restorer", "as-is"], jobs)
    status, plain_items = _items(plain, jobs)
    assert "faces_without_restorer" not in status["job"]["options"]  # CondSR alone: as-is changes nothing
    assert "faces_restored" not in plain_items["a.png"]["extra"]
    got, base = (np.asarray(Image.open(tmp_path / d / "a.png"), np.float32) / 255 for d in ("ours", "plain"))
    changed = np.abs(got - base).max(axis=2) > 0.05
    assert 0.01 < changed.mean() < 0.6  # the brightened face is pasted on the face, not everywhere


def test_without_its_file_faces_go_faithful_and_the_job_says_so_once(tmp_path, tiny_models, face_rgb, monkeypatch):
    from archive_restore.weights import folders

    monkeypatch.setattr(folders, "REPO_MODELS", tmp_path / "no-models")  # the shipped face_net out of reach
    inp = tmp_path / "in"
    inp.mkdir()
    Image.fromarray(face_rgb).save(inp / "a.png")
    result = _run(["run", inp, "-o", tmp_path / "out", "--face-detector", "haar", "--faces-without-restorer", "ours",
                   "--models-dir", tiny_models], tmp_path / "jobs")
    assert result.stderr.count("no face restorer") == 1
    assert "face_net.safetensors is in no models folder either: faces are pulled towards CondSR" in result.stderr
    _, items = _items(result, tmp_path / "jobs")
    assert "faces_restored" not in items["a.png"]["extra"]


def test_bench_faces_measures_the_restorers_against_the_enlarged_face(tmp_path, ours):
    from archive_restore.bench.faces import measure_faces

    faces = tmp_path / "faces"
    faces.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).resize((256, 256)).save(faces / f"{i}.png")

    class Unchanged:
        def restore(self, lq):
            return np.stack(lq)

    rows = {(r.method, r.shrink): r for r in measure_faces(faces, {"same": Unchanged()}, seed=1, repeats=2)}
    assert set(rows) == {(m, s) for m in ("bicubic", "same") for s in (4, 8)}
    assert all(r.faces == 4 for r in rows.values())
    for shrink in (4, 8):  # a restorer that gives the enlarged face back scores as bicubic does
        assert (rows["same", shrink].psnr, rows["same", shrink].ssim) == (rows["bicubic", shrink].psnr,
                                                                          rows["bicubic", shrink].ssim)
        assert 5 < rows["bicubic", shrink].psnr < 40
    result = CliRunner().invoke(cli, ["bench", "faces", "--faces", str(faces), "--repeats", "1",
                                      "--models-dir", str(ours), "--json", str(tmp_path / "f.json")])
    assert result.exit_code == 0, result.output
    said = json.loads((tmp_path / "f.json").read_text())["faces"]
    assert [(r["method"], r["shrink"]) for r in said] == [("bicubic", 4), ("ours", 4), ("bicubic", 8), ("ours", 8)]
    assert "| ours | x8 | 2 |" in result.output


def test_our_restorer_finds_the_small_faces_it_is_made_for(tmp_path, tiny_models, ours):
    """A face of 28 pixels, below what Haar finds in the photo itself: looked for on the photo enlarged (as
    ``faithful`` looks), found and restored."""
    skimage_data = pytest.importorskip("skimage.data")
    import cv2

    from archive_restore.faces import make_detector

    small = cv2.resize(skimage_data.astronaut(), (130, 130), interpolation=cv2.INTER_AREA)
    assert make_detector("haar").detect(small.astype(np.float32) / 255) == []  # not in the photo itself
    inp = tmp_path / "in"
    inp.mkdir()
    Image.fromarray(small).save(inp / "small.png")
    result = _run(["run", inp, "-o", tmp_path / "out", "--face-detector", "haar", "--scale", "2",
                   "--faces-without-restorer", "ours", "--models-dir", tiny_models, "--models-dir", ours], tmp_path / "jobs")
    _, items = _items(result, tmp_path / "jobs")
    assert items["small.png"]["faces"] == items["small.png"]["extra"]["faces_restored"] == 1
