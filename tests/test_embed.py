"""Embedders on real aligned crops: identity separation, batching, flip fusion, the card's preprocessing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from gatematch.cards import load_cards
from gatematch.embed import ArcFaceEmbedder
from gatematch.errors import BadImageError, CardError
from gatematch.modelstore import ModelStore
from gatematch.runtime import RuntimeConfig, create_session

EMBEDDERS = ("mobilefacenet_128d", "w600k_mbf_int8")
PER_IDENTITY = 8


@pytest.fixture(scope="module", params=EMBEDDERS)
def embedder(request: pytest.FixtureRequest, model_store: ModelStore) -> ArcFaceEmbedder:
    card = load_cards()[request.param]
    return ArcFaceEmbedder(card, create_session(card, model_store.verified_path(card), RuntimeConfig()))


def _load_aligned(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    crops, labels = [], []
    for label, identity in enumerate(sorted(p for p in folder.iterdir() if p.is_dir())):
        for path in sorted(identity.iterdir())[:PER_IDENTITY]:
            crops.append(cv2.imread(str(path)))
            labels.append(label)
    return np.stack(crops), np.array(labels)


@pytest.fixture(scope="module", params=["glint24_aligned", "ms1m13_aligned"])
def aligned_set(request: pytest.FixtureRequest, faces_dir: Path) -> tuple[str, np.ndarray, np.ndarray]:
    crops, labels = _load_aligned(faces_dir / request.param)
    return request.param, crops, labels


@pytest.fixture(scope="module")
def few_crops(faces_dir: Path) -> np.ndarray:
    crops, _ = _load_aligned(faces_dir / "ms1m13_aligned")
    return crops[:: PER_IDENTITY // 2][:12]


def test_embeddings_separate_identities(embedder: ArcFaceEmbedder, aligned_set):
    name, crops, labels = aligned_set
    emb = embedder.embed(crops)
    assert emb.shape == (len(crops), embedder.dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    scores = emb @ emb.T
    upper = np.triu_indices(len(labels), 1)
    same = (labels[:, None] == labels[None, :])[upper]
    genuine, impostor = scores[upper][same], scores[upper][~same]
    assert genuine.mean() > impostor.mean() + 0.35, (name, genuine.mean(), impostor.mean())
    thresholds = np.linspace(-1, 1, 401)
    balanced = max(((genuine > t).mean() + (impostor <= t).mean()) / 2 for t in thresholds)
    assert balanced > 0.93, f"{embedder.card.name} on {name}: balanced verification accuracy {balanced:.3f}"


def test_empty_batch_and_bad_input(embedder: ArcFaceEmbedder):
    empty = embedder.embed(np.zeros((0, 112, 112, 3), np.uint8))
    assert empty.shape == (0, embedder.dim) and empty.dtype == np.float32
    with pytest.raises(BadImageError, match=r"\(N,112,112,3\)"):
        embedder.embed(np.zeros((2, 96, 96, 3), np.uint8))
    with pytest.raises(BadImageError):
        embedder.embed(np.zeros((2, 112, 112, 3), np.float32))


def test_batch_equals_single_runs_for_batch_invariant_model(model_store: ModelStore, few_crops: np.ndarray):
    """mobilefacenet's file pins batch 1; create_session makes it batch-dynamic, which must not change results."""
    card = load_cards()["mobilefacenet_128d"]
    assert card.input.batch == "fixed" and card.params["batch_invariant"] is True
    embedder = ArcFaceEmbedder(card, create_session(card, model_store.verified_path(card), RuntimeConfig()))
    tensor = embedder.prepare(few_crops)
    batched = embedder.infer(tensor)
    singles = np.concatenate([embedder.infer(tensor[i : i + 1]) for i in range(len(tensor))])
    np.testing.assert_allclose(batched, singles, atol=1e-5)


def test_dynamic_int8_model_is_run_one_face_at_a_time(model_store: ModelStore, few_crops: np.ndarray):
    """w600k_mbf_int8 picks one activation scale per batch: raw batched output depends on the batch-mates,
    so embed() must give every crop exactly what it gets alone."""
    card = load_cards()["w600k_mbf_int8"]
    assert card.params["batch_invariant"] is False
    embedder = ArcFaceEmbedder(card, create_session(card, model_store.verified_path(card), RuntimeConfig()))
    tensor = embedder.prepare(few_crops)
    batched = embedder.infer(tensor)
    singles = np.concatenate([embedder.infer(tensor[i : i + 1]) for i in range(len(tensor))])
    cosine = (batched * singles).sum(1) / np.linalg.norm(batched, axis=1) / np.linalg.norm(singles, axis=1)
    assert cosine.min() < 0.999, "batched int8 output no longer depends on the batch: update the card"
    together = embedder.embed(few_crops)
    for i in range(len(few_crops)):
        np.testing.assert_allclose(together[i], embedder.embed(few_crops[i : i + 1])[0], atol=1e-6)


def test_flip_fusion_is_mirror_invariant(embedder: ArcFaceEmbedder, few_crops: np.ndarray):
    fused = ArcFaceEmbedder(embedder.card, embedder.session, flip=True)
    plain = embedder.embed(few_crops)
    both = fused.embed(few_crops)
    mirrored = fused.embed(np.ascontiguousarray(few_crops[:, :, ::-1]))
    np.testing.assert_allclose(np.linalg.norm(both, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(both, mirrored, atol=1e-5)  # crop + mirror is the same sum either way
    agreement = (both * plain).sum(1)
    assert agreement.min() > 0.8 and agreement.max() < 1 - 1e-4  # close to, but not, the plain embedding


def test_prepare_follows_the_card(embedder: ArcFaceEmbedder):
    crop = np.zeros((1, 112, 112, 3), np.uint8)
    crop[..., 0], crop[..., 1], crop[..., 2] = 10, 100, 200  # B, G, R
    tensor = embedder.prepare(crop)
    assert tensor.shape == (1, 3, 112, 112) and tensor.dtype == np.float32
    spec = embedder.card.input
    assert spec.color == "RGB"
    expected = (np.array([200, 100, 10]) - np.array(spec.mean)) / np.array(spec.std)
    np.testing.assert_allclose(tensor[0, :, 5, 7], expected, rtol=1e-6)


def test_wrong_card_is_refused():
    card = load_cards()["lightqnet_dm100"]
    with pytest.raises(CardError, match="not an embedder"):
        ArcFaceEmbedder(card, None)  # type: ignore[arg-type]


def test_prepare_reuses_a_per_thread_tensor(embedder: ArcFaceEmbedder, few_crops: np.ndarray):
    """The per-frame path writes the model input into a buffer kept per thread (a fresh 150 KB float array per
    face cost ~10x the normalisation itself); threads never share one, and reuse never changes the values."""
    from concurrent.futures import ThreadPoolExecutor

    first = embedder.prepare(few_crops[:1])
    expected = first.copy()
    second = embedder.prepare(few_crops[:1])
    assert np.shares_memory(first, second)
    np.testing.assert_array_equal(second, expected)
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(embedder.prepare, few_crops[:1]).result()
    assert not np.shares_memory(other, first)
    np.testing.assert_array_equal(other, expected)
    embedder.prepare(few_crops[1:2])  # overwrites the buffer: embed() must not depend on earlier contents
    np.testing.assert_allclose(embedder.embed(few_crops[:1]), embedder.embed(few_crops[:1].copy()), atol=1e-6)
