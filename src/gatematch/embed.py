"""Face embedders: aligned 112x112 crops in, L2-normalised identity vectors out.

Preprocessing comes from the model card (colour order, mean/std, layout), never from guesses about the graph.
Models whose card says `batch_invariant = false` (dynamically quantised int8: one activation scale per batch)
are run one face at a time, so a stored template never depends on which other faces shared its batch.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from gatematch.batching import Batcher
from gatematch.cards import ModelCard
from gatematch.errors import CardError, ModelError
from gatematch.preprocess import CROP_SIZE, card_tensor, check_crops, model_output


class ArcFaceEmbedder:
    """One embedding per aligned crop; optional flip fusion (crop + mirror, summed, then normalised)."""

    def __init__(self, card: ModelCard, session: ort.InferenceSession, flip: bool = False):
        if card.task != "embedder":
            raise CardError(f"model '{card.name}' is a {card.task}, not an embedder")
        if card.input.size not in (None, (CROP_SIZE, CROP_SIZE)):
            raise CardError(f"embedder '{card.name}': input size {card.input.size} is not 112x112")
        if "embedding_size" not in card.params:
            raise CardError(f"embedder '{card.name}': [embedder] embedding_size missing")
        self.card = card
        self.session = session
        self.flip = flip
        self.dim = int(card.params["embedding_size"])
        self.batch_invariant = bool(card.params.get("batch_invariant", True))
        self._input = card.input.name
        self._output = model_output(card, session)
        self._batcher: Batcher | None = None

    def batch(self, max_batch: int, wait_s: float) -> None:
        """Run concurrent callers' crops as one batch (gatematch.batching); never for a batch-variant model."""
        if max_batch > 1 and self.batch_invariant:
            self._batcher = Batcher(
                lambda t: self.session.run([self._output], {self._input: t}), max_batch, wait_s
            )

    def prepare(self, crops: np.ndarray) -> np.ndarray:
        return card_tensor(check_crops(crops, CROP_SIZE), self.card.input)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        if self._batcher is not None:
            raw = self._batcher(tensor)[0]
        else:
            raw = self.session.run([self._output], {self._input: tensor})[0]
        if raw.shape != (len(tensor), self.dim):
            expected = (len(tensor), self.dim)
            raise ModelError(f"embedder '{self.card.name}': output shape {raw.shape}, expected {expected}")
        return raw

    def infer_rows(self, tensor: np.ndarray) -> np.ndarray:
        """Raw embeddings of a prepared batch: one run where the model is batch-invariant, else one per row
        (a model that is not gives other numbers for a row in a batch than alone)."""
        if self.batch_invariant or len(tensor) <= 1:
            return self.infer(tensor)
        return np.concatenate([self.infer(tensor[i : i + 1]) for i in range(len(tensor))])

    def embed(self, crops: np.ndarray) -> np.ndarray:
        crops = check_crops(crops, CROP_SIZE)
        if len(crops) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        raw = self.infer_rows(self.prepare(crops)).astype(np.float32)
        if self.flip:
            raw += self.infer_rows(self.prepare(np.ascontiguousarray(crops[:, :, ::-1])))
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        return raw / np.maximum(norms, 1e-12)
