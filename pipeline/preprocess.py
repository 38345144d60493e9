"""Card-driven tensor preparation shared by the crop models (embedders, quality, liveness).

Each model's card states its colour order, normalisation and layout; these helpers apply exactly that, so no
model wrapper carries its own copy of the arithmetic.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from gatematch.cards import InputSpec, ModelCard
from gatematch.errors import BadImageError, ModelError

CROP_SIZE = 112  # the ArcFace-aligned crop every embedder and the quality model start from


def card_tensor(images: np.ndarray, spec: InputSpec) -> np.ndarray:
    """(N,H,W,3) BGR uint8 -> float32 model input: (pixel - mean) / std in the card's colour order and layout."""
    if spec.color == "RGB":
        images = images[..., ::-1]
    tensor = images.astype(np.float32)
    tensor -= np.asarray(spec.mean, dtype=np.float32)
    tensor *= 1.0 / np.asarray(spec.std, dtype=np.float32)
    if spec.layout == "NCHW":
        tensor = np.ascontiguousarray(tensor.transpose(0, 3, 1, 2))
    return tensor


def check_crops(crops: np.ndarray, size: int) -> np.ndarray:
    """`crops` if it is an (N,size,size,3) uint8 batch, else a BadImageError naming what arrived."""
    if not isinstance(crops, np.ndarray) or crops.dtype != np.uint8 or crops.shape[1:] != (size, size, 3):
        shape = getattr(crops, "shape", None)
        dtype = getattr(crops, "dtype", type(crops).__name__)
        raise BadImageError(f"expected aligned crops of shape (N,{size},{size},3) uint8, got {shape} {dtype}")
    return crops


def model_output(card: ModelCard, session: ort.InferenceSession) -> str:
    """The output to read: the card's first named output, checked against the graph."""
    names = [o.name for o in session.get_outputs()]
    name = card.outputs[0] if card.outputs else names[0]
    if name not in names:
        raise ModelError(f"model '{card.name}': card output '{name}' not in the graph ({names})")
    return name
