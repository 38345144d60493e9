"""Card-driven tensor preparation shared by the crop models (embedders, quality, liveness).

Each model's card states its colour order, normalisation and layout; these helpers apply exactly that, so no
model wrapper carries its own copy of the arithmetic.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import onnxruntime as ort

from gatematch.cards import InputSpec, ModelCard
from gatematch.errors import BadImageError, ModelError

CROP_SIZE = 112  # the ArcFace-aligned crop every embedder and the quality model start from
BUFFERS_PER_THREAD = 4  # shapes kept per thread; a camera has one frame size and one face count


class ThreadBuffers:
    """Arrays kept per thread and key: a session is shared by many threads, so a buffer must never be."""

    def __init__(self, limit: int = BUFFERS_PER_THREAD):
        self._local = threading.local()
        self._limit = limit

    def get(self, key: tuple, make: Callable[[], np.ndarray]) -> np.ndarray:
        cache: OrderedDict | None = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = OrderedDict()
        array = cache.get(key)
        if array is None:
            array = cache[key] = make()
            if len(cache) > self._limit:
                cache.popitem(last=False)
        else:
            cache.move_to_end(key)
        return array


_TENSORS = ThreadBuffers()


def card_tensor(images: np.ndarray, spec: InputSpec) -> np.ndarray:
    """(N,H,W,3) BGR uint8 -> float32 model input: (pixel - mean) / std in the card's colour order and layout.

    Written into a per-thread buffer (a fresh float array per call cost ~10x the arithmetic): the result is
    valid until this thread's next call for the same shape, which is all a `session.run` needs.
    """
    count, height, width = images.shape[:3]
    nchw = spec.layout == "NCHW"
    shape = (count, 3, height, width) if nchw else (count, height, width, 3)
    tensor = _TENSORS.get(shape, lambda: np.empty(shape, np.float32))
    source = images[..., ::-1] if spec.color == "RGB" else images
    np.copyto(tensor, source.transpose(0, 3, 1, 2) if nchw else source, casting="unsafe")
    channels = (3, 1, 1) if nchw else (3,)
    tensor -= np.asarray(spec.mean, dtype=np.float32).reshape(channels)
    tensor *= (1.0 / np.asarray(spec.std, dtype=np.float32)).reshape(channels)
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
