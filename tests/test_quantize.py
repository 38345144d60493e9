"""int8 models made here (gatematch.quantize): the calibration set is pinned by its hash, the same photos make the
same bytes, and the result embeds like its source. The made files live in the test's own model store."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from gatematch.cards import load_cards, load_packs
from gatematch.embed import ArcFaceEmbedder
from gatematch.errors import ModelError
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
    assert {c.name for c in derived} >= {"mobilefacenet_128d_int8"}
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
    card = load_cards()["mobilefacenet_128d_int8"]
    (tmp_path / "glint24_aligned").mkdir()
    (tmp_path / "ms1m13_aligned").mkdir()
    cv2.imwrite(str(tmp_path / "glint24_aligned" / "x.png"), np.zeros((112, 112, 3), np.uint8))
    with pytest.raises(ModelError, match="refusing to make a different model"):
        quantize(card, model_store, tmp_path)
    assert not model_store.status(card).present


def test_the_same_photos_make_the_same_bytes_and_the_model_embeds_like_its_source(
    tmp_path: Path, model_store: ModelStore, faces_dir: Path
) -> None:
    """Calibrated on 12 aligned crops (the shipped card uses 943), made twice: identical files, an int8
    embedder that runs batches as single faces and stays close to the fp32 one on other crops."""
    crops = sorted((need(faces_dir / "glint24_aligned", "glint24_aligned crops")).rglob("*.png"))
    calibration, probes = crops[:12], crops[100:140]
    folder = tmp_path / "calibration"
    folder.mkdir()
    for crop in calibration:
        shutil.copy(crop, folder / f"{crop.parent.name}_{crop.name}")
    card = dataclasses.replace(
        load_cards()["mobilefacenet_128d_int8"],
        derived={"from": "mobilefacenet_128d", "calibration": ["calibration"]},
    )
    source = source_of(card)
    photos = calibration_photos(card, tmp_path)
    made = [quantized(card, source, model_store.verified_path(source), photos) for _ in range(2)]
    assert made[0] == made[1], "quantisation must be deterministic for a card to pin its sha256"
    (tmp_path / card.file).write_bytes(made[0])
    runtime = RuntimeConfig(intra_op_threads=1)
    int8 = ArcFaceEmbedder(card, create_session(card, tmp_path / card.file, runtime))
    fp32 = ArcFaceEmbedder(source, create_session(source, model_store.verified_path(source), runtime))
    images = np.stack([cv2.imread(str(p)) for p in probes])
    batched, fresh = int8.embed(images), fp32.embed(images)
    alone = np.concatenate([int8.embed(images[i : i + 1]) for i in range(len(images))])
    assert np.abs(batched - alone).max() < 1e-5, (
        "static scales: a face's template does not depend on its batch"
    )
    assert float(np.min(np.sum(batched * fresh, axis=1))) > 0.95
