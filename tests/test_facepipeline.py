"""The FacePipeline facade on real photos: one entry point, every input form, batch == single, thread-safe."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from gatematch.errors import BadImageError, ImageTooLargeError, PackError
from gatematch.facepipeline import FacePipeline, PipelineConfig
from gatematch.images import ImageLimits, load_image
from support.data import need
from support.gate import simulated_print


def test_analyze_real_photo(pipeline, examples):
    analysis = pipeline.analyze(examples / "obama" / "obama.jpg")
    assert len(analysis.faces) == 1
    face = analysis.primary()
    assert face is analysis.faces[0]
    assert face.embedding.shape == (128,) and face.embedding.dtype == np.float32
    assert np.linalg.norm(face.embedding) == pytest.approx(1.0, abs=1e-5)
    assert face.quality is not None and face.quality.passed, face.quality.reasons
    x1, y1, x2, y2 = face.detection.box
    width, height = analysis.image_size
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    assert {"decode", "detect", "align", "quality", "embed"} <= set(analysis.timings)
    assert face.liveness is None  # not enabled by default


def test_same_person_scores_higher_than_different(pipeline, examples):
    def embedding(path):
        return pipeline.analyze(path).primary().embedding

    obama = [embedding(examples / "obama" / name) for name in ("obama.jpg", "obama2.jpg", "obama3.jpg")]
    biden = embedding(examples / "biden" / "biden.jpg")
    genuine = min(float(a @ b) for i, a in enumerate(obama) for b in obama[i + 1 :])
    impostor = max(float(a @ biden) for a in obama)
    assert genuine > impostor + 0.1, (genuine, impostor)


def test_every_input_form_gives_the_same_faces(pipeline, examples):
    path = examples / "biden" / "biden.jpg"
    reference = pipeline.analyze(path).primary().embedding
    image = cv2.imread(str(path))
    png = cv2.imencode(".png", image)[1].tobytes()
    for source in (
        path.read_bytes(),
        str(path),
        image,
        png,
        cv2.cvtColor(image, cv2.COLOR_BGR2BGRA),
        image.astype(np.uint16) * 257,
    ):
        embedding = pipeline.analyze(source).primary().embedding
        assert float(embedding @ reference) > 0.999
    gray = pipeline.analyze(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)).primary()
    assert float(gray.embedding @ reference) > 0.8  # colour is lost, identity is not


def test_batch_equals_single(pipeline, faces_dir):
    paths = sorted(need(faces_dir / "celeba_wild", "celeba_wild photos").rglob("*.jpg"))[:12]
    assert len(paths) == 12  # an empty folder must not pass vacuously
    images = [cv2.imread(str(p)) for p in paths]
    batch = pipeline.analyze_batch(images)
    for image, analysis in zip(images, batch, strict=True):
        single = pipeline.analyze(image)
        assert len(single.faces) == len(analysis.faces)
        for a, b in zip(single.faces, analysis.faces, strict=True):
            np.testing.assert_allclose(a.detection.box, b.detection.box, atol=1e-4)
            np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)
            assert a.quality.passed == b.quality.passed


def test_concurrent_callers_share_sessions_safely(pipeline, faces_dir):
    paths = sorted(need(faces_dir / "celeb5", "celeb5 photos").rglob("*.jpg"))[:16]
    assert len(paths) == 16
    expected = [pipeline.analyze(p) for p in paths]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(pipeline.analyze, paths * 2))
    for want, got in zip(expected * 2, results, strict=True):
        assert len(want.faces) == len(got.faces)
        for a, b in zip(want.faces, got.faces, strict=True):
            np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)


def test_several_faces_and_primary(pipeline, examples):
    left = cv2.imread(str(examples / "obama" / "obama.jpg"))
    right = cv2.resize(cv2.imread(str(examples / "biden" / "biden.jpg")), None, fx=0.5, fy=0.5)
    canvas = np.zeros((max(left.shape[0], right.shape[0]), left.shape[1] + right.shape[1], 3), np.uint8)
    canvas[: left.shape[0], : left.shape[1]] = left
    canvas[: right.shape[0], left.shape[1] :] = right
    analysis = pipeline.analyze(canvas)
    assert len(analysis.faces) == 2
    obama = pipeline.analyze(left).primary().embedding
    primary = analysis.primary()  # the larger face is the photo's subject
    other = next(f for f in analysis.faces if f is not primary)
    assert primary.detection.box[2] <= left.shape[1] < other.detection.box[0]
    assert float(primary.embedding @ obama) > 0.8 > float(other.embedding @ obama)


def test_no_face_and_bad_input(pipeline, faces_dir):
    assert pipeline.analyze(np.full((480, 640, 3), 128, np.uint8)).faces == ()
    assert pipeline.analyze(np.zeros((1, 1), np.uint8)).faces == ()
    with pytest.raises(BadImageError):
        pipeline.analyze(b"\xff\xd8\xff\xe0 this is not a jpeg")


def test_pixel_limit_from_config(model_store, examples):
    limited = FacePipeline.from_pack(
        "default", model_store, PipelineConfig(limits=ImageLimits(max_pixels=10_000))
    )
    with pytest.raises(ImageTooLargeError):
        limited.analyze(examples / "obama" / "obama.jpg")


def test_detection_only_pack_and_unknown_pack(model_store, examples):
    ultra = FacePipeline.from_pack("ultraface", model_store)
    faces = ultra.analyze(examples / "obama" / "obama.jpg").faces
    assert len(faces) >= 1
    assert faces[0].embedding is None and faces[0].quality is None and faces[0].detection.landmarks is None
    with pytest.raises(PackError, match="unknown pack"):
        FacePipeline.from_pack("no-such-pack", model_store)


def test_liveness_when_enabled(model_store, examples):
    """Wired to the right models and crops: the real photo scores live, the same photo printed does not
    (measured: 0.95 and 0.003)."""
    live = FacePipeline.from_pack("default", model_store, PipelineConfig(liveness=True))
    photo = load_image(examples / "obama" / "obama2.jpg")
    assert live.analyze_batch([photo])[0].primary().liveness > 0.8
    printed = simulated_print(photo, np.random.default_rng(0))
    assert live.analyze_batch([printed])[0].primary().liveness < 0.2
