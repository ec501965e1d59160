"""The face restorer (GFPGAN through spandrel), paste-back with colour matching, and the photo job
with and without it.

A randomly initialised GFPGANv1Clean state dict is saved exactly as the official file is laid out
(``{'params_ema': state_dict}`` under the name GFPGANv1.4.pth) and loaded through the real code
once per module; it runs a single forward pass (on one face: it is slow on a CPU). The photo-job
tests swap in a tiny stand-in network with GFPGAN's calling convention so that they stay fast.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from archive_restore.cli import cli
from archive_restore.errors import CheckpointError, UsageError
from archive_restore.faces import align_face, feather_mask
from archive_restore.faces.align import AlignedFace
from archive_restore.faces.compose import compose_face, is_gray, match_colour, ring_weights, to_gray
from archive_restore.faces.detect import Face
from archive_restore.faces.parse import missing_notice as parse_missing_notice
from archive_restore.faces.restore import FaceRestorer, blend, find_gfpgan, load_face_restorer
from archive_restore.pipeline import engine as engine_module
from archive_restore.pipeline import face_cache
from archive_restore.pipeline.engine import Engine, EngineOptions, RestoredFaces

torch.set_num_threads(1)
SHARED = Path(__file__).resolve().parents[2] / "shared"


# ------------------------------------------------------------------------------------ fixtures

class StandIn(torch.nn.Module):
    """GFPGAN's calling convention ([-1, 1] in, (image, rgbs) out) with one 3x3 convolution."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        torch.nn.init.dirac_(self.conv.weight)
        self.conv.bias.data.fill_(0.2)  # brightens: the pasted face is visible

    def forward(self, x, return_rgb=False, randomize_noise=False):
        return self.conv(x).clamp(-1, 1), []


@pytest.fixture
def stand_in(tmp_path, monkeypatch) -> Path:
    """A models folder with a placeholder GFPGANv1.4.pth that the engine 'loads' as the stand-in."""
    folder = tmp_path / "restorer"
    folder.mkdir()
    (folder / "GFPGANv1.4.pth").write_bytes(b"placeholder")
    monkeypatch.setattr(engine_module, "load_face_restorer",
                        lambda path, device: FaceRestorer(StandIn().eval(), Path(path), torch.device(device)))
    return folder


