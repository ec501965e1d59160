"""faces.parse: face parsing masks for paste-back (facexlib's BiSeNet / ParseNet), their loading, the
fallback to the ellipse, steady masks in video, and the engine using them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from archive_restore.errors import CheckpointError
from archive_restore.faces.align import AlignedFace, Face, align_face, feather_mask
from archive_restore.faces.compose import compose_face
from archive_restore.faces.parse import (FACE_LABELS, MIN_FACE_SHARE, NETWORKS, PARSE_SIZE, FaceParser, find_parser,
                                         labels_to_mask, load_face_parser, missing_notice)
from archive_restore.faces.steady import TrackSmoother
from archive_restore.pipeline.engine import Engine, EngineOptions


@pytest.fixture(autouse=True)
def no_user_models(tmp_path, monkeypatch):
    """Only the folders a test names are searched (not a real ~/.cache/archive-restore)."""
    monkeypatch.delenv("ARCHIVE_RESTORE_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(scope="session")
def bisenet_dir(tmp_path_factory) -> Path:
    """parsing_bisenet.pth with random weights (the architecture's own seeded initialisation), saved as
    facexlib's release file is: a plain state dict."""
    torch.manual_seed(0)
    state = NETWORKS["bisenet"].build().state_dict()
    folder = tmp_path_factory.mktemp("parsing")
    torch.save(state, folder / "parsing_bisenet.pth")
    return folder


class _DiscParser(nn.Module):
    """A stand-in network with facexlib's calling convention (a tuple, logits first): skin (label 1)
    in a central disc of radius ``radius`` (a fraction of the side), hair (17) around it."""

    def __init__(self, radius: float):
        super().__init__()
        self.radius = radius

    def forward(self, x):
        n, _, h, w = x.shape
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        inside = (yy**2 + xx**2).sqrt() < 2 * self.radius
        logits = torch.zeros(n, 19, h, w)
        logits[:, 1][:, inside] = 1.0
        logits[:, 17][:, ~inside] = 1.0
        return logits, x


def _centre_face(size: int) -> AlignedFace:
    from archive_restore.faces.align import FFHQ_TEMPLATE_512

    marks = FFHQ_TEMPLATE_512 * (size / 2 / 512) + size / 4
    image = np.zeros((size, size, 3), np.float32)
    return align_face(image, Face((size / 4, size / 4, 3 * size / 4, 3 * size / 4), 1.0, marks, "test"), 512)


def test_label_maps_become_soft_face_masks_that_leave_hair_and_the_border_out():
    labels = np.full((PARSE_SIZE, PARSE_SIZE), 17, np.uint8)  # hair
    labels[128:384, 160:352] = 1                                # skin
    labels[200:230, 200:240] = 4                                # an eye
    mask = labels_to_mask(labels, 256)
    assert mask.shape == (256, 256) and mask.dtype == np.float32
    assert mask[128, 128] > 0.99 and mask[107, 115] > 0.99      # skin and the eye inside it
    assert mask[20, 128] < 0.01 and mask[128, 30] < 0.01        # hair
    assert 0.2 < mask[64, 128] < 0.8                            # a soft edge, not a cut
    assert mask[0].max() == 0 and mask[:, -1].max() == 0        # 0 at the crop border
    assert set(FACE_LABELS) == set(range(1, 14))


def test_the_parser_maps_its_network_output_to_masks_and_distrusts_a_parse_with_no_face():
    device = torch.device("cpu")
    faces = [np.full((512, 512, 3), 0.5, np.float32), np.full((256, 256, 3), 0.5, np.float32)]
    parser = FaceParser(_DiscParser(radius=0.3), NETWORKS["bisenet"], Path("stand-in"), device)
    masks = parser.masks(faces)
    assert [m.shape for m in masks] == [(512, 512), (256, 256)]
    assert masks[0][256, 256] > 0.99 and masks[0][20, 256] < 0.01 and masks[1][128, 128] > 0.99
    tiny = FaceParser(_DiscParser(radius=0.05), NETWORKS["bisenet"], Path("stand-in"), device)
    assert tiny.masks(faces[:1]) == [None]  # ~3 % of the crop is face: the ellipse is used instead


def test_random_bisenet_in_the_official_layout_loads_and_parses(bisenet_dir):
    assert find_parser([bisenet_dir]) == ("bisenet", bisenet_dir / "parsing_bisenet.pth")
    parser = load_face_parser("bisenet", bisenet_dir / "parsing_bisenet.pth")
    face = np.random.default_rng(0).random((512, 512, 3)).astype(np.float32)
    labels = parser.labels([face])
    assert labels.shape == (1, PARSE_SIZE, PARSE_SIZE) and labels.dtype == np.uint8 and labels.max() < 19
    (mask,) = parser.masks([face])
    share = np.isin(labels[0], FACE_LABELS).mean()  # what the random network calls face decides the mask
    if share >= MIN_FACE_SHARE:
        np.testing.assert_array_equal(mask, labels_to_mask(labels[0], 512))
    else:
        assert mask is None


def test_a_file_that_is_not_the_network_is_refused_with_its_name(tmp_path, bisenet_dir):
    wrong = tmp_path / "parsing_parsenet.pth"
    wrong.write_bytes((bisenet_dir / "parsing_bisenet.pth").read_bytes())  # BiSeNet weights under ParseNet's name
    with pytest.raises(CheckpointError, match="parsing_parsenet.pth does not hold facexlib's parsenet weights"):
        load_face_parser("parsenet", wrong)


def test_loading_never_runs_code_from_the_file(tmp_path):
    class Hostile:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "ran",))

    path = tmp_path / "parsing_bisenet.pth"
    torch.save({"x": Hostile()}, path)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_face_parser("bisenet", path)
    assert not (tmp_path / "ran").exists()


