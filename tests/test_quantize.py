"""int8 models made here (gatematch.quantize): the calibration set is pinned by its hash, the same photos make the
same bytes, and the result detects like its source. The made files live in the test's temporary folders."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from gatematch.cards import load_cards, load_packs
from gatematch.detect import create_detector
from gatematch.errors import ModelError
from gatematch.images import load_image
from gatematch.modelstore import ModelStore
from gatematch.quantize import (
    calibration_photos,
    calibration_sha256,
    derived_cards,
    quantize,
    quantized,
    source_of,
)
from gatematch.runtime import RuntimeConfig, create_session
from support.data import need


def test_derived_cards_name_a_source_a_calibration_set_and_its_hash() -> None:
    derived = derived_cards()
    assert {c.name for c in derived} >= {"yunet_2023mar_int8"}
    for card in derived:
        assert source_of(card).task == card.task
        assert card.derived["calibration"] and len(card.derived["calibration_sha256"]) == 64
        assert "celeba_wild" not in card.derived["calibration"], "calibrated where accuracy is measured"
    packs = load_packs()
    assert all(any(card in p.models for p in packs.values()) for card in derived), (
        "each made model has a pack"
    )


def test_the_calibration_hash_covers_names_and_bytes(tmp_path: Path) -> None:
    (tmp_path / "set" / "a").mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(tmp_path / "set" / "a" / f"{i}.png"), np.full((112, 112, 3), 40 * i, np.uint8))
    card = dataclasses.replace(derived_cards()[0], derived={"calibration": ["set"]})
    photos = calibration_photos(card, tmp_path)
    first = calibration_sha256(photos, tmp_path)
    assert first == calibration_sha256(calibration_photos(card, tmp_path), tmp_path)
    cv2.imwrite(str(photos[0]), np.full((112, 112, 3), 7, np.uint8))
    assert calibration_sha256(photos, tmp_path) != first
    photos[1].rename(photos[1].with_name("renamed.png"))
    assert calibration_sha256(calibration_photos(card, tmp_path), tmp_path) != first


def test_a_model_is_not_made_from_other_photos_than_its_card_records(
    tmp_path: Path, model_store: ModelStore
) -> None:
    card = load_cards()["yunet_2023mar_int8"]
    for folder in card.derived["calibration"]:
        (tmp_path / folder).mkdir()
    cv2.imwrite(str(tmp_path / "celeb5" / "x.png"), np.zeros((112, 112, 3), np.uint8))
    with pytest.raises(ModelError, match="refusing to make a different model"):
        quantize(card, model_store, tmp_path)
    assert not model_store.status(card).present


def test_the_same_photos_make_the_same_bytes_and_the_model_detects_like_its_source(
    tmp_path: Path, model_store: ModelStore, faces_dir: Path
) -> None:
    """Calibrated on 6 photos (the shipped card uses 265), made twice: identical files, and a detector that finds
    the faces its fp32 source finds, landmarks within a few percent of the face's width."""
    photos = sorted(p for p in need(faces_dir / "examples6", "examples6 photos").rglob("*") if p.is_file())
    folder = tmp_path / "calibration"
    folder.mkdir()
    for photo in photos[:6]:
        shutil.copy(photo, folder / f"{photo.parent.name}_{photo.name}")
    card = dataclasses.replace(
        load_cards()["yunet_2023mar_int8"], derived={"from": "yunet_2023mar", "calibration": ["calibration"]}
    )
    source = source_of(card)
    calibration = calibration_photos(card, tmp_path)
    made = [quantized(card, source, model_store.verified_path(source), calibration) for _ in range(2)]
    assert made[0] == made[1], "quantisation must be deterministic for a card to pin its sha256"
    (tmp_path / card.file).write_bytes(made[0])
    runtime = RuntimeConfig(intra_op_threads=1)
    int8 = create_detector(card, create_session(card, tmp_path / card.file, runtime))
    fp32 = create_detector(source, create_session(source, model_store.verified_path(source), runtime))
    for photo in photos[6:]:
        image = load_image(photo)
        mine, theirs = int8.detect(image), fp32.detect(image)
        assert mine and theirs, photo.name
        width = theirs[0].width
        assert np.abs(mine[0].landmarks - theirs[0].landmarks).max() < 0.08 * width, photo.name
