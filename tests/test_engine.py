"""Pieces of the restoration engine: tiling without seams, robust code averaging, blind codes."""
import numpy as np
import torch
import torch.nn.functional as F

from archive_restore.codes import (blind_code, blind_face_code, image_to_tensor, lq_patches, paired_face_code,
                                   paired_image_code, robust_mean, tensor_to_image)
from archive_restore.nets import BlindDegEncoder, DegEncoder
from archive_restore.pipeline.tiles import run_tiled

torch.set_num_threads(1)


def test_tiled_equals_whole_image_for_a_local_operation():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 70, 90)

    def fn(t):
        return F.interpolate(t, scale_factor=2, mode="nearest")

    tiled = run_tiled(fn, image, scale=2, tile=32, overlap=8)
    assert tiled.shape == (1, 3, 140, 180)
    assert torch.allclose(tiled, fn(image), atol=1e-6)


def test_small_image_runs_whole():
    calls = []

    def fn(t):
        calls.append(t.shape)
        return t

    run_tiled(fn, torch.rand(1, 3, 20, 20), scale=1, tile=32)
    assert calls == [(1, 3, 20, 20)]


def test_robust_mean_ignores_an_outlier():
    torch.manual_seed(0)
    base = torch.randn(1, 8)
    near = base + 0.01 * torch.randn(5, 8)
    codes = torch.cat([near, base + 10])
    # the outlier dropped, the five kept averaged (float32 sums in another order: 1e-6)
    torch.testing.assert_close(robust_mean(codes), near.mean(0, keepdim=True), rtol=0, atol=1e-6)
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 100.0])  # an outlier's weight does not bring it back
    torch.testing.assert_close(robust_mean(codes, weights), (near * weights[:5, None]).sum(0, keepdim=True) / 15,
                               rtol=0, atol=1e-6)
    mirrored = torch.cat([near, -base])  # far from the others, but small: distance is to the median code
    torch.testing.assert_close(robust_mean(mirrored), near.mean(0, keepdim=True), rtol=0, atol=1e-6)
    three = torch.cat([near[:2], base + 10])  # three codes are enough to tell an outlier
    torch.testing.assert_close(robust_mean(three), near[:2].mean(0, keepdim=True), rtol=0, atol=1e-6)


def test_robust_mean_weights():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert torch.equal(robust_mean(torch.cat([a, b]), torch.tensor([3.0, 1.0])), torch.tensor([[0.75, 0.25]]))
    assert torch.equal(robust_mean(torch.cat([a, b])), torch.tensor([[0.5, 0.5]]))  # no weights: the plain mean
    torch.testing.assert_close(robust_mean(torch.cat([a, b]), torch.tensor([0.1, 0.3])), torch.tensor([[0.25, 0.75]]))


def test_robust_mean_drops_codes_beyond_three_deviations():
    """Distances to the median code 2 1 0 1 2 and 4.5: their median 1 and its median deviation 1 put
    the limit at 1 + 3 x 1 = 4, so 4.5 is an outlier (it would not be at 4 deviations)."""
    codes = torch.tensor([[-2.0], [-1.0], [0.0], [1.0], [2.0], [4.5]])
    assert torch.equal(robust_mean(codes), torch.tensor([[0.0]]))
    torch.testing.assert_close(robust_mean(codes[[0, 1, 2, 3, 4, 4]]), torch.tensor([[1 / 3]]))  # none beyond: all kept


def test_images_and_tensors_convert_both_ways():
    rgb = np.random.default_rng(0).random((5, 7, 3)).astype(np.float32)
    t = image_to_tensor(rgb)
    assert t.shape == (1, 3, 5, 7) and t.dtype == torch.float32 and torch.equal(t[0, 1], torch.from_numpy(rgb[:, :, 1]))
    assert np.array_equal(tensor_to_image(t), rgb) and np.array_equal(tensor_to_image(t[0]), rgb)
    assert image_to_tensor(rgb.astype(np.float64)).dtype == torch.float32  # what the networks take
    gray = rgb[:, :, 0]
    for g in (gray, gray[:, :, None]):  # a gray picture becomes three equal channels
        assert torch.equal(image_to_tensor(g), torch.from_numpy(gray)[None, None].expand(1, 3, 5, 7))
    assert tensor_to_image(torch.full((1, 3, 2, 2), 1.5)).max() == 1.0  # clamped to [0, 1]
    assert tensor_to_image(torch.full((1, 3, 2, 2), -0.5)).min() == 0.0


