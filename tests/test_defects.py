"""Damage in photos (``pipeline.defects`` with the shipped detector): a scratch on a small picture is found
and filled, a clean picture comes back unchanged, only what is found changes, and ``run --defects on``
repairs before anything reads the photo, records it, and keeps the choice in the job's identity."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from archive_restore.cli import cli
from archive_restore.degrade.defects import print_damage
from archive_restore.jobs.store import JobStore
from archive_restore.pipeline.defects import DefectRepair, inpaint
from archive_restore.pipeline.photo import PhotoJobOptions

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture(scope="module")
def repair() -> DefectRepair:
    if not (MODELS / "defects.safetensors").is_file():
        pytest.skip("models/defects.safetensors is not in this checkout")
    return DefectRepair.load([MODELS])


def _picture(size: int = 128) -> np.ndarray:
    """A smooth picture: two gradients and a soft disc."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    rgb = np.stack([0.3 + 0.4 * x, 0.35 + 0.3 * y, 0.5 - 0.2 * x * y], -1)
    disc = ((x - 0.6) ** 2 + (y - 0.4) ** 2) < 0.04
    rgb[disc] *= 0.7
    return cv2.GaussianBlur(rgb, (0, 0), 1.0)


def _scratched(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = rgb.copy()
    line = np.zeros(rgb.shape[:2], np.uint8)
    cv2.line(line, (10, 20), (110, 100), 1, 2, cv2.LINE_AA)
    out[line.astype(bool)] = 0.95
    return out, line.astype(bool)


def test_a_scratch_on_a_small_picture_is_found_and_filled(repair):
    clean = _picture()
    scratched, truth = _scratched(clean)
    fixed, mask = repair.repair(scratched)
    assert mask[truth].mean() > 0.8, mask[truth].mean()
    assert mask.mean() < 3 * truth.mean()
    assert np.abs(fixed[truth] - clean[truth]).mean() < np.abs(scratched[truth] - clean[truth]).mean() / 4
    assert np.array_equal(fixed[~mask], scratched[~mask])


def test_a_clean_picture_comes_back_unchanged(repair):
    clean = _picture()
    fixed, mask = repair.repair(clean)
    assert not mask.any() and fixed is clean


def test_synthetic_damage_is_mostly_found(repair):
    clean = _picture(160)
    damaged, truth = print_damage(clean, np.random.default_rng(5), 2.0)
    mask = repair.mask(damaged)
    assert truth.any() and mask[truth].mean() > 0.6


def test_inpainting_changes_only_the_mask():
    rgb = np.random.default_rng(0).random((40, 50, 3)).astype(np.float32)
    mask = np.zeros((40, 50), bool)
    mask[10:14, 5:45] = True
    out = inpaint(rgb, mask)
    assert np.array_equal(out[~mask], rgb[~mask]) and not np.array_equal(out[mask], rgb[mask])


def test_the_choice_is_in_the_identity_and_survives_resume():
    assert "defects" not in PhotoJobOptions().identity()
    on = PhotoJobOptions(defects="on")
    assert on.identity()["defects"] == "on"
    assert PhotoJobOptions.from_identity(on.identity()).defects == "on"


def test_run_with_defects_on_repairs_and_records_it(tmp_path, tiny_models, repair):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    shutil.copy(MODELS / "defects.safetensors", models / "defects.safetensors")
    scans = tmp_path / "scans"
    scans.mkdir()
    scratched, _ = _scratched(_picture())
    cv2.imwrite(str(scans / "a.png"), cv2.cvtColor((scratched * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(scans / "b.png"), cv2.cvtColor((_picture() * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR))
    jobs = tmp_path / "jobs"
    result = CliRunner().invoke(cli, ["run", str(scans), "--scale", "1", "--face-detector", "haar", "--defects", "on",
                                      "--models-dir", str(models), "--jobs-dir", str(jobs)])
    assert result.exit_code == 0, result.output
    with JobStore.open(jobs) as store:
        (job,) = store.jobs()
        items = {i.key: i for i in store.items(job.id)}
    assert job.options["defects"] == "on"
    assert items["a.png"].extra["defect_percent"] > 0.5 and items["b.png"].extra["defect_percent"] == 0
    status = CliRunner().invoke(cli, ["status", job.id, "--jobs-dir", str(jobs)])
    assert "damage repaired on" in status.output
    page = CliRunner().invoke(cli, ["report", job.id, "-o", str(tmp_path / "page"), "--quiet", "--jobs-dir", str(jobs)])
    assert page.exit_code == 0, page.output
    assert "scratches, cracks and dust repaired on" in (tmp_path / "page" / "index.html").read_text()


def test_run_with_defects_on_and_no_detector_stops_before_any_work(tmp_path, tiny_models, monkeypatch):
    from archive_restore.weights import folders

    monkeypatch.setattr(folders, "REPO_MODELS", tmp_path / "no-models")
    monkeypatch.delenv("ARCHIVE_RESTORE_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    scans = tmp_path / "scans"
    scans.mkdir()
    cv2.imwrite(str(scans / "a.png"), np.zeros((32, 32, 3), np.uint8))
    result = CliRunner().invoke(cli, ["run", str(scans), "--scale", "1", "--defects", "on", "--models-dir",
                                      str(tiny_models), "--jobs-dir", str(tmp_path / "jobs")])
    assert result.exit_code != 0 and "defects.safetensors" in result.output
    assert not (tmp_path / "jobs").exists() or not list((tmp_path / "jobs").glob("*/"))


def test_inpainting_fills_from_the_surroundings_within_the_pictures_range():
    """OpenCV's float inpainting gave -1.0 to 1.6 on a 0.2/0.5 picture: the fill must stay between what is
    around it."""
    rgb = np.full((40, 50, 3), 0.5, np.float32)
    rgb[:, :25] = 0.2
    mask = np.zeros((40, 50), bool)
    mask[10:14, 5:45] = True
    out = inpaint(rgb, mask)
    assert out.min() >= 0.2 - 1e-3 and out.max() <= 0.5 + 1e-3
    assert np.allclose(out[12, 5:20], 0.2, atol=0.01) and np.allclose(out[12, 30:45], 0.5, atol=0.01)
