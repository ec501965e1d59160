"""NIQE (archive_restore/quality/niqe.py), its shipped pristine model and `archive-restore bench niqe`."""
import json
import math

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from archive_restore.bench.niqe import bicubic_x4
from archive_restore.cli import cli
from archive_restore.errors import InputError
from archive_restore.quality.niqe import (
    MIN_SIDE, N_FEATURES, PATCH, fit_aggd, fit_ggd, fit_pristine, half_bicubic, load_pristine, niqe, patch_features,
)


def scene(size: int = 384, seed: int = 0, leaves: int = 300) -> np.ndarray:
    """A seeded synthetic photo (float RGB in [0, 1]): the dead-leaves model of natural images (opaque
    discs of random colour, power-law radii) with a 1/f texture and a touch of optical blur."""
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(size)
    k = np.hypot(f[:, None], f[None, :])
    k[0, 0] = 1
    texture = np.real(np.fft.ifft2((rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))) / k))
    texture = (texture - texture.mean()) / texture.std()
    img = np.zeros((size, size, 3), np.float32)
    radii = np.minimum(5 * (1 + rng.pareto(1.5, leaves)), size / 2)
    for r in sorted(radii, reverse=True):
        cx, cy = rng.integers(0, size, 2)
        cv2.circle(img, (int(cx), int(cy)), int(r), tuple(float(c) for c in 0.15 + 0.7 * rng.random(3)), -1)
    img = cv2.GaussianBlur(img * (1 + 0.15 * texture[..., None]).astype(np.float32), (0, 0), 0.7)
    return np.clip(img, 0, 1)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return scene()


def test_blur_raises_niqe(photo):
    sharp = niqe(photo)
    blurred = niqe(cv2.GaussianBlur(photo, (0, 0), 1.5))
    very_blurred = niqe(cv2.GaussianBlur(photo, (0, 0), 3.0))
    assert sharp < blurred < very_blurred


def test_noise_raises_niqe(photo):
    noisy = np.clip(photo + np.random.default_rng(1).normal(0, 0.1, photo.shape), 0, 1)
    assert niqe(photo) < niqe(noisy)


def test_real_hq_photo_beats_its_bicubic_x4_and_its_noisy_copy(shared_data):
    from archive_restore.media.folders import image_files, load_rgb

    files = image_files(shared_data / "eval" / "hq_natural")
    if not files:
        pytest.skip(f"no images in {shared_data / 'eval' / 'hq_natural'}")
    hq = load_rgb(files[0])
    noisy = np.clip(hq / 255 + np.random.default_rng(0).normal(0, 0.05, hq.shape), 0, 1)
    assert niqe(hq) < niqe(bicubic_x4(hq))
    assert niqe(hq) < niqe(noisy)


def test_shipped_model_has_the_right_shapes_and_provenance():
    model = load_pristine()
    assert model.mu.shape == (N_FEATURES,) and model.cov.shape == (N_FEATURES, N_FEATURES)
    assert np.array_equal(model.cov, model.cov.T)
    assert np.linalg.eigvalsh(model.cov).min() > 0
    p = model.provenance
    assert p["images"] > 500 and p["patches"] > 1000 and p["patch_size"] == PATCH and p["sharpness_threshold"] == 0.75
    assert p["folder"].endswith("train/hq_natural") and "--fit" in p["command"]


def test_fit_save_load_round_trip(tmp_path, photo):
    model = fit_pristine([scene(192, seed=s) for s in range(4)])
    loaded = load_pristine(model.save(tmp_path / "model.json"))
    assert np.array_equal(loaded.mu, model.mu) and np.array_equal(loaded.cov, model.cov)
    assert loaded.provenance == json.loads(json.dumps(model.provenance))
    assert niqe(photo, loaded) == niqe(photo, model)
    assert niqe(photo, loaded) != niqe(photo)  # the model passed in is the one used


def test_fit_keeps_only_the_sharp_patches():
    rng = np.random.default_rng(0)
    img = np.full((2 * PATCH, 4 * PATCH), 0.5)
    img[:, : 2 * PATCH] = rng.uniform(0.2, 0.8, (2 * PATCH, 2 * PATCH))  # left: 4 equally sharp patches
    img[:, 2 * PATCH :] += np.linspace(0, 0.05, 2 * PATCH)  # right: 4 nearly flat ones
    model = fit_pristine([img])
    features, sharpness = patch_features(img)
    left = np.tile([True, True, False, False], 2)
    assert sharpness[left].min() > 0.75 * sharpness.max() > sharpness[~left].max()
    assert model.provenance["patches"] == 4
    assert np.allclose(model.mu, features[left].mean(axis=0))


def test_too_small_image_raises_with_the_minimum_size():
    small = np.random.default_rng(0).random((MIN_SIDE - 1, 300, 3))
    with pytest.raises(InputError, match=f"at least {MIN_SIDE}x{MIN_SIDE}"):
        niqe(small)
    assert math.isfinite(niqe(np.random.default_rng(0).random((MIN_SIDE, MIN_SIDE, 3))))


def test_flat_areas_are_left_out_not_averaged(photo):
    half_flat = photo.copy()
    half_flat[2 * PATCH :] = 0.5  # the bottom half: the last row of four patches is wholly flat
    features, _ = patch_features(half_flat)
    assert np.isnan(features[-4:]).all() and np.isfinite(features[:8]).all()
    usable = features[np.isfinite(features).all(axis=1)]
    assert niqe(half_flat) == load_pristine().distance(usable) and math.isfinite(niqe(half_flat))
    with pytest.raises(InputError, match="texture"):
        niqe(np.full((200, 200, 3), 0.3))