def test_lq_patches_take_a_regular_grid():
    image = torch.rand(1, 3, 100, 140)
    patches = lq_patches(image, 32)  # 3 rows fit (y 0, 34, 68) and 4 columns (x 0, 36, 72, 108)
    expected = [image[..., y:y + 32, x:x + 32] for y in (0, 34, 68) for x in (0, 36, 72, 108)]
    assert torch.equal(patches, torch.cat(expected))
    assert torch.equal(lq_patches(image, 32, max_patches=6), torch.cat(  # 6 // 3 rows: 2 columns
        [image[..., y:y + 32, x:x + 32] for y in (0, 34, 68) for x in (0, 108)]))
    strip = torch.rand(1, 3, 32, 100)  # exactly one patch high: a row of patches, not the strip squeezed
    assert torch.equal(lq_patches(strip, 32), torch.cat([strip[..., x:x + 32] for x in (0, 34, 68)]))
    column = torch.rand(1, 3, 100, 32)  # exactly one patch wide: a column of patches
    assert torch.equal(lq_patches(column, 32), torch.cat([column[..., y:y + 32, :] for y in (0, 34, 68)]))
    assert torch.equal(lq_patches(image, 32, max_patches=2), torch.cat(  # fewer than the rows: one column
        [image[..., y:y + 32, 0:32] for y in (0, 34, 68)]))
    assert lq_patches(torch.rand(1, 3, 40, 600), 32).shape[0] == 16  # 18 would fit in the row; 16 at most
    small = torch.rand(1, 3, 20, 40)  # lower than a patch: the whole image, resized to one patch
    resized = F.interpolate(small, size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 1)
    assert torch.equal(lq_patches(small, 32), resized)


