"""int8 variants of pinned models, made on the user's machine from the fp32 files and calibrated on photos.

Static quantisation (onnxruntime.quantization: QDQ, per-channel int8 weights, uint8 activations, MinMax ranges
over the calibration photos): the activation scales are fixed when the file is made, so an output never depends
on its batch-mates (unlike the dynamically quantised w600k_mbf_int8). A derived model's card names its
source, the photo folders it is calibrated on (under a faces root such as ../shared/faces, never the set its
accuracy is measured on) and the sha256 of those photos; its `sha256` is that of the file this module makes from
them, so the usual check applies (made twice, the bytes were identical: DESIGN.md). The files are never
committed: `gatematch models quantize` writes them into the model store.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

from gatematch.cards import ModelCard, load_cards
from gatematch.errors import CardError, ModelError
from gatematch.images import load_image
from gatematch.modelstore import ModelStore, sha256_of
from gatematch.runtime import RuntimeConfig, create_session

QDQ_MIN_OPSET = 13  # per-channel DequantizeLinear (its `axis`) needs opset 13
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".pgm", ".bmp", ".webp")


def derived_cards(cards: dict[str, ModelCard] | None = None) -> list[ModelCard]:
    """The cards of models made here rather than fetched."""
    return [card for card in (cards or load_cards()).values() if card.derived]


def calibration_photos(card: ModelCard, faces: Path) -> list[Path]:
    """The card's calibration photos under `faces`, in a fixed order (relative path)."""
    folders = card.derived.get("calibration", [])
    if not folders:
        raise CardError(f"model card '{card.name}': [derived] calibration lists no photo folders")
    photos = []
    for folder in folders:
        root = faces / folder
        if not root.is_dir():
            raise ModelError(f"model '{card.name}': calibration folder {root} does not exist")
        photos += [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES]
    return sorted(photos, key=lambda p: p.relative_to(faces).as_posix())


def calibration_sha256(photos: list[Path], faces: Path) -> str:
    """One hash over the photos' relative paths and bytes: the calibration set a card was made from."""
    digest = hashlib.sha256()
    for photo in photos:
        digest.update(photo.relative_to(faces).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(photo.read_bytes()).digest())
    return digest.hexdigest()


def _inputs(card: ModelCard, source: ModelCard, path: Path, photos: list[Path]) -> Iterator[np.ndarray]:
    """The source model's inputs made from the photos, as the pipeline feeds it: whole photos letterboxed as the
    detector takes a frame, one at a time (the file as it is pins batch 1)."""
    if source.task != "detector":  # an int8 MobileFaceNet was measured and not kept (DESIGN.md)
        raise CardError(f"model card '{card.name}': only detectors are made here, not a {source.task}")
    from gatematch.detect import create_detector

    detector = create_detector(source, create_session(source, path, RuntimeConfig()))
    for photo in photos:
        yield detector.prepare(load_image(photo)).tensor.copy()


def quantize(card: ModelCard, store: ModelStore, faces: Path) -> str:
    """Make the card's model from its source and calibration photos into the store; its sha256. Refuses a
    calibration set other than the one the card records, and a result other than the one it pins."""
    source = source_of(card)
    photos = calibration_photos(card, faces)
    actual = calibration_sha256(photos, faces)
    if actual != card.derived.get("calibration_sha256"):
        raise ModelError(
            f"model '{card.name}': the calibration photos under {faces} have sha256 {actual}, but the card was "
            f"made from {card.derived.get('calibration_sha256')}; refusing to make a different model"
        )
    with tempfile.TemporaryDirectory(prefix="gatematch-quantize-") as tmp:
        made = Path(tmp) / card.file
        made.write_bytes(quantized(card, source, store.verified_path(source), photos))
        digest = sha256_of(made)
        if digest != card.sha256:
            raise ModelError(
                f"model '{card.name}': made a file with sha256 {digest}, but the card pins {card.sha256} "
                "(another onnxruntime version quantises differently); nothing installed"
            )
        store.install(card, made)
    return digest


def source_of(card: ModelCard) -> ModelCard:
    """The card of the fp32 model a made model is made from (its `[derived] from`)."""
    source = load_cards().get(card.derived.get("from", ""))
    if source is None:
        raise CardError(f"model card '{card.name}': [derived] from names no known model")
    return source


def quantized(card: ModelCard, source: ModelCard, path: Path, photos: list[Path]) -> bytes:
    """The int8 model made from the source file at `path`, calibrated on `photos`."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = _inputs(card, source, path, photos)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {source.input.name: batch}

    with tempfile.TemporaryDirectory(prefix="gatematch-quantize-") as tmp:
        # as it is: the runtime makes the made file dynamic at load as it does its source
        model = onnx.load(path)
        if next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) < QDQ_MIN_OPSET:
            model = onnx.version_converter.convert_version(model, QDQ_MIN_OPSET)
        onnx.save(model, f"{tmp}/source.onnx")
        quant_pre_process(f"{tmp}/source.onnx", f"{tmp}/prepared.onnx", skip_symbolic_shape=True)
        quantize_static(
            f"{tmp}/prepared.onnx",
            f"{tmp}/made.onnx",
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        return Path(f"{tmp}/made.onnx").read_bytes()
