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

import direct_render
from archive_restore.cli import cli
from archive_restore.codes import paired_face_code
from archive_restore.errors import CheckpointError, UsageError
from archive_restore.faces import align_face, feather_mask
from archive_restore.faces.align import AlignedFace, crop_to_image_matrix
from archive_restore.faces.compose import compose_face, is_gray, match_colour, picture_face, ring_weights, to_gray
from archive_restore.faces.detect import Face, make_detector
from archive_restore.faces.parse import missing_notice as parse_missing_notice
from archive_restore.faces.restore import FaceRestorer, blend, find_gfpgan, load_face_restorer
from archive_restore.weights.folders import MODEL_FILES
from archive_restore.nets import load_checkpoint
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
    assert not is_gray(rgb) and is_gray(to_gray(rgb)) and is_gray(rgb[:, :, :1]) and is_gray(rgb[:, :, 0])
    assert is_gray(np.zeros((0, 0, 3), np.float32))  # nothing to disagree
    level = np.zeros((1, 1, 3))
    level[0, 0, 1] = 1 / 255  # channels one 8-bit level apart still count as gray; two do not
    assert is_gray(level) and not is_gray(level * 2)
    luma = 0.299 * rgb[:, :, 0] + 0.587 * rgb[:, :, 1] + 0.114 * rgb[:, :, 2]  # Rec. 601
    for image in (rgb, rgb.astype(np.float64)):
        gray = to_gray(image)
        assert gray.shape == (8, 8, 3) and gray.dtype == np.float32
        np.testing.assert_allclose(gray, np.repeat(luma[:, :, None], 3, axis=2), rtol=0, atol=1e-6)


def test_the_ring_is_where_the_mask_is_strictly_between_5_and_95_percent():
    mask = np.array([[0.0, 0.05, 0.0501, 0.5, 0.9499, 0.95, 1.0]], np.float32)
    ring = ring_weights(mask)
    assert ring.dtype == np.float32 and ring.tolist() == [[0, 0, 1, 1, 1, 0, 0]]