def test_bisenet_is_preferred_on_the_cpu_parsenet_on_a_gpu(tmp_path):
    for name in ("parsing_bisenet.pth", "parsing_parsenet.pth"):
        (tmp_path / name).write_bytes(b"x")
    assert find_parser([tmp_path], "cpu")[0] == "bisenet"
    assert find_parser([tmp_path], "cuda")[0] == "parsenet"
    assert find_parser([tmp_path / "none"]) is None


def test_compose_pastes_only_where_the_parsed_mask_is_face():
    aligned = _centre_face(128)
    picture = np.full((128, 128, 3), 0.3, np.float32)
    face = np.zeros((512, 512, 3), np.float32)
    face[:, :, 1] = np.linspace(0.1, 0.6, 512)[None, :]  # texture to paste
    mask = np.zeros((512, 512), np.float32)
    mask[:, :256] = feather_mask(512, "rect")[:, :256]   # the left half of the crop only
    out = compose_face(picture, face, aligned, mask=mask)
    assert np.ptp(out[64, 40:60, 1]) > 0.01               # left of the face: pasted
    np.testing.assert_array_equal(out[:, 70:], picture[:, 70:])  # right of it: untouched
    ellipse = compose_face(picture, face, aligned)
    assert not np.array_equal(ellipse[:, 70:], picture[:, 70:])  # the default ellipse covers both halves


def test_steady_masks_flicker_less_than_raw_ones():
    aligned = _centre_face(128)
    rng = np.random.default_rng(0)
    base = feather_mask(256, "ellipse")
    noisy = [np.clip(base + rng.normal(0, 0.1, base.shape), 0, 1).astype(np.float32) for _ in range(8)]
    smoother = TrackSmoother()
    steady = [smoother.mask(aligned, m) for m in noisy]
    raw_flicker = np.mean([np.abs(a - b).mean() for a, b in zip(noisy, noisy[1:])])
    steady_flicker = np.mean([np.abs(a - b).mean() for a, b in zip(steady, steady[1:])])
    assert steady_flicker < 0.6 * raw_flicker


