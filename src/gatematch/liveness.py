"""Passive presentation-attack detection (MiniFASNet, minivision Silent-Face-Anti-Spoofing).

Each model looks at the face with context (the detector box scaled by the card's `crop_scale`): moire, screen
borders and paper edges live around the face, not on it. The probabilities of a real face from the models are
averaged, as in the original project. A single passive model is a weak signal on its own; it is meant to be
combined with the gate's other checks, not to be the only barrier.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import onnxruntime as ort

from gatematch.cards import ModelCard
from gatematch.detect import Detection
from gatematch.errors import BadImageError, CardError, ModelError
from gatematch.images import JpegFrame, reveal
from gatematch.preprocess import card_tensor, model_output


def context_box(box: np.ndarray, image_w: int, image_h: int, scale: float) -> tuple[int, int, int, int]:
    """Inclusive pixel box (x1, y1, x2, y2): `box` scaled by `scale` around its centre, kept inside the image.

    As Silent-Face-Anti-Spoofing's CropImage does it: the scale is first reduced so the window fits the image,
    then a window that sticks out is shifted back inside (not cut), so the model always sees the same
    face-to-context proportion it was trained on.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    box_w, box_h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    scale = min((image_h - 1) / box_h, (image_w - 1) / box_w, scale)
    new_w, new_h = box_w * scale, box_h * scale
    cx, cy = x1 + box_w / 2, y1 + box_h / 2
    left, top = cx - new_w / 2, cy - new_h / 2
    left = min(max(left, 0.0), image_w - 1 - new_w)
    top = min(max(top, 0.0), image_h - 1 - new_h)
    return int(left), int(top), int(left + new_w), int(top + new_h)


class LivenessChecker:
    """Average probability of a real face over the given MiniFASNet models."""

    def __init__(self, models: Sequence[tuple[ModelCard, ort.InferenceSession]]):
        if not models:
            raise CardError("liveness needs at least one model")
        self._models = []
        for card, session in models:
            if card.task != "liveness" or "crop_scale" not in card.params or card.input.size is None:
                raise CardError(
                    f"model '{card.name}' is not a liveness model with [liveness] crop_scale and a size"
                )
            batch_dim = session.get_inputs()[0].shape[0]
            self._models.append((card, session, model_output(card, session), batch_dim == 1))
        self.cards = tuple(card for card, *_ in self._models)

    def crops(
        self, image: np.ndarray | JpegFrame, detections: Sequence[Detection], card: ModelCard
    ) -> np.ndarray:
        """(N,h,w,3) BGR crops for one model: the context box of each detection, resized to the card's input."""
        height, width = image.shape[:2]
        size = card.input.size
        out = np.empty((len(detections), size[1], size[0], 3), np.uint8)
        for i, det in enumerate(detections):
            x1, y1, x2, y2 = context_box(det.box, width, height, float(card.params["crop_scale"]))
            pixels = reveal(image, (x1, y1, x2 + 1, y2 + 1))
            cv2.resize(pixels[y1 : y2 + 1, x1 : x2 + 1], size, dst=out[i], interpolation=cv2.INTER_LINEAR)
        return out

    def score(self, image: np.ndarray | JpegFrame, detections: Sequence[Detection]) -> np.ndarray:
        """(N,) probability that each detected face is a live face (not a print or a screen), in [0, 1]."""
        if not isinstance(image, JpegFrame) and (
            not isinstance(image, np.ndarray)
            or image.dtype != np.uint8
            or image.ndim != 3
            or image.shape[2] != 3
        ):
            raise BadImageError("liveness needs a BGR uint8 image of shape (H,W,3)")
        if not detections:
            return np.zeros(0, dtype=np.float32)
        total = np.zeros(len(detections), dtype=np.float64)
        for card, session, output, single in self._models:
            tensor = card_tensor(self.crops(image, detections, card), card.input)
            feeds = [tensor[i : i + 1] for i in range(len(tensor))] if single else [tensor]
            logits = np.concatenate([session.run([output], {card.input.name: t})[0] for t in feeds])
            if logits.ndim != 2 or len(logits) != len(detections):
                raise ModelError(f"liveness model '{card.name}': output shape {logits.shape}")
            logits = logits - logits.max(axis=1, keepdims=True)
            probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            total += probs[:, int(card.params.get("real_class", 1))]
        return (total / len(self._models)).astype(np.float32)