def test_blind_face_codes_are_the_encoder_on_each_face():
    model = BlindDegEncoder(code_dim=8, width=4, input_size=32).eval()
    faces = torch.rand(3, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(blind_face_code(model, faces), model(faces))


def test_lq_patches_grid_and_small_images():
    assert lq_patches(torch.rand(1, 3, 100, 140), 32).shape == (12, 3, 32, 32)  # a 3 x 4 grid fits
    assert lq_patches(torch.rand(1, 3, 400, 400), 32).shape == (16, 3, 32, 32)  # at most 16
    assert lq_patches(torch.rand(1, 3, 20, 30), 32).shape == (1, 3, 32, 32)


def test_blind_code_of_an_image():
    """The robust mean of the codes of 16 px patches (the encoder's 64 px input / x4) on a regular grid,
    each enlarged bicubically to 64 px: a 60 x 80 image has room for 3 rows x 5 columns of them."""
    torch.manual_seed(0)
    model = BlindDegEncoder(code_dim=16, width=4, input_size=64).eval()
    image = torch.rand(1, 3, 60, 80)
    crops = torch.cat([image[..., y:y + 16, x:x + 16] for y in (0, 22, 44) for x in (0, 16, 32, 48, 64)])
    crops = F.interpolate(crops, size=(64, 64), mode="bicubic", align_corners=False).clamp(0, 1)
    with torch.no_grad():
        expected = robust_mean(model(crops))
    torch.testing.assert_close(blind_code(model, image), expected, rtol=0, atol=0)


def test_paired_image_code_encodes_tiles_at_the_encoder_size():
    """A large pair is encoded as tiles at its own resolution (never shrunk to the input size)."""
    torch.manual_seed(0)
    model = DegEncoder(code_dim=8, width=4, input_size=32).eval()
    hq = torch.rand(1, 3, 64, 64)
    lq = F.avg_pool2d(hq, 4)  # a 16x16 LQ, resized to the HQ size inside
    lq_up = F.interpolate(lq, size=(64, 64), mode="bicubic", align_corners=False).clamp(0, 1)
    with torch.no_grad():
        tiles = [model(lq_up[..., y : y + 32, x : x + 32], hq[..., y : y + 32, x : x + 32]) for y in (0, 32) for x in (0, 32)]
        expected = torch.cat(tiles).mean(dim=0, keepdim=True)
    z = paired_image_code(model, lq, hq)
    assert torch.allclose(z, expected, atol=1e-6)
    small = torch.rand(1, 3, 32, 32)
    assert torch.allclose(paired_image_code(model, small, small), model(small, small), atol=1e-6)


def test_paired_face_code_reads_a_face_at_four_times_its_source_width():
    """An aligned 128 px face pair whose face spanned 16 px of its picture is read at 64 px (x4), as two
    by two tiles of the 32 px input; one that spanned 8 px or less whole at the input size, as in training."""
    torch.manual_seed(0)
    model = DegEncoder(code_dim=8, width=4, input_size=32).eval()
    lq, hq = torch.rand(1, 3, 128, 128), torch.rand(1, 3, 128, 128)
    lq64, hq64 = F.interpolate(lq, size=(64, 64), mode="area"), F.interpolate(hq, size=(64, 64), mode="area")
    with torch.no_grad():
        assert torch.allclose(paired_face_code(model, lq, hq, source_pixels=16), paired_image_code(model, lq64, hq64), atol=1e-6)
        whole = model(F.interpolate(lq, size=(32, 32), mode="area"), F.interpolate(hq, size=(32, 32), mode="area"))
        assert torch.allclose(paired_face_code(model, lq, hq, source_pixels=6), whole, atol=1e-6)
        # never read above the crop's own resolution
        assert torch.allclose(paired_face_code(model, lq, hq, source_pixels=100), paired_image_code(model, lq, hq), atol=1e-6)


def test_tiles_blend_in_nhwc_as_in_nchw():
    """The frame restorer's tiles are blended straight into an NHWC picture: the same numbers as NCHW."""
    torch.manual_seed(2)
    conv = torch.nn.Conv2d(3, 3 * 4, 3, padding=1)
    fn = lambda x: torch.nn.functional.pixel_shuffle(conv(x), 2)  # noqa: E731
    image = torch.rand(1, 3, 50, 70)
    with torch.no_grad():
        nchw = run_tiled(fn, image, scale=2, tile=32, overlap=8)
        nhwc = run_tiled(lambda x: fn(x).permute(0, 2, 3, 1), image, scale=2, tile=32, overlap=8, nhwc=True)
    assert nhwc.shape == (1, 100, 140, 3) and nhwc.is_contiguous()
    assert torch.allclose(nhwc, nchw.permute(0, 2, 3, 1), atol=1e-6)


def test_tiles_are_finished_a_row_of_tiles_at_a_time():
    """With ``finish``, the output rows that no later row of tiles touches go through it as soon as the
    row of tiles above is done (only that much is ever held in float32), and the result is what
    finishing the whole float picture gives, exactly."""
    from archive_restore.pipeline.forward import _to_uint8

    torch.manual_seed(3)
    conv = torch.nn.Conv2d(3, 3 * 4, 3, padding=1)
    fn = lambda x: torch.nn.functional.pixel_shuffle(conv(x), 2).permute(0, 2, 3, 1)  # noqa: E731
    image = torch.rand(1, 3, 70, 90)
    bands = []

    def finish(band):
        bands.append(band.shape[1])
        return _to_uint8(band)

    with torch.no_grad():
        whole = run_tiled(fn, image, scale=2, tile=32, overlap=8, nhwc=True)
        finished = run_tiled(fn, image, scale=2, tile=32, overlap=8, nhwc=True, finish=finish)
    assert finished.dtype == torch.uint8 and finished.shape == (1, 140, 180, 3)
    assert torch.equal(finished, _to_uint8(whole.clone()))
    # tile rows start at 0, 24 and 38 (x2): rows 0-47 are final once the second row of tiles starts
    assert bands == [48, 28, 64]