def test_ggd_and_aggd_fits_recover_known_distributions(rng):
    laplace, gauss = rng.laplace(0, 1, (1, 200_000)), rng.normal(0, 0.5, (1, 200_000))
    shape, var = fit_ggd(np.concatenate([laplace, gauss]))
    assert shape == pytest.approx([1.0, 2.0], abs=0.05) and var == pytest.approx([2.0, 0.25], rel=0.03)
    # a split Gaussian, sigma 1 on the left and 2 on the right: an AGGD of shape 2 (left mass 1/3)
    split = np.abs(rng.normal(0, 1, (1, 200_000))) * np.where(rng.random((1, 200_000)) < 1 / 3, -1, 2)
    shape, mean, left, right = fit_aggd(split)
    assert shape[0] == pytest.approx(2.0, abs=0.05)
    assert left[0] == pytest.approx(1.0, rel=0.03) and right[0] == pytest.approx(4.0, rel=0.03)
    assert mean[0] == pytest.approx(np.sqrt(2 / np.pi), rel=0.05)  # (sigma_r - sigma_l) sqrt(2 / pi)


def test_half_bicubic_samples_between_pixel_pairs():
    rows, cols = np.mgrid[0:32, 0:64].astype(np.float64)
    half = half_bicubic(3 * rows + cols)
    assert half.shape == (16, 32)
    i, j = np.mgrid[0:16, 0:32]  # MATLAB imresize(.., 0.5): output (i, j) sits at input (2i + 0.5, 2j + 0.5)
    assert np.allclose(half[2:-2, 2:-2], (3 * (2 * i + 0.5) + (2 * j + 0.5))[2:-2, 2:-2])
    assert np.allclose(half_bicubic(np.full((8, 8), 7.0)), 7.0)


def test_grey_and_uint8_inputs_score_like_their_rgb_float_forms(photo):
    grey = (photo.mean(axis=2) * 255).round().astype(np.uint8)
    assert niqe(grey) == pytest.approx(niqe(np.repeat(grey[..., None], 3, axis=2) / 255.0), abs=1e-9)
    assert niqe(grey[..., None]) == niqe(grey)


def _write(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor((img * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR))


def test_bench_niqe_prints_a_line_per_folder_and_writes_json(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a / "one.png", scene(192, seed=1))
    _write(a / "sub" / "two.png", scene(256, seed=2))
    _write(b / "three.png", scene(192, seed=3))
    _write(b / "tiny.png", scene(64, seed=4))
    out = tmp_path / "niqe.json"
    result = CliRunner().invoke(cli, ["bench", "niqe", str(a), str(b), "--json", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if ": NIQE " in line]
    assert [line.split(":")[0] for line in lines] == [str(a), str(b)]
    assert "over 2 images" in lines[0] and "over 1 images" in lines[1] and "1 too small" in lines[1]
    data = json.loads(out.read_text())
    folder_a, folder_b = data["folders"]
    expected = np.mean([niqe(cv2.imread(str(p))[..., ::-1]) for p in (a / "one.png", a / "sub" / "two.png")])
    assert folder_a["images"] == 2 and folder_a["mean"] == pytest.approx(expected)
    assert set(folder_a["per_image"]) == {"one.png", "sub/two.png"}
    assert folder_b["skipped"] == {"too small": 1} and folder_b["images"] == 1


def test_bench_niqe_scores_the_photos_enlarged_by_bicubic_and_by_an_upscaler(tmp_path):
    """--upscale gives the baselines for a restored folder: each photo enlarged x4 by bicubic and by an
    upscaler alone (here a random-weight SRVGG in the official layout), scored beside the photo."""
    import torch
    from spandrel.architectures.Compact import Compact

    from archive_restore.bench.niqe import upscale_view

    _write(tmp_path / "a" / "one.png", scene(96, seed=1))
    torch.manual_seed(0)
    up = tmp_path / "tiny-x4.pth"
    torch.save({"params": Compact(num_feat=8, num_conv=2, upscale=4).state_dict()}, up)
    out = tmp_path / "niqe.json"
    result = CliRunner().invoke(cli, ["bench", "niqe", str(tmp_path / "a"), "--upscale", "bicubic", "--upscale",
                                      str(up), "--json", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "x4 bicubic" in result.output and "x4 tiny-x4" in result.output
    views = json.loads(out.read_text())["folders"][0]["views"]
    photo = cv2.imread(str(tmp_path / "a" / "one.png"))[..., ::-1]
    for label in ("x4 bicubic", "x4 tiny-x4"):
        name, view = upscale_view("bicubic" if label == "x4 bicubic" else str(up))
        enlarged = view(photo)
        assert name == label and enlarged.shape == (384, 384, 3)
        assert views[label]["per_image"]["one.png"] == pytest.approx(niqe(enlarged))
    assert views["x4 bicubic"]["mean"] != pytest.approx(views["x4 tiny-x4"]["mean"])


def test_bench_niqe_fit_writes_a_model_that_loads(tmp_path):
    for s in range(3):
        _write(tmp_path / "hq" / f"{s}.png", scene(192, seed=s))
    out = tmp_path / "m.json"
    result = CliRunner().invoke(cli, ["bench", "niqe", "--fit", str(tmp_path / "hq"), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    model = load_pristine(out)
    assert model.provenance["images"] == 3
    assert model.provenance["command"].startswith("archive-restore bench niqe --fit")
    usage = CliRunner().invoke(cli, ["bench", "niqe"])
    assert usage.exit_code == 2 and "folders" in usage.output