def test_the_engine_uses_a_parser_when_present_and_says_so_when_not(tiny_models, random_restorer, bisenet_dir):
    without = Engine(EngineOptions(scale=1, device="cpu", face_detector="haar",
                                   models_dirs=(tiny_models, random_restorer)))
    assert without.parser is None and missing_notice() in without.notices
    assert without.face_masks([np.zeros((512, 512, 3), np.float32)]) == [None]
    with_parser = Engine(EngineOptions(scale=1, device="cpu", face_detector="haar",
                                       models_dirs=(tiny_models, random_restorer, bisenet_dir)))
    assert with_parser.parser.name == "bisenet" and missing_notice() not in with_parser.notices
    no_restorer = Engine(EngineOptions(scale=1, device="cpu", face_detector="haar", face_restorer="none",
                                       models_dirs=(tiny_models, bisenet_dir)))
    assert no_restorer.parser is None  # nothing is pasted without a restorer, so nothing to parse


def test_the_engine_pastes_through_the_parsed_mask(tiny_models, random_restorer, face_rgb):
    """A parser that calls a central disc face: the engine pastes the restored face through that
    disc's soft mask, not through the ellipse."""
    engine = Engine(EngineOptions(scale=1, device="cpu", face_detector="haar", models_dirs=(tiny_models, random_restorer)))
    engine.parser = FaceParser(_DiscParser(radius=0.2), NETWORKS["bisenet"], Path("stand-in"), torch.device("cpu"))
    lq = face_rgb.astype(np.float32) / 255
    picture = np.full_like(lq, 0.5)
    pasted, count = engine.paste_faces(lq, picture)
    (face,) = engine.detect_faces(lq)
    assert count == 1
    aligned = align_face(lq, face, 512)
    restored = engine.restored_faces([aligned.crop]).astype(np.float16).astype(np.float32)[0]
    (disc,) = engine.parser.masks([restored])
    assert disc is not None
    np.testing.assert_array_equal(pasted, compose_face(picture, restored, aligned, mask=disc))
    assert not np.array_equal(pasted, compose_face(picture, restored, aligned))  # the ellipse would differ


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
def test_the_parser_runs_on_cuda_like_on_the_cpu(bisenet_dir, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # TF32 would round convolutions on Ampere+
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    face = np.random.default_rng(0).random((512, 512, 3)).astype(np.float32)
    cpu = load_face_parser("bisenet", bisenet_dir / "parsing_bisenet.pth", "cpu").labels([face])
    cuda = load_face_parser("bisenet", bisenet_dir / "parsing_bisenet.pth", "cuda").labels([face])
    assert (cpu == cuda).mean() > 0.99


def test_a_picture_rendered_to_uint8_is_pasted_into_as_its_float(tiny_models, random_restorer, face_rgb):
    """A photo rendered straight to 8 bits gets its faces pasted in float, as the float picture would:
    the same numbers; a picture without faces stays uint8, untouched."""
    engine = Engine(EngineOptions(scale=1, device="cpu", face_detector="haar", models_dirs=(tiny_models, random_restorer)))
    lq = face_rgb.astype(np.float32) / 255
    rounded = (np.random.default_rng(1).random(lq.shape) * 255).astype(np.uint8)
    from_uint8, count = engine.paste_faces(lq, rounded)
    from_float, _ = engine.paste_faces(lq, rounded.astype(np.float32) / np.float32(255.0))
    assert count == 1 and from_uint8.dtype == np.float32
    np.testing.assert_array_equal(from_uint8, from_float)
    blank = np.zeros((40, 40, 3), np.float32)
    untouched, none = engine.paste_faces(blank, np.zeros((40, 40, 3), np.uint8))
    assert none == 0 and untouched.dtype == np.uint8
