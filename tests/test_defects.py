"""Damage in photos (``pipeline.defects`` with the shipped detector): a scratch on a small picture is found
and filled, a clean picture comes back unchanged, only what is found changes, and ``run --defects on``
repairs before anything reads the photo, records it, and keeps the choice in the job's identity."""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from archive_restore.cli import cli
from archive_restore.degrade.defects import print_damage
from archive_restore.jobs.store import JobStore
from archive_restore.media.image import read_image
from archive_restore.pipeline.defects import GROW, MIN_AREA, DefectRepair, inpaint, mask_file, tidy_mask
from archive_restore.pipeline.photo import PhotoJobOptions
from archive_restore.report.pictures import overlay_rgba

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


# ------------------------------------------------------------------------- the mask kept for the report
@pytest.fixture
def repaired_job(tmp_path, tiny_models, repair):
    """``run --defects on`` over a scratched photo (``a.png``) and a clean one (``b.png``), at scale 1 so that
    the report's slider pictures are the input's size: (jobs folder, job, items by key)."""
    import shutil

    root = tmp_path
    models = root / "models"
    shutil.copytree(tiny_models, models)
    shutil.copy(MODELS / "defects.safetensors", models / "defects.safetensors")
    scans, jobs = root / "scans", root / "jobs"
    scans.mkdir()
    scratched, _ = _scratched(_picture())
    cv2.imwrite(str(scans / "a.png"), cv2.cvtColor((scratched * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(scans / "b.png"), cv2.cvtColor((_picture() * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR))
    result = CliRunner().invoke(cli, ["run", str(scans), "--scale", "1", "--face-detector", "haar", "--defects", "on",
                                      "--models-dir", str(models), "--jobs-dir", str(jobs)])
    assert result.exit_code == 0, result.output
    with JobStore.open(jobs) as store:
        (job,) = store.jobs()
        items = {i.key: i for i in store.items(job.id)}
    return jobs, job, items


def _report(jobs: Path, job_id: str) -> Path:
    page = jobs.parent / "page"
    result = CliRunner().invoke(cli, ["report", job_id, "-o", str(page), "--quiet", "--jobs-dir", str(jobs)])
    assert result.exit_code == 0, result.output
    return page / "index.html"


def _card(index: Path, key: str) -> str:
    return re.search(rf'<article class="card" data-key="{re.escape(key)}".*?</article>', index.read_text(),
                     re.DOTALL).group(0)


def test_the_repair_mask_is_kept_for_a_damaged_photo_and_not_for_a_clean_one(repaired_job, repair):
    jobs, job, items = repaired_job
    folder = jobs / job.id
    kept = items["a.png"].extra["defect_mask"]
    assert kept == mask_file("a.png") and (folder / kept).is_file()
    stored = np.asarray(Image.open(folder / kept).convert("L")) > 0
    photo = read_image(Path(job.input) / "a.png").pixels
    assert stored.shape == photo.shape[:2]  # the input's resolution
    assert np.array_equal(stored, repair.mask(photo))  # what the render filled
    assert items["b.png"].extra["defect_mask"] is None and not (folder / mask_file("b.png")).exists()


def test_the_report_overlays_the_mask_on_a_repaired_photos_slider_and_nowhere_else(repaired_job):
    jobs, job, items = repaired_job
    index = _report(jobs, job.id)
    card = _card(index, "a.png")
    assert 'class="show-repairs" type="checkbox"' in card and "show repairs" in card
    overlay = re.search(r'<img class="repairs" src="([^"]*)"', card).group(1)
    before = re.search(r'<img class="before" src="([^"]*)"', card).group(1)
    with Image.open(index.parent / overlay) as o, Image.open(index.parent / before) as b:
        assert o.mode == "RGBA" and o.size == b.size
        alpha = np.asarray(o)[..., 3]
    mask = np.asarray(Image.open(jobs / job.id / items["a.png"].extra["defect_mask"]).convert("L")) > 0
    assert mask.any() and np.array_equal(alpha > 0, mask)  # scale 1: the slider is the input's size
    clean = _card(index, "b.png")  # nothing repaired: no toggle, no overlay
    assert 'class="compare"' in clean and "show-repairs" not in clean and 'class="repairs"' not in clean


def test_the_overlay_marks_every_masked_pixel_when_reduced():
    mask = np.zeros((400, 600), bool)
    mask[100, 50:550] = True  # a scratch one pixel wide: a quarter of a pixel at a quarter of the size
    rgba = overlay_rgba(mask, (150, 100))
    assert rgba.shape == (100, 150, 4)
    marked = rgba[..., 3] > 0
    assert marked[25, 13:137].all() and marked.sum() <= 2 * 125


def test_damage_kinds_draws_what_print_damage_draws_and_labels_every_damaged_pixel():
    from archive_restore.degrade.defects import KINDS, damage_kinds

    clean = _picture(160)
    damaged, mask = print_damage(clean, np.random.default_rng(3), 3.0)
    same, same_mask, labels = damage_kinds(clean, np.random.default_rng(3), 3.0)
    assert np.array_equal(damaged, same) and np.array_equal(mask, same_mask)
    assert np.array_equal(labels > 0, mask) and labels.max() <= len(KINDS)
    assert len(np.unique(labels[mask])) >= 2  # several kinds drawn at this amount


def test_bench_defects_photos_says_how_each_kind_of_mark_is_found(tmp_path, repair):
    from archive_restore.bench.defects import format_photos, measure_photos
    from archive_restore.degrade.defects import KINDS

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray((_picture(160) * 255).astype(np.uint8)).save(photos / f"{i}.png")
    figures = measure_photos(photos, [MODELS], max_images=3, seed=1, side=160)
    assert set(figures.by_kind) <= set(KINDS) and len(figures.by_kind) >= 2
    assert sum(k["share"] for k in figures.by_kind.values()) == pytest.approx(1.0, abs=1e-3)
    assert all(0 <= k["recall"] <= 1 for k in figures.by_kind.values())
    text = format_photos(figures)
    assert all(f"  {kind}" in text for kind in figures.by_kind)


def test_the_detector_flags_at_its_files_own_threshold(tmp_path):
    """A detector file's header may carry the threshold its figures were measured at; without one, 0.5; a caller's
    (bench defects --threshold) wins. The mask is what the threshold says."""
    import torch

    from archive_restore.nets import save_checkpoint
    from archive_restore.nets.defects import DefectNet

    torch.manual_seed(0)
    net = DefectNet(8, depth=2)
    for name, info in (("plain", None), ("strict", {"threshold": 0.9})):
        save_checkpoint(net, tmp_path / name / "defects.safetensors", info)
    plain, strict = (DefectRepair.load([tmp_path / name]) for name in ("plain", "strict"))
    assert (plain.threshold, strict.threshold, DefectRepair.load([tmp_path / "strict"], threshold=0.3).threshold) == (
        0.5, 0.9, 0.3)


def test_the_mask_is_where_the_probability_reaches_the_threshold():
    import torch

    class Brightness(torch.nn.Module):  # a "detector" whose probability rises with the luma
        def forward(self, luma):
            return (luma - 0.5) * 20

    picture = _picture(64)
    masks = {t: DefectRepair(Brightness(), threshold=t).mask(picture) for t in (0.5, 0.9)}
    assert 0 < masks[0.9].sum() < masks[0.5].sum()
    p = DefectRepair(Brightness()).probability(picture)
    assert np.array_equal(masks[0.9], tidy_mask(p >= 0.9, MIN_AREA, GROW))
