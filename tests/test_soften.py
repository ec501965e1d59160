"""Faces without a face restorer, pulled towards the faithful branch (``pipeline.soften``,
``faces_without_restorer``): the face moves towards CondSR's picture, the rest stays as the stack made it,
``as-is`` changes nothing, and jobs recorded before the option keep rendering as they did."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from spandrel.architectures.Compact import Compact

from archive_restore.cli import cli
from archive_restore.jobs.store import JobStore
from archive_restore.pipeline import soften
from archive_restore.pipeline.engine import Engine, EngineOptions
from archive_restore.pipeline.photo import PhotoJobOptions
from archive_restore.pipeline.video import VideoJobOptions

torch.set_num_threads(1)


@pytest.fixture
def upscaler(tmp_path) -> Path:
    """A random-weight SRVGGNetCompact x4 in the official .pth layout: it invents texture, as the real one."""
    torch.manual_seed(3)
    path = tmp_path / "tiny-x4.pth"
    torch.save({"params": Compact(num_feat=8, num_conv=2, upscale=4).state_dict()}, path)
    return path


def _engine(models: Path, upscaler: Path, **options) -> Engine:
    return Engine(EngineOptions(scale=4, device="cpu", face_detector="haar", models_dirs=(models,),
                                face_restorer="none", upscaler=str(upscaler), **options))


def _face_box(engine: Engine, rgb: np.ndarray) -> tuple[int, int, int, int]:
    (face,) = soften.find_faces(engine.detector, rgb, engine.options.min_face)
    return tuple(round(v * engine.options.scale) for v in face.box)


def test_without_a_restorer_the_face_moves_towards_the_faithful_picture(tiny_models, upscaler, face_rgb):
    engine = _engine(tiny_models, upscaler)
    assert engine.restorer is None and engine.softens
    rgb = face_rgb.astype(np.float32) / 255.0
    code = engine.image_blind_code(rgb)
    picture = engine.restore(rgb, code)
    kept = picture.copy()
    out, softened = engine.paste_faces(rgb, picture, code=code)
    assert softened == 1
    assert np.array_equal(picture, kept)  # the caller's picture is left as it is (the temporal steadier holds it)

    faithful = engine.faithful_picture(rgb, code)
    x0, y0, x1, y1 = _face_box(engine, rgb)
    w, h = x1 - x0, y1 - y0
    centre = (slice(y0 + h // 4, y1 - h // 4), slice(x0 + w // 4, x1 - w // 4))
    before = np.abs(picture[centre] - faithful[centre]).mean()
    after = np.abs(out[centre] - faithful[centre]).mean()
    # the face centre (the oval's full weight) is STRENGTH of the way to the faithful picture
    assert before > 0.01 and after == pytest.approx((1 - soften.STRENGTH) * before, rel=0.05)

    far = np.ones(out.shape[:2], bool)  # further than the face's own size from its box: as the stack made it
    far[max(0, y0 - h):y1 + h, max(0, x0 - w):x1 + w] = False
    assert far.any() and np.array_equal(out[far], picture[far])

    # an 8-bit picture (a photo rendered straight to 8 bits, a video frame): the same, rounded, in uint8
    eight = np.round(picture * 255).astype(np.uint8)
    out8, _ = engine.paste_faces(face_rgb, eight, code=code)
    assert out8.dtype == np.uint8 and np.array_equal(out8[far], eight[far])
    assert np.abs(out8.astype(np.float32) / 255 - np.round(out * 255) / 255)[centre].max() <= 1.5 / 255


def test_as_is_or_without_a_code_or_a_face_nothing_changes(tiny_models, upscaler, face_rgb):
    rgb = face_rgb.astype(np.float32) / 255.0
    engine = _engine(tiny_models, upscaler, faces_without_restorer="as-is")
    code = engine.image_blind_code(rgb)
    picture = engine.restore(rgb, code)
    assert not engine.softens
    assert engine.paste_faces(rgb, picture, code=code) == (picture, 0)

    engine = _engine(tiny_models, upscaler)
    assert engine.paste_faces(rgb, picture) == (picture, 0)  # no code: unchanged (a caller that does not soften)
    blank = np.full((24, 32, 3), 0.5, np.float32)
    still = engine.restore(blank, code)
    assert engine.paste_faces(blank, still, code=code) == (still, 0)  # no face: the picture itself, no copy


def test_condsr_alone_is_its_own_faithful_picture(tiny_models, face_rgb):
    engine = Engine(EngineOptions(scale=4, device="cpu", face_detector="haar", models_dirs=(tiny_models,),
                                  face_restorer="none"))
    assert not engine.softens


def test_the_option_is_in_the_identity_of_new_jobs_only(upscaler):
    for kind in (PhotoJobOptions, VideoJobOptions):
        new = kind(upscaler=str(upscaler), upscaler_sha256="0" * 64)
        assert new.faces_without_restorer == "faithful"
        assert new.identity()["faces_without_restorer"] == "faithful"
        assert kind.from_identity(new.identity()) == new  # a new job resumes as it started
        old = {k: v for k, v in new.identity().items() if k != "faces_without_restorer"}  # recorded before it
        resumed = kind.from_identity(old)
        assert resumed.faces_without_restorer == "as-is" and resumed.identity() == old  # the same job, the same bytes
        ours = kind(upscaler=str(upscaler), upscaler_sha256="0" * 64, faces_without_restorer="ours")
        assert kind.from_identity(ours.identity()) == ours
        # CondSR alone: faithful and as-is change nothing (not recorded: the identity of jobs before), ours does
        assert "faces_without_restorer" not in kind().identity()
        assert kind.from_identity(kind().identity()) == kind()
        assert "faces_without_restorer" not in kind(faces_without_restorer="as-is").identity()
        assert kind(faces_without_restorer="ours").identity()["faces_without_restorer"] == "ours"
        assert kind.from_identity(kind(faces_without_restorer="ours").identity()) == kind(faces_without_restorer="ours")
        assert "faces_without_restorer" not in kind(upscaler=str(upscaler), face_restorer="gfpgan").identity()


def test_a_photo_job_records_the_faces_it_softened(tmp_path, tiny_models, upscaler, face_rgb):
    scans = tmp_path / "scans"
    scans.mkdir()
    cv2.imwrite(str(scans / "face.png"), cv2.cvtColor(face_rgb, cv2.COLOR_RGB2BGR))
    jobs, out = tmp_path / "jobs", tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(scans), "-o", str(out), "--face-detector", "haar",
                                      "--face-restorer", "none", "--upscaler", str(upscaler),
                                      "--faces-without-restorer", "faithful",
                                      "--jobs-dir", str(jobs), "--models-dir", str(tiny_models)])
    assert result.exit_code == 0, result.output
    with JobStore.open(jobs) as store:
        (job,) = store.jobs()
        (item,) = store.items(job.id)
    assert job.options["faces_without_restorer"] == "faithful"
    assert item.extra["faces_softened"] == 1 and "paste_error" not in item.extra


def test_faces_without_restorer_as_is_from_the_command_line_leaves_faces_as_the_upscaler_made_them(
        tmp_path, tiny_models, upscaler, face_rgb):
    scans = tmp_path / "scans"
    scans.mkdir()
    cv2.imwrite(str(scans / "face.png"), cv2.cvtColor(face_rgb, cv2.COLOR_RGB2BGR))
    jobs, outputs = tmp_path / "jobs", {}
    for choice in ("faithful", "as-is"):
        outputs[choice] = tmp_path / choice
        result = CliRunner().invoke(cli, ["run", str(scans), "-o", str(outputs[choice]), "--face-detector", "haar",
                                          "--face-restorer", "none", "--upscaler", str(upscaler),
                                          "--faces-without-restorer", choice, "--jobs-dir", str(jobs),
                                          "--models-dir", str(tiny_models)])
        assert result.exit_code == 0, result.output
    with JobStore.open(jobs) as store:
        items = {j.output: store.items(j.id)[0] for j in store.jobs()}
        assert len(items) == 2  # two jobs: the choice is in the identity
    assert items[str(outputs["as-is"])].extra.get("faces_softened", 0) == 0
    assert items[str(outputs["faithful"])].extra["faces_softened"] == 1
    assert (outputs["as-is"] / "face.png").read_bytes() != (outputs["faithful"] / "face.png").read_bytes()
