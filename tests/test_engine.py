"""Pieces of the restoration engine: tiling without seams, robust code averaging, blind codes."""
import torch
import torch.nn.functional as F

from archive_restore.codes import blind_code, lq_patches, paired_face_code, paired_image_code, robust_mean
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
    codes = torch.cat([base + 0.01 * torch.randn(5, 8), base + 10])
    assert torch.allclose(robust_mean(codes), base, atol=0.02)


def test_robust_mean_weights():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    mean = robust_mean(torch.cat([a, b]), torch.tensor([3.0, 1.0]))
    assert mean[0, 0] > mean[0, 1]


def test_lq_patches_grid_and_small_images():
    assert lq_patches(torch.rand(1, 3, 100, 140), 32).shape == (12, 3, 32, 32)  # a 3 x 4 grid fits
    assert lq_patches(torch.rand(1, 3, 400, 400), 32).shape == (16, 3, 32, 32)  # at most 16
    assert lq_patches(torch.rand(1, 3, 20, 30), 32).shape == (1, 3, 32, 32)


def test_blind_code_of_an_image():
    model = BlindDegEncoder(code_dim=16, width=4, input_size=64).eval()
    z = blind_code(model, torch.rand(1, 3, 60, 80))
    assert z.shape == (1, 16) and torch.isfinite(z).all()


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
