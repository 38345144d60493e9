"""Model cards and packs: every shared model has a card, packs resolve, bad definitions fail clearly."""

from __future__ import annotations

import pytest

from gatematch.cards import build_pack, load_cards, load_packs, parse_card
from gatematch.errors import CardError, PackError


def test_every_shared_model_has_a_card_with_its_hash(shared):
    sums = {}
    for line in (shared / "models" / "SHA256SUMS").read_text().splitlines():
        digest, path = line.split()
        sums[path.rsplit("/", 1)[-1]] = digest
    made_here = {name for name, card in load_cards().items() if card.derived}  # tests/test_quantize.py
    cards = {name: card for name, card in load_cards().items() if name not in made_here}
    assert {c.file for c in cards.values()} == set(sums)
    for card in cards.values():
        assert card.sha256 == sums[card.file], card.name


def test_packs_resolve_and_state_licenses():
    packs = load_packs()
    assert packs["default"].detector.name == "yunet_2023mar"
    assert packs["default"].embedder.name == "mobilefacenet_128d"
    assert packs["default"].commercial_use
    for name in ("accurate", "scrfd"):
        assert packs[name].embedder.name == "w600k_mbf_int8"
        assert not packs[name].commercial_use
        assert "NON-COMMERCIAL" in packs[name].description
    assert packs["scrfd"].detector.name == "scrfd_500m_bnkps"
    assert packs["ultraface"].embedder is None


def test_detector_without_landmarks_cannot_feed_an_embedder():
    cards = load_cards()
    with pytest.raises(PackError, match="no landmarks"):
        build_pack("bad", {"detector": "ultraface_rfb_640", "embedder": "mobilefacenet_128d"}, cards)
    with pytest.raises(PackError, match="not a detector"):
        build_pack("bad", {"detector": "mobilefacenet_128d"}, cards)
    with pytest.raises(PackError, match="no model card"):
        build_pack("bad", {"detector": "nope"}, cards)


def test_malformed_cards_name_the_field(tmp_path):
    base = {
        "name": "m",
        "family": "yunet",
        "task": "detector",
        "file": "m.onnx",
        "sha256": "a" * 64,
        "license": "MIT",
        "commercial_use": True,
        "input": {"name": "input", "layout": "NCHW", "color": "BGR", "mean": [0, 0, 0], "std": [1, 1, 1]},
    }
    assert parse_card(base, "m.toml").input.std == (1.0, 1.0, 1.0)
    for change, message in [
        ({"task": "classifier"}, "task must be"),
        ({"sha256": "xyz"}, "sha256"),
        ({"commercial_use": "yes"}, "commercial_use"),
        ({"input": {**base["input"], "std": [1, 0, 1]}}, "std"),
        ({"input": {**base["input"], "layout": "HWC"}}, "layout"),
    ]:
        with pytest.raises(CardError, match=message):
            parse_card({**base, **change}, "m.toml")
    broken = dict(base)
    del broken["file"]
    with pytest.raises(CardError, match="missing field 'file'"):
        parse_card(broken, "m.toml")
    (tmp_path / "bad.toml").write_text("name = [unclosed")
    with pytest.raises(CardError, match="not valid TOML"):
        load_cards(tmp_path)
