"""Tests of the degradation model (archive_restore.degrade): determinism, serialisation, shapes,
what each stage claims to do, and the parameter vector. Small synthetic images, seeded: fast."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from archive_restore.degrade import (
    PARAM_DIM, PARAM_NAMES, AnisotropicBlur, ColorCast, DefocusBlur, Degradation, DustScratches,
    Fade, FilmGrain, GaussianBlur, GaussianNoise, Halftone, Interlace, JpegCompression, MotionBlur,
    PoissonNoise, Resize, VideoCodec, jpeg_encode,
)
from archive_restore.degrade.blur import _fft_filter, anisotropic_kernel
from archive_restore.errors import InputError


def natural(h: int = 96, w: int = 96, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A float32 test image with smooth shading, an edge and fine texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w)
    tint = np.array([1.0, 0.8, 0.6][:channels], np.float32)
    img = 0.5 + 0.25 * np.sin(6 * x + 3 * y)[:, :, None] * tint
    img[h // 4: h // 2, w // 3: 2 * w // 3] += 0.2
    texture = cv2.GaussianBlur(rng.random((h, w, channels), dtype=np.float32), (0, 0), 0.7)
    img = img + 0.5 * (texture.reshape(h, w, channels) - 0.5)
    return np.clip(img, 0, 1).astype(np.float32)


def flat(value: float, size: int = 128, channels: int = 3) -> np.ndarray:
    return np.full((size, size, channels), value, np.float32)


def laplacian_var(img: np.ndarray) -> float:
    return float(cv2.Laplacian(np.ascontiguousarray(img), cv2.CV_32F).var())


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


SAMPLED = [Degradation.sample(rng(s), scale=(1, 2, 4)[s % 3]) for s in range(30)]


# -- the chain ---------------------------------------------------------------------------------
def test_same_degradation_same_output_every_call():
    img = natural()
    for deg in SAMPLED[:10]:
        np.testing.assert_array_equal(deg.apply(img), deg.apply(img))


def test_one_degradation_on_two_images_keeps_its_parameters():
    face, scene = natural(64, 64, seed=1), natural(96, 128, seed=2)
    deg = Degradation.sample(rng(7), scale=4, severity="heavy")
    before, vec = deg.to_dict(), deg.params_vector()
    first = deg.apply(face)
    deg.apply(scene)
    assert deg.to_dict() == before
    np.testing.assert_array_equal(deg.params_vector(), vec)
    np.testing.assert_array_equal(deg.apply(face), first)
    assert face.std() > 0  # inputs untouched
    np.testing.assert_array_equal(face, natural(64, 64, seed=1))


def test_json_round_trip_gives_identical_output():
    img = natural()
    for deg in SAMPLED:
        restored = Degradation.from_dict(json.loads(json.dumps(deg.to_dict())))
        assert restored == deg
        np.testing.assert_array_equal(restored.apply(img), deg.apply(img))


@pytest.mark.parametrize("layout", ["gray2d", "gray1", "rgb"])
@pytest.mark.parametrize("hw", [(37, 53), (64, 64), (21, 8)])
def test_shapes_dtype_range(layout, hw):
    h, w = hw
    channels = 3 if layout == "rgb" else 1
    img = natural(h, w, channels)
    if layout == "gray2d":
        img = img[:, :, 0]
    for deg in SAMPLED[:12]:
        out = deg.apply(img)
        expected = (h // deg.scale, w // deg.scale) + img.shape[2:]
        assert out.shape == expected
        assert out.dtype == np.float32
        assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0


def test_downscale_lands_on_exact_size_through_intermediate_sizes():
    for s in range(40):
        deg = Degradation.sample(rng(s), scale=4, severity="heavy")  # always two resizes
        assert sum(isinstance(st, Resize) for st in deg.stages) == 2
        assert deg.apply(natural(61, 45)).shape == (15, 11, 3)


def test_identity_is_a_plain_bicubic_shrink():
    img = natural(64, 48)
    out = Degradation.identity(scale=4).apply(img)
    np.testing.assert_allclose(out, np.clip(cv2.resize(img, (12, 16), interpolation=cv2.INTER_CUBIC), 0, 1))
    np.testing.assert_array_equal(Degradation.identity(scale=1).apply(img), img)


def test_bad_inputs_are_refused():
    deg = Degradation.identity(4)
    with pytest.raises(InputError):
        deg.apply(np.zeros((8, 8, 4), np.float32))
    with pytest.raises(InputError):
        deg.apply(np.zeros((3, 8, 3), np.float32))  # smaller than the scale
    with pytest.raises(InputError):
        deg.apply(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError):
        Degradation((Resize(2.0),), scale=4)  # resizes do not add up to the scale
    with pytest.raises(ValueError):
        Degradation.from_dict({"scale": 1, "seed": 0, "stages": [{"kind": "warp_drive"}]})


# -- the stages --------------------------------------------------------------------------------
def test_gaussian_noise_std_matches_parameter():
    for color in (True, False):
        out = GaussianNoise(0.05, color).apply(flat(0.5), rng())
        assert abs(out.std() - 0.05) < 0.05 * 0.15
        same_in_all_channels = np.allclose(out[:, :, 0], out[:, :, 2])
        assert same_in_all_channels is (not color)


def test_poisson_noise_grows_with_intensity():
    stage = PoissonNoise(peak=200.0)
    mid = stage.apply(flat(0.5), rng()).std()
    assert abs(mid - stage.mid_grey_std()) < 0.15 * stage.mid_grey_std()
    assert stage.apply(flat(0.1), rng()).std() < 0.6 * mid


def _neighbour_correlation(noise: np.ndarray) -> float:
    a, b = noise[:, :-1].ravel(), noise[:, 1:].ravel()
    return float(np.corrcoef(a, b)[0, 1])


def test_film_grain_is_correlated_and_strongest_in_mid_tones():
    grain = FilmGrain(strength=0.05, size=1.5)
    mid = grain.apply(flat(0.5), rng())[:, :, 0] - 0.5
    assert _neighbour_correlation(mid) > 0.5
    white = GaussianNoise(0.05).apply(flat(0.5), rng())[:, :, 0] - 0.5
    assert abs(_neighbour_correlation(white)) < 0.05
    assert abs(mid.std() - 0.05) < 0.05 * 0.15
    dark = grain.apply(flat(0.05), rng())[:, :, 0] - 0.05
    assert dark.std() < 0.5 * mid.std()
    coarse = FilmGrain(strength=0.05, size=3.0).apply(flat(0.5), rng())[:, :, 0] - 0.5  # coarse grid path
    assert _neighbour_correlation(coarse) > _neighbour_correlation(mid)


def test_lower_jpeg_quality_gives_fewer_bytes_and_larger_error():
    img = natural(64, 64)
    assert len(jpeg_encode(img, 30)) < len(jpeg_encode(img, 90))
    err = {q: np.abs(JpegCompression(q).apply(img, rng()) - img).mean() for q in (30, 90)}
    assert err[30] > err[90] > 0
    gray = natural(64, 64, channels=1)
    assert JpegCompression(50).apply(gray, rng()).shape == gray.shape


def test_video_codec_error_grows_with_quantiser_step():
    img = natural(64, 64)
    errs = [np.abs(VideoCodec(q, 16).apply(img, rng()) - img).mean() for q in (0.02, 0.15)]
    assert 0 < errs[0] < errs[1]
    assert VideoCodec(0.1, 8).apply(natural(30, 22, 1), rng()).shape == (30, 22, 1)


@pytest.mark.parametrize("stage", [
    GaussianBlur(1.5), AnisotropicBlur(3.0, 0.5, 0.6), AnisotropicBlur(1.0, 0.4, 2.0),
    MotionBlur(7.0, 0.3), DefocusBlur(2.5), DefocusBlur(6.0),
])
def test_blurs_lower_high_frequency_energy(stage):
    img = natural(64, 64)
    out = stage.apply(img, rng())
    assert out.shape == img.shape
    assert laplacian_var(out) < 0.5 * laplacian_var(img)
    assert abs(out.mean() - img.mean()) < 0.01


def test_fft_path_matches_direct_filter():
    img = natural(50, 70)
    kernel = anisotropic_kernel(3.0, 1.0, 0.8)
    direct = cv2.filter2D(img, cv2.CV_32F, kernel, borderType=cv2.BORDER_REFLECT_101)
    np.testing.assert_allclose(_fft_filter(img, kernel), direct, atol=1e-4)


def test_motion_blur_is_directional():
    img = natural(64, 64)
    out = MotionBlur(9.0, 0.0).apply(img, rng())  # horizontal smear
    dx = np.abs(np.diff(out, axis=1)).mean() / np.abs(np.diff(img, axis=1)).mean()
    dy = np.abs(np.diff(out, axis=0)).mean() / np.abs(np.diff(img, axis=0)).mean()
    assert dx < 0.6 * dy


def test_resize_interpolations_give_requested_size():
    for interp in ("area", "bilinear", "bicubic"):
        assert Resize(2.5, interp).apply(natural(51, 40), rng()).shape == (20, 16, 3)


def test_fade_lowers_contrast_toward_paper_tone():
    img = natural()
    out = Fade(0.4, (0.9, 0.85, 0.7)).apply(img, rng())
    assert out.std() < 0.7 * img.std()
    assert abs(out[:, :, 2].mean() - (0.6 * img[:, :, 2].mean() + 0.4 * 0.7)) < 1e-4


def test_color_cast_moves_channel_means_in_stated_direction():
    img = natural()
    out = ColorCast(gains=(1.2, 1.0, 0.8), offsets=(0.0, 0.02, 0.0)).apply(img, rng())
    before, after = img.mean(axis=(0, 1)), out.mean(axis=(0, 1))
    assert after[0] > before[0] and after[1] > before[1] and after[2] < before[2]
    sepia = ColorCast(sepia=1.0).apply(flat(0.5, 8), rng())[0, 0]
    assert sepia[0] > sepia[1] > sepia[2]


def test_interlace_changes_odd_rows_only():
    img = natural(33, 40)
    out = Interlace(shift=2.0, field_gain=0.97).apply(img, rng())
    np.testing.assert_array_equal(out[0::2], img[0::2])
    assert np.abs(out[1::2] - img[1::2]).mean() > 0.01


def test_halftone_changes_are_bounded_and_keep_tone():
    img = cv2.GaussianBlur(natural(), (0, 0), 3)
    amount = 0.6
    out = Halftone(period=6.0, angle=0.4, amount=amount).apply(img, rng())
    assert np.abs(out - img).max() <= amount + 1e-5
    assert np.mean(np.abs(out - img) > 0.01) > 0.5  # a screen touches most pixels...
    assert abs(cv2.GaussianBlur(out, (0, 0), 4).mean() - img.mean()) < 0.05  # ...but keeps the tone
    assert laplacian_var(out) > 5 * laplacian_var(img)


def test_dust_and_scratches_touch_a_small_fraction_of_pixels():
    img = natural(128, 128)
    light = DustScratches(speck_density=4.0, speck_radius=1.5, scratches=2, light_fraction=1.0)
    out = light.apply(img, rng())
    changed = np.abs(out - img).max(axis=2) > 1e-6
    assert 0.002 < changed.mean() < 0.15
    assert (out >= img - 1e-6).all()  # light marks only brighten
    dark = DustScratches(speck_density=4.0, speck_radius=1.5, scratches=2, light_fraction=0.0)
    assert (dark.apply(img, rng()) <= img + 1e-6).all()
    scratch_only = DustScratches(speck_density=0.0, speck_radius=1.0, scratches=1, light_fraction=1.0)
    cols = np.abs(scratch_only.apply(img, rng()) - img).max(axis=(0, 2)) > 1e-6
    assert 0 < cols.sum() < 12  # one thin, near-vertical line


# -- the parameter vector and the distribution -------------------------------------------------
def test_param_names_and_vector_shape():
    assert 12 <= PARAM_DIM <= 24 and len(PARAM_NAMES) == PARAM_DIM == len(set(PARAM_NAMES))
    vecs = np.stack([deg.params_vector() for deg in SAMPLED])
    assert vecs.shape == (len(SAMPLED), PARAM_DIM) and vecs.dtype == np.float32
    assert np.isfinite(vecs).all() and vecs.min() >= 0 and vecs.max() <= 1
    assert len({v.tobytes() for v in vecs}) == len(SAMPLED)
    for scale in (1, 2, 4):
        assert np.abs(Degradation.identity(scale).params_vector()).max() < 1e-6


def _single(stage, scale: int = 4) -> np.ndarray:
    return Degradation((stage, Resize(float(scale))), scale).params_vector()


def test_param_entries_follow_their_effect():
    idx = {name: i for i, name in enumerate(PARAM_NAMES)}
    assert _single(GaussianBlur(2.0))[idx["blur_sigma"]] > _single(GaussianBlur(1.0))[idx["blur_sigma"]]
    assert _single(AnisotropicBlur(2.0, 0.5, 1.0))[idx["blur_anisotropy"]] > 0.5
    assert _single(GaussianBlur(2.0))[idx["blur_anisotropy"]] < 1e-6
    assert _single(MotionBlur(6.0, 0.2))[idx["motion_blur"]] > 0
    assert _single(DefocusBlur(3.0))[idx["defocus_blur"]] > 0
    noisy = Degradation((Resize(4.0), GaussianNoise(0.06, color=False)), 4).params_vector()
    assert abs(noisy[idx["gaussian_noise"]] - 0.5) < 1e-5 and noisy[idx["noise_color"]] == 0
    q30 = Degradation((Resize(4.0), JpegCompression(30)), 4).params_vector()[idx["jpeg"]]
    q90 = Degradation((Resize(4.0), JpegCompression(90)), 4).params_vector()[idx["jpeg"]]
    assert q30 > q90 > 0
    sepia = Degradation((Resize(4.0), ColorCast(sepia=1.0)), 4).params_vector()
    assert sepia[idx["cast_r"]] > sepia[idx["cast_g"]] > sepia[idx["cast_b"]] == 0
    assert Degradation((Resize(4.0), Fade(0.3)), 4).params_vector()[idx["fade"]] == pytest.approx(0.3)
    for stage, name in [(FilmGrain(0.05, 2.0), "film_grain"), (Halftone(8.0, 0.3, 0.7), "halftone"),
                        (DustScratches(1.0, 2.0, 2), "dust"), (DustScratches(0.0, 2.0, 2), "scratches")]:
        assert _single(stage)[idx[name]] > 0
    assert Degradation((Resize(4.0), Interlace(2.0)), 4).params_vector()[idx["interlace"]] > 0


def test_sampling_distribution_is_wide_and_within_ranges():
    degs = [Degradation.sample(rng(1000 + s), scale=4) for s in range(300)]
    vecs = np.stack([d.params_vector() for d in degs])
    idx = {name: i for i, name in enumerate(PARAM_NAMES)}
    noise = np.hypot(vecs[:, idx["gaussian_noise"]], vecs[:, idx["poisson_noise"]]) * 0.12
    light = (vecs[:, idx["blur_sigma"]] * 6 < 1.0) & (noise < 0.025) & (vecs[:, idx["jpeg"]] < 0.4)
    assert 0.1 < light.mean() < 0.5
    assert (noise > 0.06).mean() > 0.1
    for d in degs:
        for st in d.stages:
            if isinstance(st, JpegCompression):
                assert 30 <= st.quality <= 95
            if isinstance(st, GaussianNoise):
                assert st.std <= 0.12
            if isinstance(st, GaussianBlur) and st is d.stages[0]:
                assert 0.2 <= st.sigma <= 3.0
    kinds = {st.kind for d in degs for st in d.stages}
    assert kinds >= {"gaussian_blur", "anisotropic_blur", "motion_blur", "defocus_blur", "resize",
                     "gaussian_noise", "poisson_noise", "film_grain", "jpeg", "video_codec",
                     "halftone", "fade", "color_cast", "dust_scratches", "interlace"}
    heavy = [Degradation.sample(rng(s), 4, severity="heavy").params_vector() for s in range(30)]
    light_only = [Degradation.sample(rng(s), 4, severity="light").params_vector() for s in range(30)]
    assert np.mean(heavy) > 2 * np.mean(light_only)