@pytest.fixture(autouse=True)
def no_user_models(tmp_path, monkeypatch):
    """Only the folders a test names are searched (not a real ~/.cache/archive-restore)."""
    monkeypatch.delenv("ARCHIVE_RESTORE_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


# --------------------------------------------------------------------------- GFPGAN via spandrel

def test_random_gfpgan_in_the_official_layout_loads_and_restores_a_face(gfpgan_dir, tiny_models, face_rgb):
    from spandrel.architectures.GFPGAN import GFPGAN

    assert set(torch.load(gfpgan_dir / "GFPGANv1.4.pth", weights_only=True)) == {"params_ema"}
    assert find_gfpgan([gfpgan_dir]) == gfpgan_dir / "GFPGANv1.4.pth"
    engine = Engine(EngineOptions(scale=1, device="cpu", face_detector="haar", models_dirs=(tiny_models, gfpgan_dir)))
    assert isinstance(engine.restorer.model, GFPGAN) and engine.restorer.name == "GFPGANv1.4"
    assert engine.notices == [parse_missing_notice()]  # a restorer but no parsing model: said once

    aligned = engine.usable_faces(face_rgb.astype(np.float32) / 255)[:1]
    assert aligned, "Haar found no face in the test photo"
    restored = engine.restored_faces([aligned[0].crop])  # the one GFPGAN forward pass of the suite
    assert restored.shape == (1, 512, 512, 3) and restored.dtype == np.float32
    assert np.isfinite(restored).all() and restored.min() >= 0 and restored.max() <= 1
    assert restored.std() > 0.01  # not a constant image
    code, source = engine.encode_faces(aligned, restored=restored)
    assert source == "paired" and code.shape == (1, engine.code_dim) and np.isfinite(code).all()


def test_gfpgan_v14_is_preferred_to_v13(tmp_path):
    older, newer = tmp_path / "a", tmp_path / "b"
    older.mkdir(), newer.mkdir()
    (older / "GFPGANv1.3.pth").write_bytes(b"x")
    assert find_gfpgan([older, newer]) == older / "GFPGANv1.3.pth"
    (newer / "GFPGANv1.4.pth").write_bytes(b"x")
    assert find_gfpgan([older, newer]) == newer / "GFPGANv1.4.pth"
    assert find_gfpgan([tmp_path]) is None


class _Hostile:
    """Unpickling this would create a file: the loader must refuse it without running it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_loading_never_runs_code_from_the_file_and_names_what_it_found(tmp_path):
    hostile, marker = tmp_path / "GFPGANv1.4.pth", tmp_path / "pwned"
    torch.save({"params_ema": _Hostile(marker)}, hostile)
    with pytest.raises(CheckpointError, match="forbidden"):
        load_face_restorer(hostile)
    assert not marker.exists()

    other = tmp_path / "other.pth"
    torch.save({"params_ema": torch.nn.Linear(2, 2).state_dict()}, other)
    with pytest.raises(CheckpointError, match="not a model spandrel recognises"):
        load_face_restorer(other)
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_face_restorer(tmp_path / "empty.pth")


def test_fidelity_blends_restored_and_input_faces():
    restored, lq = np.ones((1, 4, 4, 3), np.float32), np.zeros((1, 4, 4, 3), np.float32)
    assert np.array_equal(blend(restored, lq, 0.0), restored) and np.array_equal(blend(restored, lq, 1.0), lq)
    np.testing.assert_allclose(blend(restored, lq, 0.25), 0.75)
    with pytest.raises(UsageError, match="between 0 and 1"):
        blend(restored, lq, 1.5)


def test_the_restorer_batches_and_resizes_faces():
    restorer = FaceRestorer(StandIn().eval(), Path("GFPGANv1.4.pth"), torch.device("cpu"), batch=2)
    faces = np.full((3, 128, 128, 3), 0.5, np.float32)
    out = restorer.restore(faces)
    assert out.shape == (3, 512, 512, 3)
    np.testing.assert_allclose(out, 0.6, atol=1e-5)  # 0.5 -> [-1, 1] -> +0.2 -> back: 0.6
    np.testing.assert_allclose(restorer.restore(faces, fidelity=0.5), 0.55, atol=1e-5)
    assert restorer.restore([]).shape == (0, 512, 512, 3)


# ---------------------------------------------------------------------------------- paste-back

def _centre_face(size: int = 128) -> AlignedFace:
    """A face whose landmarks put the 512 template in the middle of a ``size`` square image."""
    from archive_restore.faces.align import FFHQ_TEMPLATE_512

    marks = FFHQ_TEMPLATE_512 * (size / 2 / 512) + size / 4
    image = np.zeros((size, size, 3), np.float32)
    return align_face(image, Face((size / 4, size / 4, 3 * size / 4, 3 * size / 4), 1.0, marks, "test"), 512)


def test_colour_matching_moves_the_ring_statistics_to_the_picture():
    rng = np.random.default_rng(0)
    face = np.clip(rng.normal([0.7, 0.3, 0.3], 0.05, (512, 512, 3)), 0, 1).astype(np.float32)
    picture = np.clip(rng.normal([0.4, 0.5, 0.6], 0.08, (512, 512, 3)), 0, 1).astype(np.float32)
    ring = ring_weights(feather_mask(512, "ellipse"))
    assert 0 < ring.mean() < 0.5
    matched = match_colour(face, picture, ring)
    lab = [cv2.cvtColor(x, cv2.COLOR_RGB2LAB)[ring > 0] for x in (matched, picture, face)]
    assert np.abs(lab[0].mean(0) - lab[1].mean(0)).max() < 1.0 < np.abs(lab[2].mean(0) - lab[1].mean(0)).max()


def test_compose_pastes_inside_the_oval_only_keeps_gray_gray_and_honours_fidelity():
    aligned = _centre_face(128)
    picture = np.full((256, 256, 3), 0.3, np.float32)  # the x2 restored picture, gray
    face = np.zeros((512, 512, 3), np.float32)
    face[:, :, 0] = 0.9  # a red face, with texture: a gradient across it
    face[:, :, 1] = np.linspace(0.1, 0.6, 512)[None, :]

    out = compose_face(picture, face, aligned, scale=2.0, gray=True)
    assert is_gray(out) and out.shape == picture.shape
    assert np.array_equal(out[:40], picture[:40]) and np.array_equal(out[:, :40], picture[:, :40])
    centre = out[118:138, 100:156, 0]
    assert np.ptp(out[128, 90:166, 0]) > 0.02  # the face's texture arrived
    assert abs(float(centre.mean()) - 0.3) < 0.05  # brought to the picture's level by colour matching

    kept = compose_face(picture, face, aligned, scale=2.0, fidelity=1.0)
    np.testing.assert_allclose(kept, picture, atol=1e-5)
    coloured = compose_face(picture, face, aligned, scale=2.0)
    assert not is_gray(coloured)


def test_to_gray_and_is_gray():
    rgb = np.random.default_rng(1).random((8, 8, 3)).astype(np.float32)
    assert not is_gray(rgb) and is_gray(to_gray(rgb)) and is_gray(rgb[:, :, :1])


# ------------------------------------------------------------------------------------ photo job

def _run(args: list, jobs: Path, expect: int = 0):
    result = CliRunner().invoke(cli, [str(a) for a in args] + ["--jobs-dir", str(jobs)], catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


def _items(result, jobs: Path) -> tuple[dict, dict[str, dict]]:
    job_id = result.stdout.split()[1].rstrip(":")
    status = json.loads(_run(["status", job_id, "--json"], jobs).stdout)
    return status, {i["key"]: i for i in status["items"]}


def test_photo_job_with_a_restorer_uses_paired_codes_and_pastes_faces(tmp_path, tiny_models, stand_in, face_rgb):
    inp, jobs = tmp_path / "in", tmp_path / "jobs"
    inp.mkdir()
    Image.fromarray(face_rgb).save(inp / "colour.png")
    Image.fromarray(face_rgb).convert("L").save(inp / "gray.png")
    models = ["--models-dir", tiny_models, "--models-dir", stand_in]
    common = ["--face-detector", "haar", "--scale", "2", *models]

    result = _run(["run", inp, "-o", tmp_path / "out", *common], jobs)
    assert "no face restorer" not in result.stderr
    _, items = _items(result, jobs)
    for key in ("colour.png", "gray.png"):
        item = items[key]
        assert item["status"] == "done" and item["code_source"] == "faces", item
        assert item["extra"]["face_codes"] == "paired"
        assert item["extra"]["faces_restored"] >= 1 and item["extra"]["face_restorer"] == "GFPGANv1.4"
    gray_out = Image.open(tmp_path / "out" / "gray.png")
    assert gray_out.mode == "L"

    plain = _run(["run", inp, "-o", tmp_path / "plain", *common, "--face-restorer", "none"], jobs)
    status, plain_items = _items(plain, jobs)
    assert status["job"]["options"]["face_restorer"] == "none"
    assert plain_items["colour.png"]["extra"]["face_codes"] == "blind"
    assert "faces_restored" not in plain_items["colour.png"]["extra"]
    assert items["colour.png"]["code"] != plain_items["colour.png"]["code"]


def test_without_gfpgan_the_job_says_so_once_and_falls_back(tmp_path, tiny_models, face_rgb):
    inp, jobs = tmp_path / "in", tmp_path / "jobs"
    inp.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(face_rgb).save(inp / name)
    result = _run(["run", inp, "-o", tmp_path / "out", "--face-detector", "haar", "--scale", "1",
                   "--models-dir", tiny_models], jobs)
    assert result.stderr.count("no face restorer") == 1
    assert "GFPGANv1.4.pth" in result.stderr and "archive-restore models fetch gfpgan-v1.4" in result.stderr
    assert "blind encoder" in result.stderr
    status, items = _items(result, jobs)
    assert "face_restorer" not in status["job"]["options"]  # the default keeps earlier jobs' identity
    assert {i["extra"].get("face_codes") for i in items.values()} == {"blind"}

    required = _run(["run", inp, "-o", tmp_path / "out2", "--face-detector", "haar", "--face-restorer", "gfpgan",
                     "--models-dir", tiny_models], jobs, expect=1)
    assert "error: --face-restorer gfpgan: GFPGANv1.4.pth" in required.stderr and "Traceback" not in required.output
    quiet = _run(["run", inp, "-o", tmp_path / "out3", "--face-detector", "haar", "--scale", "1",
                  "--face-restorer", "none", "--models-dir", tiny_models], jobs)
    assert "no face restorer" not in quiet.stderr


def test_a_paste_failure_costs_the_photo_its_pasted_faces_not_its_result(tmp_path, tiny_models, stand_in, face_rgb,
                                                                          monkeypatch):
    def boom(self, lq, picture, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(Engine, "paste_faces", boom)
    inp, jobs = tmp_path / "in", tmp_path / "jobs"
    inp.mkdir()
    Image.fromarray(face_rgb).save(inp / "face.png")
    result = _run(["run", inp, "-o", tmp_path / "out", "--face-detector", "haar", "--scale", "1",
                   "--models-dir", tiny_models, "--models-dir", stand_in], jobs)
    _, items = _items(result, jobs)
    assert items["face.png"]["status"] == "done" and (tmp_path / "out" / "face.png").is_file()
    assert items["face.png"]["extra"]["paste_error"] == "RuntimeError: boom"


def test_each_face_is_restored_once_the_render_pastes_what_the_analysis_kept(tmp_path, tiny_models, stand_in,
                                                                             face_rgb, monkeypatch):
    from archive_restore.pipeline.photo import PhotoJob, PhotoJobOptions, open_photo_job
    from archive_restore.store import JobStore

    restored: list[int] = []  # faces per call of the restorer
    original = FaceRestorer.restore
    monkeypatch.setattr(FaceRestorer, "restore", lambda self, faces, fidelity=0.0: (
        restored.append(len(faces)), original(self, faces, fidelity))[1])
    inp = tmp_path / "in"
    inp.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(face_rgb).save(inp / name)
    options = PhotoJobOptions(scale=1, face_detector="haar", device="cpu", models_dirs=(tiny_models, stand_in))
    with JobStore.open(tmp_path / "jobs") as store:
        first = open_photo_job(store, inp, tmp_path / "out", options, progress=False)
        first.prepare(first.job)  # the analysis, then a crash before any render
        faces = {i.key: i.faces for i in store.items(first.job.id)}
        assert faces["a.png"] >= 1 and sum(restored) == sum(faces.values()) and len(restored) == 2
        kept = {key: face_cache.cache_path(store.job_dir(first.job.id), key) for key in faces}
        assert all(path.is_file() for path in kept.values())
        kept["b.png"].unlink()  # lost: b's faces are restored again, correctly, in its render

        restored.clear()
        summary = PhotoJob(store, first.job, options, progress=False).run()  # the rerun: a new engine
        assert summary.done == 2
        items = {i.key: i for i in store.items(first.job.id)}
        assert restored == [faces["b.png"]]
        assert items["a.png"].extra["faces_from"] == "analysis" and items["b.png"].extra["faces_from"] == "render"
        assert items["a.png"].extra["faces_restored"] == faces["a.png"]
        assert not any(path.exists() for path in kept.values())  # removed once the photo is written
    outputs = [np.asarray(Image.open(tmp_path / "out" / n), np.float32) for n in ("a.png", "b.png")]
    assert np.abs(outputs[0] - outputs[1]).max() <= 1  # kept or restored again: the same photo


def test_kept_faces_are_used_only_for_what_they_were_made_from(tmp_path):
    faces = (Face((1.0, 2.0, 30.0, 40.0), 0.9, None, "haar"),
             Face((5.0, 5.0, 25.0, 25.0), 0.8, np.arange(10, dtype=np.float32).reshape(5, 2), "yunet"))
    crops = np.random.default_rng(0).random((2, 512, 512, 3)).astype(np.float32)
    path, made_from = tmp_path / "faces" / "x.npz", {"key": "a.png", "size": 10, "mtime_ns": 1}
    face_cache.save(path, RestoredFaces(faces, crops), made_from)
    back = face_cache.load(path, made_from)
    assert [f.box for f in back.faces] == [f.box for f in faces] and back.faces[0].landmarks is None
    np.testing.assert_array_equal(back.faces[1].landmarks, faces[1].landmarks)
    assert [f.detector for f in back.faces] == ["haar", "yunet"]
    np.testing.assert_allclose(back.crops, crops, atol=1e-3)
    assert face_cache.load(path, {**made_from, "mtime_ns": 2}) is None  # the photo changed since
    path.write_bytes(b"not a numpy file")
    assert face_cache.load(path, made_from) is None
