"""Liveness: crop geometry (deterministic) and MiniFASNet scores on real photos vs a simulated print attack.

A real presentation-attack test needs captured attacks (prints, replays, masks); ../shared has none, so the
attack side here is a simulation and only shows that the models react to re-captured images at all.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from gatematch.cards import load_cards
from gatematch.detect import Detection, Detector, create_detector
from gatematch.errors import BadImageError, CardError
from gatematch.liveness import LivenessChecker, context_box
from gatematch.modelstore import ModelStore
from gatematch.runtime import RuntimeConfig, create_session
from support.gate import simulated_print


@pytest.fixture(scope="module")
def detector(model_store: ModelStore) -> Detector:
    card = load_cards()["yunet_2023mar"]
    return create_detector(card, create_session(card, model_store.verified_path(card), RuntimeConfig()))


def test_context_box_scales_around_the_centre():
    assert context_box(np.array([400, 300, 500, 420]), 1000, 1000, 2.0) == (350, 240, 550, 480)


def test_context_box_is_shifted_inside_not_cut():
    # Near the top-left corner: a 2.7x window (270 x 270) would start at -85; it moves to 0 and keeps its size.
    x1, y1, x2, y2 = context_box(np.array([0, 0, 100, 100]), 640, 480, 2.7)
    assert (x1, y1) == (0, 0) and (x2, y2) == (270, 270)
    # Near the bottom-right corner: the window ends on the last pixel (inclusive), still 270 wide.
    x1, y1, x2, y2 = context_box(np.array([560, 400, 640, 480]), 640, 480, 2.7)
    assert (x2, y2) == (639, 479) and (x2 - x1, y2 - y1) == (216, 216)


def test_context_box_scale_is_reduced_to_fit_the_image():
    # 4.0 x 150 px = 600 px does not fit a 400 px high image: the scale drops to 399/150 on both axes.
    x1, y1, x2, y2 = context_box(np.array([200, 100, 350, 250]), 800, 400, 4.0)
    assert (y1, y2) == (0, 399) and x2 - x1 == 399


def test_model_crops_cover_exactly_the_context_box(liveness_checker: LivenessChecker):
    """Paint the expected context box red and everything else blue: every model's crop must be all red."""
    image = np.zeros((480, 640, 3), np.uint8)
    image[:] = (255, 0, 0)
    det = Detection(np.array([300, 200, 360, 270], np.float32), None, 0.9)
    for card in liveness_checker.cards:
        x1, y1, x2, y2 = context_box(det.box, 640, 480, float(card.params["crop_scale"]))
        painted = image.copy()
        painted[y1 : y2 + 1, x1 : x2 + 1] = (0, 0, 255)
        crop = liveness_checker.crops(painted, [det], card)
        assert crop.shape == (1, 80, 80, 3)
        assert (crop[0, :, :, 2] == 255).all() and (crop[0, :, :, 0] == 0).all(), card.name
        wider = liveness_checker.crops(
            painted, [Detection(det.box + np.float32([-5, -5, 5, 5]), None, 0.9)], card
        )
        assert (wider[0, :, :, 0] > 0).any()  # a different box sees outside the painted region


def _largest(detector: Detector, image: np.ndarray) -> list[Detection]:
    faces = detector.detect(image)
    return [max(faces, key=lambda d: d.area)] if faces else []


def test_real_photos_score_higher_than_simulated_prints(liveness_checker, detector, faces_dir: Path):
    rng = np.random.default_rng(0)
    real, printed = [], []
    for path in sorted((faces_dir / "examples6").rglob("*.*")):
        image = cv2.imread(str(path))
        real.extend(liveness_checker.score(image, _largest(detector, image)))
        attack = simulated_print(image, rng)
        printed.extend(liveness_checker.score(attack, _largest(detector, attack)))
    real, printed = np.array(real), np.array(printed)
    assert len(real) == 15 and len(printed) >= 12
    assert ((real >= 0) & (real <= 1)).all() and ((printed >= 0) & (printed <= 1)).all()
    assert np.median(real) > 0.8, real
    assert np.median(printed) < np.median(real) - 0.4, (np.median(real), np.median(printed))


def test_one_score_per_detection(liveness_checker, detector, faces_dir: Path):
    image = cv2.imread(str(faces_dir / "examples6" / "obama" / "obama.jpg"))
    faces = detector.detect(image)
    assert faces
    scores = liveness_checker.score(image, [*faces, faces[0]])
    assert scores.shape == (len(faces) + 1,) and scores.dtype == np.float32
    assert scores[-1] == pytest.approx(scores[0], abs=1e-6)  # the same face scores the same in any position
    assert liveness_checker.score(image, []).shape == (0,)


def test_bad_input_is_refused(liveness_checker, model_store: ModelStore):
    det = Detection(np.array([10, 10, 50, 50], np.float32), None, 0.9)
    with pytest.raises(BadImageError):
        liveness_checker.score(np.zeros((100, 100), np.uint8), [det])
    with pytest.raises(CardError):
        LivenessChecker([])
    card = load_cards()["lightqnet_dm100"]
    with pytest.raises(CardError, match="not a liveness model"):
        LivenessChecker([(card, create_session(card, model_store.verified_path(card), RuntimeConfig()))])
