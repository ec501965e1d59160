"""Alignment to the FFHQ template, paste-back (at the detection scale and into an upscaled image), quality."""
import cv2
import numpy as np
import pytest

from archive_restore.errors import InputError
from archive_restore.faces.align import (
    FFHQ_TEMPLATE_512,
    align_face,
    box_to_landmarks,
    crop_to_image_matrix,
    estimate_affine,
    face_quality,
    feather_mask,
    paste_back,
    template,
)
from archive_restore.faces.detect import Face


def smooth_image(height: int = 300, width: int = 400) -> np.ndarray:
    """Low-frequency colour pattern: interpolation twice over it changes almost nothing."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [0.5 + 0.4 * np.sin(x / 23 + y / 31), 0.5 + 0.4 * np.cos(y / 19), (x + y) / (height + width)]
    return np.stack(channels, axis=2).astype(np.float32)


def face_at(centre: tuple[float, float], scale: float, angle_deg: float = 0.0) -> Face:
    """A face whose landmarks are the 512 template rotated, scaled by ``scale`` and centred at ``centre``."""
    theta = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    marks = (FFHQ_TEMPLATE_512 - 256.0) @ rotation.T * scale + np.asarray(centre)
    x0, y0 = marks.min(axis=0) - 20 * scale
    x1, y1 = marks.max(axis=0) + 20 * scale
    return Face((x0, y0, x1, y1), 0.99, marks.astype(np.float32), "test")


def test_template_landmarks_give_the_identity():
    matrix = estimate_affine(FFHQ_TEMPLATE_512, size=512)
    assert np.allclose(matrix, [[1, 0, 0], [0, 1, 0]], atol=1e-3)
    half = estimate_affine(template(256) * 2, size=256)  # the same face at twice the size of a 256 crop
    assert np.allclose(half, [[0.5, 0, 0], [0, 0.5, 0]], atol=1e-3)


def test_aligning_template_landmarks_returns_the_image_itself():
    image = smooth_image(512, 512)
    aligned = align_face(image, Face((0, 0, 512, 512), 1.0, FFHQ_TEMPLATE_512.copy(), "test"))
    assert aligned.crop.shape == (512, 512, 3) and aligned.crop.dtype == np.float32
    assert np.abs(aligned.crop - image).max() < 1e-3
    assert np.allclose(aligned.inverse, [[1, 0, 0], [0, 1, 0]], atol=1e-3)


def test_rotated_face_is_straightened():
    face = face_at((200, 150), scale=0.3, angle_deg=20)
    aligned = align_face(smooth_image(), face, size=256)
    mapped = cv2.transform(face.landmarks[None].astype(np.float64), aligned.matrix)[0]
    assert np.abs(mapped - template(256)).max() < 0.05


def test_source_pixels_is_the_width_the_crop_spans_in_the_picture():
    image = smooth_image()
    assert align_face(image, face_at((200, 150), scale=0.25), size=512).source_pixels == pytest.approx(128, rel=1e-3)
    assert align_face(image, face_at((200, 150), scale=0.5, angle_deg=30), size=256).source_pixels == pytest.approx(256, rel=1e-3)


def test_degenerate_landmarks_are_an_input_error():
    with pytest.raises(InputError):
        estimate_affine(np.zeros((5, 2), np.float32))
    with pytest.raises(InputError):
        box_to_landmarks((10, 10, 10, 30))


def test_align_paste_back_roundtrip_reproduces_the_image():
    image = smooth_image()
    face = face_at((200, 150), scale=0.35, angle_deg=10)
    aligned = align_face(image, face)
    pasted = paste_back(image, aligned.crop, aligned)
    weight = cv2.warpAffine(feather_mask(512), aligned.inverse, (400, 300))
    assert weight.max() > 0.99
    assert np.abs(pasted - image).max() < 0.005  # everywhere: inside the mask the crop is the image
    assert np.abs(pasted - image)[weight > 0.5].mean() < 0.001


def test_paste_back_changes_only_the_face_area():
    image = smooth_image()
    original = image.copy()
    face = face_at((200, 150), scale=0.25)
    aligned = align_face(image, face)
    pasted = paste_back(image, np.ones_like(aligned.crop), aligned)
    assert np.array_equal(image, original)  # the input is never modified
    x0, y0, x1, y1 = face.box
    assert pasted[int((y0 + y1) / 2), int((x0 + x1) / 2)].min() > 0.99  # face centre: all restored crop
    assert np.array_equal(pasted[:40], image[:40]) and np.array_equal(pasted[:, -60:], image[:, -60:])


def test_paste_back_feathers_the_edge():
    image = np.zeros((300, 400, 3), np.float32)
    aligned = align_face(image, face_at((200, 150), scale=0.4))
    pasted = paste_back(image, np.ones_like(aligned.crop), aligned)[150, :, 0]
    ramp = pasted[(pasted > 0.05) & (pasted < 0.95)]
    assert ramp.size >= 6  # a soft transition of several pixels on each side, not a hard edge


def test_paste_back_with_scale_two_into_a_twice_larger_image():
    small = smooth_image()
    large = cv2.resize(small, (800, 600), interpolation=cv2.INTER_LINEAR)
    face = face_at((200, 150), scale=0.35, angle_deg=-8)
    aligned = align_face(small, face, size=256)
    restored = align_face(large, face.scaled(2.0), size=512).crop  # a x2 "restorer" output
    pasted = paste_back(large, restored, aligned, scale=2.0)
    weight = cv2.warpAffine(feather_mask(512), crop_to_image_matrix(aligned, 512, 2.0), (800, 600))
    assert pasted.shape == large.shape and weight.max() > 0.99
    assert np.abs(pasted - large)[weight > 0.5].mean() < 0.003
    assert np.abs(pasted - large).max() < 0.03


def test_paste_back_accepts_a_custom_mask_and_gray_images():
    image = np.zeros((300, 400), np.float32)
    aligned = align_face(image, face_at((200, 150), scale=0.3), size=128)
    assert aligned.crop.shape == (128, 128, 3)
    mask = np.zeros((128, 128), np.float32)
    pasted = paste_back(image, np.ones((128, 128, 3), np.float32), aligned, mask=mask)
    assert pasted.shape == (300, 400, 3) and pasted.max() == 0.0


def test_face_outside_the_image_is_left_alone():
    image = smooth_image()
    aligned = align_face(image, face_at((200, 150), scale=0.3))
    far = type(aligned)(aligned.crop, aligned.matrix, aligned.inverse + [[0, 0, 5000], [0, 0, 0]])
    assert np.array_equal(paste_back(image, aligned.crop, far), image)


def test_box_fallback_gives_a_centred_face():
    box = (100.0, 60.0, 180.0, 140.0)
    marks = box_to_landmarks(box)
    assert marks[0, 0] < marks[1, 0] and marks[0, 1] < marks[3, 1]
    aligned = align_face(smooth_image(), Face(box, 0.8, None, "haar"), size=512)
    centre = cv2.transform(np.array([[[140.0, 100.0]]]), aligned.matrix)[0, 0]
    assert abs(centre[0] - 256) < 15 and abs(centre[1] - 280) < 40  # near the template's face centre
    corners = cv2.transform(np.array([[[100.0, 60.0], [180.0, 140.0]]]), aligned.matrix)[0]
    width = corners[1, 0] - corners[0, 0]
    assert 280 < width < 420  # the box spans the face part of the FFHQ crop, with margin around it


def test_box_fallback_matches_a_haar_detection_on_an_aligned_crop(shared_data):
    """Haar on an FFHQ-aligned face + the box fallback recovers (nearly) the identity alignment."""
    crop_path = shared_data / "real/photos/gfpgan_cropped_faces/Julia_Roberts_crop.png"
    crop = cv2.imread(str(crop_path))[:, :, ::-1].astype(np.float32) / 255.0
    from archive_restore.faces.detect import make_detector

    padded = cv2.copyMakeBorder(crop, 128, 128, 128, 128, cv2.BORDER_REFLECT_101)
    faces = make_detector("haar").detect(padded)
    assert faces
    aligned = align_face(padded, faces[0])
    assert abs(aligned.matrix[0, 0] - 1.0) < 0.12 and abs(aligned.matrix[1, 0]) < 0.05
    assert np.abs(aligned.matrix[:, 2] + 128).max() < 40


def test_face_quality_prefers_sharp_large_confident_faces():
    rng = np.random.default_rng(3)
    texture = cv2.GaussianBlur(rng.random((300, 400, 3)).astype(np.float32), (0, 0), 1.0)
    blurred = cv2.GaussianBlur(texture, (0, 0), 4.0)
    big, small = face_at((200, 150), scale=0.5), face_at((200, 150), scale=0.2)
    sharp_q = face_quality(big, texture)
    assert 0.0 < sharp_q <= 1.0
    assert face_quality(big, blurred) < sharp_q
    assert face_quality(small, texture) < sharp_q
    unsure = Face(big.box, 0.5, big.landmarks, "test")
    assert face_quality(unsure, texture) == pytest.approx(sharp_q * 0.5 / 0.99, rel=1e-4)