def _lab_stats(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lab = cv2.cvtColor(np.float32(rgb), cv2.COLOR_RGB2LAB).reshape(-1, 3)
    return lab.mean(0), lab.std(0)


def test_colour_matching_moves_each_lab_channels_mean_and_contrast_within_limits():
    rng = np.random.default_rng(3)
    noise = lambda: rng.uniform(-1, 1, (32, 32, 3))  # noqa: E731
    everywhere = np.ones((32, 32), np.float32)
    face, picture = 0.4 + 0.1 * noise(), 0.5 + 0.15 * noise()  # the picture ~1.5 times the face's contrast
    mean, std = _lab_stats(match_colour(face, picture, everywhere))
    want_mean, want_std = _lab_stats(picture)
    # nothing clipped here: only the Lab -> RGB -> Lab round trip is left (measured 0.086 and 0.007)
    np.testing.assert_allclose(mean, want_mean, atol=0.3)
    np.testing.assert_allclose(std, want_std, atol=0.05)
    flat = 0.5 + 0.02 * noise()  # 10 times less contrast than the picture: at most doubled (measured 0.15 % off)
    np.testing.assert_allclose(_lab_stats(match_colour(flat, picture, everywhere))[1], 2 * _lab_stats(flat)[1],
                               rtol=0.01)
    gray = lambda: np.repeat(rng.uniform(-1, 1, (32, 32, 1)), 3, axis=2)  # noqa: E731
    faint, soft = 0.5 + 0.006 * gray(), 0.5 + 0.01 * gray()  # lightness std 0.344 and 0.575 Lab units
    # a face of under one unit of contrast still takes the picture's (measured 0.564 for 0.575)
    assert _lab_stats(match_colour(faint, soft, everywhere))[1][0] == pytest.approx(_lab_stats(soft)[1][0], abs=0.03)
    for level, bound in ((0.85, 1.0), (0.15, 0.0)):  # contrast pushed past white or black is clipped there
        matched = match_colour(face, np.clip(level + 0.3 * noise(), 0, 1), everywhere)
        assert matched.min() >= 0 and matched.max() <= 1 and (matched == bound).any()


def test_colour_matching_needs_16_pixels_of_ring_and_takes_any_float():
    rng = np.random.default_rng(2)
    face, picture = rng.random((8, 8, 3)), rng.random((8, 8, 3)) * 0.5
    weights = np.zeros((8, 8), np.float32)
    weights[:2] = 1  # 16 pixels: enough to measure
    matched = match_colour(face, picture, weights)  # float64 in: converted, not refused
    assert matched.dtype == np.float32 and not np.allclose(matched, face, atol=1e-3)
    weights[1, 7] = 0  # 15: too few, the face is left as it is
    assert match_colour(face, picture, weights) is face


def test_the_pictures_own_face_is_read_where_the_face_was_found(face_rgb):
    """``picture_face`` cuts the face out of the restored picture as ``align_face`` cut it out of the
    LQ image: the same crop (up to the inverted matrix's rounding) at x1, and at x2 from the picture
    enlarged twice (up to the enlargement's resampling); beyond the picture's edge, mirrored as there."""
    lq = face_rgb.astype(np.float32) / 255
    (face,) = [f for f in make_detector("haar").detect(lq) if min(f.width, f.height) >= 16]
    aligned = align_face(lq, face, 512)
    assert np.array_equal(picture_face(lq, aligned, 512, 1.0), aligned.crop)  # measured: not even rounding
    twice = cv2.resize(lq, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    # measured 0.004 (the x2 picture is resampled); 0.24 when read as if it were x1
    assert np.abs(picture_face(twice, aligned, 512, 2.0) - aligned.crop).mean() < 0.02
    # the face at the top left corner (Haar's box 54-85 x 20-51 moved to 6-37 x 4-35): the crop reaches
    # beyond the picture, where both mirror it (a black border would be 0.85 off)
    corner = np.ascontiguousarray(lq[16:, 48:])
    x0, y0, x1, y1 = face.box
    aligned = align_face(corner, Face((x0 - 48, y0 - 16, x1 - 48, y1 - 16), face.score, None, "haar"), 512)
    assert np.array_equal(picture_face(corner, aligned, 512, 1.0), aligned.crop)


# ------------------------------------------------------------------------------------ photo job

def _run(args: list, jobs: Path, expect: int = 0):
    result = CliRunner().invoke(cli, [str(a) for a in args] + ["--jobs-dir", str(jobs)], catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


def _items(result, jobs: Path) -> tuple[dict, dict[str, dict]]:
    job_id = result.stdout.split()[1].rstrip(":")
    status = json.loads(_run(["status", job_id, "--json"], jobs).stdout)
    return status, {i["key"]: i for i in status["items"]}


def _stand_in_faces(rgb: np.ndarray) -> list[tuple[AlignedFace, np.ndarray]]:
    """The faces the job finds (Haar, at least ``min_face`` pixels) aligned as it aligns them, each
    with what the stand-in restorer makes of it: the crop brightened by 0.1 (a dirac convolution
    plus 0.2 in [-1, 1]), clipped, and kept as float16 between the analysis and the render."""
    faces = [f for f in make_detector("haar").detect(rgb) if min(f.width, f.height) >= EngineOptions().min_face]
    aligned = [align_face(rgb, f, 512) for f in faces]
    return [(a, np.clip(a.crop + 0.1, 0, 1).astype(np.float16).astype(np.float32)) for a in aligned]


def _paste_area(aligned: AlignedFace, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Where the feathered ellipse of one face reaches in the picture (> 0), warped as the paste warps it."""
    mask = feather_mask(512, "ellipse")
    return cv2.warpAffine(mask, crop_to_image_matrix(aligned, 512, scale), (shape[1], shape[0]), flags=cv2.INTER_LINEAR)


def test_photo_job_with_a_restorer_uses_paired_codes_and_pastes_faces(tmp_path, conditioned_models, stand_in,
                                                                      face_rgb):
    inp, jobs = tmp_path / "in", tmp_path / "jobs"
    inp.mkdir()
    Image.fromarray(face_rgb).save(inp / "colour.png")
    Image.fromarray(face_rgb).convert("L").save(inp / "gray.png")
    models = ["--models-dir", conditioned_models, "--models-dir", stand_in]
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

    # The paired code is DegEncoder's on (the LQ face, the stand-in's face), read at the face's scale.
    rgb = direct_render.pixels(inp / "colour.png")
    faces = _stand_in_faces(rgb)
    assert len(faces) == items["colour.png"]["faces"] == items["colour.png"]["extra"]["faces_restored"] == 1
    (aligned, restored), = faces
    encoder = load_checkpoint(conditioned_models / MODEL_FILES["deg_encoder"]).model
    lq_face, hq_face = (torch.from_numpy(x).permute(2, 0, 1)[None] for x in (aligned.crop, restored))
    paired = paired_face_code(encoder, lq_face, hq_face, aligned.source_pixels)[0].numpy()
    # the analysis reads the code from the float32 face, this from the float16 one: measured 5e-6 apart
    np.testing.assert_allclose(items["colour.png"]["code"], paired, rtol=0, atol=2e-5)

    # The picture is CondSR with that code and the stand-in's face pasted in: outside the feathered
    # ellipse, exactly the render without a face restorer (with the same code); inside, the face the
    # stand-in made, colour-matched to the picture and blended in as the mask says.
    code = items["colour.png"]["code"]
    base = direct_render.condsr(conditioned_models, rgb, code, 2)
    got = direct_render.pixels(tmp_path / "out" / "colour.png")
    area = _paste_area(aligned, got.shape[:2], 2.0)
    assert 0.02 < (area > 0).mean() < 0.6  # the face is part of the picture, not all of it
    assert np.abs(got - base)[area <= 0].max() <= direct_render.EIGHT_BIT
    expected = compose_face(base, restored, aligned, scale=2.0)
    assert np.abs(got - expected).max() <= direct_render.EIGHT_BIT
    inside = area > 0.5
    assert np.abs(got - base)[inside].mean() > 10 / 255  # the pasted face shows (measured: 27.9 levels)
    # Without a face restorer nothing is pasted: CondSR with the blind code, everywhere.
    none = direct_render.condsr(conditioned_models, rgb, plain_items["colour.png"]["code"], 2)
    assert np.abs(direct_render.pixels(tmp_path / "plain" / "colour.png") - none).max() <= direct_render.EIGHT_BIT


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
    from archive_restore.jobs.store import JobStore

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
    # kept (float16) or restored again (rounded to float16 as well): the same photo, to the byte
    assert np.array_equal(outputs[0], outputs[1])


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
