"""Alignment: the least-squares similarity fit, and warps that land real faces on the ArcFace template."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from gatematch.align import ARCFACE_TEMPLATE, norm_crop, similarity_transform
from gatematch.errors import BadImageError


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array(
        [[scale * math.cos(a), -scale * math.sin(a), tx], [scale * math.sin(a), scale * math.cos(a), ty]]
    )


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def test_template_is_the_arcface_template():
    assert ARCFACE_TEMPLATE.shape == (5, 2) and ARCFACE_TEMPLATE.dtype == np.float32
    assert ARCFACE_TEMPLATE[0, 0] < ARCFACE_TEMPLATE[1, 0]  # image-left eye first
    np.testing.assert_allclose(ARCFACE_TEMPLATE[2], (56.0252, 71.7366), atol=1e-4)


def test_exact_similarity_is_recovered():
    truth = _similarity(23.0, 2.7, 140.0, -35.0)
    src = ARCFACE_TEMPLATE.astype(np.float64)
    estimated = similarity_transform(src, _apply(truth, src))
    np.testing.assert_allclose(estimated, truth, atol=1e-9)


def test_fit_is_the_least_squares_solution_over_all_points():
    """Against an independent solver: the 4-parameter linear model x' = a x - b y + tx, y' = b x + a y + ty."""
    rng = np.random.default_rng(0)
    src = ARCFACE_TEMPLATE.astype(np.float64) * 3 + 50
    dst = _apply(_similarity(-12.0, 0.4, 7.0, 3.0), src) + rng.normal(0, 1.5, src.shape)
    rows = []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows.append(([x, -y, 1, 0], u))
        rows.append(([y, x, 0, 1], v))
    design, target = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    a, b, tx, ty = np.linalg.lstsq(design, target, rcond=None)[0]
    np.testing.assert_allclose(similarity_transform(src, dst), [[a, -b, tx], [b, a, ty]], atol=1e-9)


def test_mirrored_points_give_a_rotation_not_a_reflection():
    src = ARCFACE_TEMPLATE.astype(np.float64)
    mirrored = src * [-1, 1] + [112, 0]
    matrix = similarity_transform(src, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_degenerate_and_malformed_points_are_refused():
    with pytest.raises(ValueError, match="same point"):
        similarity_transform(np.ones((5, 2)), ARCFACE_TEMPLATE)
    with pytest.raises(ValueError):
        similarity_transform(np.ones((5, 3)), np.ones((5, 3)))


@pytest.fixture(scope="module")
def aligned_crop(faces_dir: Path) -> np.ndarray:
    folder = faces_dir / "glint24_aligned" / "Barack_Obama"
    return cv2.imread(str(sorted(folder.iterdir())[0]))


def test_norm_crop_undoes_a_known_warp_of_an_aligned_face(aligned_crop: np.ndarray):
    """Warp an aligned crop into a bigger rotated scene; aligning with the moved template points restores it."""
    forward = _similarity(31.0, 2.3, 160.0, 40.0)
    scene = cv2.warpAffine(aligned_crop, forward, (480, 400), flags=cv2.INTER_CUBIC)
    landmarks = _apply(forward, ARCFACE_TEMPLATE.astype(np.float64)).astype(np.float32)
    restored = norm_crop(scene, landmarks)
    assert restored.shape == (112, 112, 3) and restored.dtype == np.uint8
    inner = (slice(16, 96), slice(16, 96))
    error = np.abs(restored[inner].astype(np.int16) - aligned_crop[inner].astype(np.int16)).mean()
    assert error < 1.5, f"mean abs error {error:.2f} grey levels"
    shifted = norm_crop(
        scene, landmarks + np.float32([6.0, 0.0])
    )  # a wrong alignment must not look equally good
    shifted_error = np.abs(shifted[inner].astype(np.int16) - aligned_crop[inner].astype(np.int16)).mean()
    assert shifted_error > 2 * error


def test_norm_crop_writes_into_out_and_scales_template(aligned_crop: np.ndarray):
    landmarks = ARCFACE_TEMPLATE.copy()
    buffer = np.zeros((112, 112, 3), np.uint8)
    result = norm_crop(aligned_crop, landmarks, out=buffer)
    assert result is buffer
    np.testing.assert_array_equal(buffer, aligned_crop)  # identity transform
    big = norm_crop(aligned_crop, landmarks, size=224)
    assert big.shape == (224, 224, 3)
    small_again = cv2.resize(big, (112, 112), interpolation=cv2.INTER_AREA)
    assert np.abs(small_again.astype(np.int16) - aligned_crop.astype(np.int16)).mean() < 4.0


def test_norm_crop_refuses_bad_input(aligned_crop: np.ndarray):
    with pytest.raises(BadImageError):
        norm_crop(aligned_crop[:, :, 0], ARCFACE_TEMPLATE)
    with pytest.raises(BadImageError):
        norm_crop(aligned_crop.astype(np.float32), ARCFACE_TEMPLATE)
    with pytest.raises(ValueError, match=r"\(5,2\)"):
        norm_crop(aligned_crop, ARCFACE_TEMPLATE[:4])
    with pytest.raises(ValueError, match="finite"):
        norm_crop(aligned_crop, np.full((5, 2), np.nan, np.float32))
    with pytest.raises(ValueError, match="out"):
        norm_crop(aligned_crop, ARCFACE_TEMPLATE, out=np.zeros((112, 112, 3), np.float32))
