"""`make demo` on a few tiny photos: the scan folder is built, the real photo job runs on it through
the command line's code path, and the table has a finite row per photo."""
import math

import numpy as np
import pytest

from archive_restore import demo
from archive_restore.errors import ModelNotFoundError


def _samples() -> list[demo.Sample]:
    from skimage import data

    return [
        demo.Sample("family/astronaut.png", lambda: data.astronaut()[:96, 160:256], top=0.0),
        demo.Sample("places/camera.png", lambda: data.camera()[100:164, 200:280]),  # gray, not square
    ]


def test_demo_builds_scans_runs_the_job_and_measures(tmp_path, tiny_models):
    root = tmp_path / "demo"
    rows = demo.run_demo(root, [tiny_models], samples=_samples(), seed=0)

    assert [r.key for r in rows] == ["family/astronaut.png", "places/camera.png"]
    for r in rows:
        assert math.isfinite(r.scan_psnr) and math.isfinite(r.restored_psnr)
        # the scans (24 x 24 and 20 x 16 px) are too small for Haar to find a face in: no face, folder
        # or job code, each scan's blind code
        assert (r.code_source, r.faces) == ("blind", 0)
        assert (root / "scans" / r.key).is_file() and (root / "originals" / r.key).is_file()
        assert (root / "restored" / r.key).is_file()  # the folder structure is mirrored
    hq = demo.read_rgb(root / "originals" / "places" / "camera.png")
    lq = demo.read_rgb(root / "scans" / "places" / "camera.png")
    assert hq.shape[:2] == (64, 80) and lq.shape[:2] == (16, 20)

    table = demo.format_table(rows)
    assert table.count("\n") == len(rows) + 2  # header, a row per photo, average, legend
    assert "average" in table and "NIQE" in table
    assert all(r.upscaler_psnr is None for r in rows)  # no upscaler file here: CondSR alone, no column to fill
    assert (root / "sheet.png").is_file()

    again = demo.run_demo(root, [tiny_models], samples=_samples(), seed=0)  # resumes: nothing to redo
    assert again == rows
    (root / "restored" / "places" / "camera.png").unlink()  # a deleted output: the job starts again
    assert demo.run_demo(root, [tiny_models], samples=_samples(), seed=0) == rows


def test_demo_scans_are_seeded(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    demo.build_scans(one, _samples(), seed=3)
    demo.build_scans(two, _samples(), seed=3)
    for key in ("family/astronaut.png", "places/camera.png"):
        assert (one / "scans" / key).read_bytes() == (two / "scans" / key).read_bytes()


def test_demo_without_models_says_how_to_get_them(tmp_path):
    with pytest.raises(ModelNotFoundError, match="archive-restore train all"):
        demo.run_demo(tmp_path / "demo", [tmp_path / "no-models"], samples=_samples())
    assert not (tmp_path / "demo").exists()  # nothing built before the check


def test_crop_keeps_sides_a_multiple_of_the_scale():
    img = np.zeros((427, 301, 3), np.uint8)
    assert demo.crop_hq(img).shape == (384, 300, 3)


def test_demo_with_an_upscaler_compares_it_alone_and_writes_the_sheet(tmp_path, tiny_models):
    """With an upscaler present (here a tiny random SRVGG under an official name, which ``auto`` picks),
    the job runs the stack, and the table and the sheet show the upscaler alone beside it."""
    import shutil

    import cv2
    import torch
    from spandrel.architectures.Compact import Compact

    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    torch.manual_seed(0)
    torch.save({"params": Compact(num_feat=8, num_conv=2, upscale=4).state_dict()}, models / "realesr-general-x4v3.pth")
    root = tmp_path / "demo"
    samples = [demo.Sample("places/camera.png", lambda: __import__("skimage.data").data.camera()[100:164, 200:280])]
    (row,) = demo.run_demo(root, [models], samples=samples, seed=0)
    assert row.upscaler_psnr is not None and math.isfinite(row.upscaler_psnr)
    assert row.restored_psnr != row.upscaler_psnr  # the stack is not the upscaler alone
    sheet = cv2.imread(str(root / "sheet.png"))
    assert sheet.shape[:2] == (64 + 8, 4 * 80 + 5 * 4)  # bicubic | upscaler | restored | original, 4 px gaps
    job, _ = demo.demo_job(root)
    assert job.options["upscaler"].endswith("realesr-general-x4v3.pth")
