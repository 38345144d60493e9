"""Face detectors on the real models and photos.

The YuNet decoder is held to cv2.FaceDetectorYN on the very same network input (same file, same thresholds):
OpenCV's decoder is the reference implementation of this model. The other families are checked for plausible
faces, agreement with YuNet, and exact coordinate mapping under offset and rescaling.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from gatematch.cards import ModelCard, load_cards
from gatematch.detect import Detection, Detector, DetectorConfig, Prepared, YuNetDetector, create_detector
from gatematch.errors import BadImageError, CardError, ModelError
from gatematch.images import load_image, to_bgr
from gatematch.modelstore import ModelStore
from gatematch.runtime import RuntimeConfig, create_session

YUNETS = ["yunet_2023mar", "yunet_s_dynamic"]
ALL = [*YUNETS, "scrfd_500m_bnkps", "scrfd_2.5g_bnkps", "retinaface_mnet025_640", "ultraface_rfb_640"]
WITH_LANDMARKS = [name for name in ALL if name != "ultraface_rfb_640"]

GetDetector = Callable[..., Detector]
DEFAULT = DetectorConfig()


@pytest.fixture(scope="module")
def cards() -> dict[str, ModelCard]:
    return load_cards()


@pytest.fixture(scope="module")
def detector(cards: dict[str, ModelCard], model_store: ModelStore) -> GetDetector:
    """detector(name, config) on one session per model, loaded on first use and shared by the module."""
    sessions = {}

    def get(name: str, config: DetectorConfig = DEFAULT) -> Detector:
        card = cards[name]
        if name not in sessions:
            sessions[name] = create_session(card, model_store.verified_path(card), RuntimeConfig())
        return create_detector(card, sessions[name], config)

    return get


def photos(faces_dir: Path, dataset: str, every: int = 1) -> list[Path]:
    found = sorted(p for p in (faces_dir / dataset).glob("*/*") if p.is_file())
    assert found, f"no photos in {faces_dir / dataset}"
    return found[::every]


@pytest.fixture(scope="module")
def examples6(faces_dir: Path) -> list[np.ndarray]:
    return [load_image(p) for p in photos(faces_dir, "examples6")]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def opencv_faces(reference: cv2.FaceDetectorYN, frame: np.ndarray, prepared: Prepared) -> list[Detection]:
    """cv2.FaceDetectorYN on `frame`, mapped to the original image the way our detector maps its own."""
    reference.setInputSize((frame.shape[1], frame.shape[0]))
    _, faces = reference.detect(frame)
    width, height = prepared.image_size
    found = []
    for face in [] if faces is None else faces:
        box = np.r_[face[:2], face[:2] + face[2:4]] / prepared.scale
        box[0::2] = box[0::2].clip(0, width)
        box[1::2] = box[1::2].clip(0, height)
        found.append(Detection(box, face[4:14].reshape(5, 2) / prepared.scale, float(face[14])))
    return found


@pytest.mark.parametrize("name", YUNETS)
def test_yunet_decoder_matches_opencv(name: str, detector: GetDetector, faces_dir: Path, model_store, cards):
    """Same network input to both: the letterboxed canvas for the fixed model; for the dynamic one the scaled
    image at its own size, which cv2 pads to multiples of 32 itself (so our padding is checked too)."""
    ours = detector(name)
    cfg = ours.config
    reference = cv2.FaceDetectorYN.create(
        str(model_store.verified_path(cards[name])), "", (640, 640),
        cfg.score_threshold, cfg.nms_threshold, cfg.pre_nms_top_k,
    )  # fmt: skip
    paths = photos(faces_dir, "celeba_wild", every=40) + photos(faces_dir, "examples6")
    faces = multi = 0
    for path in paths:
        image = load_image(path)
        prepared = ours.prepare(image)
        mine = ours.decode(ours.infer(prepared.tensor), prepared)
        canvas = prepared.tensor[0].transpose(1, 2, 0).astype(np.uint8)  # YuNet: raw BGR, so exact
        if cards[name].input.size is None:
            scaled_w = round(image.shape[1] * prepared.scale)
            scaled_h = round(image.shape[0] * prepared.scale)
            canvas = np.ascontiguousarray(canvas[:scaled_h, :scaled_w])
        theirs = opencv_faces(reference, canvas, prepared)
        assert len(mine) == len(theirs), f"{path.name}: {len(mine)} faces, OpenCV {len(theirs)}"
        for face in theirs:
            match = max(mine, key=lambda d, face=face: iou(d.box, face.box))
            assert iou(match.box, face.box) > 0.5, path.name
            assert np.abs(match.box - face.box).max() <= 1.0, path.name
            assert np.abs(match.landmarks - face.landmarks).max() <= 1.0, path.name
            assert abs(match.score - face.score) <= 1e-3, path.name
        faces += len(theirs)
        multi += len(theirs) > 1
    assert faces >= len(paths) * 0.9 and multi >= 2, f"too few faces compared ({faces}, {multi} group photos)"


def best(detections: list[Detection]) -> Detection:
    assert detections, "no face found"
    assert all(a.score >= b.score for a, b in itertools.pairwise(detections))
    return detections[0]


@pytest.mark.parametrize("name", ALL)
def test_finds_the_face_where_yunet_does(name: str, detector: GetDetector, examples6: list[np.ndarray]):
    reference = detector("yunet_2023mar")
    model = detector(name)
    for image in examples6:
        face = best(model.detect(image))
        height, width = image.shape[:2]
        assert 0 <= face.box[0] < face.box[2] <= width and 0 <= face.box[1] < face.box[3] <= height
        assert face.box.dtype == np.float32 and face.box.shape == (4,)
        assert min(face.width, face.height) > 0.05 * min(width, height)
        assert face.score >= model.config.score_threshold
        assert iou(face.box, best(reference.detect(image)).box) > 0.5
        if name in WITH_LANDMARKS:
            eyes, nose, mouth = face.landmarks[:2], face.landmarks[2], face.landmarks[3:]
            assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
            assert (face.landmarks >= face.box[:2]).all() and (face.landmarks <= face.box[2:]).all()
            assert eyes[0, 0] < eyes[1, 0] and mouth[0, 0] < mouth[1, 0]  # image-left first
            assert eyes[:, 1].max() < nose[1] < mouth[:, 1].min()
        else:
            assert face.landmarks is None


def placed(photo: np.ndarray, size: tuple[int, int], offset: tuple[int, int]) -> np.ndarray:
    """`photo` on a black canvas of `size` (w, h) at `offset`: black is what the letterbox pads with."""
    canvas = np.zeros((size[1], size[0], 3), np.uint8)
    canvas[offset[1] : offset[1] + photo.shape[0], offset[0] : offset[0] + photo.shape[1]] = photo
    return canvas


@pytest.mark.parametrize("name", ALL)
def test_boxes_follow_offset_and_rescale(name: str, detector: GetDetector, examples6: list[np.ndarray]):
    """A photo moved by whole feature cells gives the network exactly shifted input, and a 2x nearest-upscaled
    frame letterboxes back to the same input: so the boxes must move by the offset and scale by 2 exactly."""
    model = detector(name)
    in_w, in_h = model.card.input.size or (640, 640)
    photo = cv2.resize(examples6[0], (in_w // 2, in_h // 2))
    base, offset = (64, 32), (192, 96)  # a shift of whole cells (UltraFace: 64 px), both off the edges
    at_origin = best(model.detect(placed(photo, (in_w, in_h), base)))
    moved_frame = placed(photo, (in_w, in_h), offset)
    moved = best(model.detect(moved_frame))
    shift = np.asarray(offset, np.float32) - base
    assert np.abs(moved.box - at_origin.box - np.tile(shift, 2)).max() <= 1.0
    doubled = best(model.detect(moved_frame.repeat(2, axis=0).repeat(2, axis=1)))
    assert doubled.box.max() > in_w * 0.5, "coordinates must be in the larger original frame"
    assert np.abs(doubled.box - 2 * moved.box).max() <= 2.0
    if at_origin.landmarks is not None:
        assert np.abs(moved.landmarks - at_origin.landmarks - shift).max() <= 1.0
        assert np.abs(doubled.landmarks - 2 * moved.landmarks).max() <= 2.0


@pytest.fixture(scope="module")
def group_photo(detector: GetDetector, faces_dir: Path) -> tuple[np.ndarray, list[Detection]]:
    """The first celeba_wild photo where YuNet finds faces of clearly different sizes and scores."""
    model = detector("yunet_2023mar")
    for path in photos(faces_dir, "celeba_wild", every=7):
        image = load_image(path)
        faces = model.detect(image)
        sides = sorted(min(f.width, f.height) for f in faces)
        if len(faces) >= 2 and sides[-1] - sides[0] > 4 and faces[0].score - faces[-1].score > 0.02:
            return image, faces
    pytest.fail("no photo with several faces in celeba_wild")


def test_config_filters(detector: GetDetector, group_photo: tuple[np.ndarray, list[Detection]]):
    image, faces = group_photo
    threshold = (faces[0].score + faces[-1].score) / 2
    strict = detector("yunet_2023mar", DetectorConfig(score_threshold=threshold)).detect(image)
    assert 0 < len(strict) < len(faces) and all(f.score >= threshold for f in strict)
    assert [f.score for f in strict] == [f.score for f in faces if f.score >= threshold]

    sides = [min(f.width, f.height) for f in faces]
    min_size = (min(sides) + max(sides)) / 2
    large = detector("yunet_2023mar", DetectorConfig(min_face_size=min_size)).detect(image)
    assert [f.score for f in large] == [f.score for f, s in zip(faces, sides, strict=True) if s >= min_size]
    assert 0 < len(large) < len(faces)

    top = detector("yunet_2023mar", DetectorConfig(top_k=1)).detect(image)
    assert len(top) == 1 and np.array_equal(top[0].box, faces[0].box)


@pytest.mark.parametrize("name", ALL)
def test_no_face_in_grey_or_noise(name: str, detector: GetDetector):
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert detector(name).detect(np.full((480, 640, 3), 128, np.uint8)) == []
    assert detector(name).detect(noise) == []


# SCRFD misses faces that fill the whole frame (ORL crops, letterboxed up to 640 px): it is tested on full
# photos only. A close-up probe for SCRFD needs a margin around the face.
@pytest.mark.parametrize("name", [*YUNETS, "retinaface_mnet025_640"])
def test_grayscale_photos(name: str, detector: GetDetector, faces_dir: Path):
    model = detector(name)
    for path in photos(faces_dir, "att_orl", every=40):
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        assert gray is not None and gray.ndim == 2
        face = best(model.detect(to_bgr(gray)))
        assert face.width > gray.shape[1] * 0.4, path


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("shape", [(1, 1), (1, 2000), (2000, 1), (40, 3000), (3000, 40)])
def test_degenerate_sizes_do_not_crash(name: str, shape: tuple[int, int], detector: GetDetector):
    image = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    for face in detector(name).detect(image):
        assert 0 <= face.box[0] <= face.box[2] <= shape[1] and 0 <= face.box[1] <= face.box[3] <= shape[0]


def test_letterbox_follows_the_card(detector: GetDetector, examples6: list[np.ndarray]):
    image = examples6[0]
    height, width = image.shape[:2]
    yunet = detector("yunet_2023mar").prepare(image)
    assert yunet.tensor.shape == (1, 3, 640, 640) and yunet.image_size == (width, height)
    assert yunet.scale == pytest.approx(min(640 / width, 640 / height))
    assert detector("yunet_2023mar").scale_of(width, height) == yunet.scale  # what a window is measured in
    scaled_w, scaled_h = round(width * yunet.scale), round(height * yunet.scale)
    assert (yunet.tensor[0, :, scaled_h:] == 0).all() and (yunet.tensor[0, :, :, scaled_w:] == 0).all()
    resized = cv2.resize(image, (scaled_w, scaled_h)).transpose(2, 0, 1)
    assert np.array_equal(yunet.tensor[0, :, :scaled_h, :scaled_w], resized)  # raw BGR, 0..255

    scrfd = detector("scrfd_500m_bnkps").prepare(image)
    expected = (resized[::-1].astype(np.float32) - 127.5) / 128.0  # RGB, (x - 127.5) / 128
    assert np.allclose(scrfd.tensor[0, :, :scaled_h, :scaled_w], expected, atol=1e-6)
    assert np.allclose(scrfd.tensor[0, :, scaled_h:], -127.5 / 128)  # a zero pixel, normalised

    ultra = detector("ultraface_rfb_640").prepare(image)
    assert ultra.tensor.shape == (1, 3, 480, 640)
    assert ultra.scale == pytest.approx(min(640 / width, 480 / height))

    dynamic = detector("yunet_s_dynamic")
    small = dynamic.prepare(image[:300, :250])  # no upscaling: padded up to multiples of 32 only
    assert small.scale == 1.0 and small.tensor.shape == (1, 3, 320, 256)
    large = dynamic.prepare(np.zeros((1000, 1500, 3), np.uint8))
    assert large.scale == pytest.approx(640 / 1500) and large.tensor.shape == (1, 3, 448, 640)
    assert dynamic.scale_of(1500, 1000) == large.scale and dynamic.scale_of(250, 300) == 1.0


def test_buffers_are_reused_per_thread(detector: GetDetector, examples6: list[np.ndarray]):
    model = detector("yunet_2023mar")
    first, second = model.prepare(examples6[0]), model.prepare(examples6[1])
    assert first.tensor is second.tensor
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(model.prepare, examples6[0]).result()
    assert other.tensor is not first.tensor


def test_threads_sharing_a_session_get_their_own_results(detector: GetDetector, examples6: list[np.ndarray]):
    model = detector("scrfd_500m_bnkps")
    expected = [[(f.box.tolist(), f.score) for f in model.detect(image)] for image in examples6]
    barrier = threading.Barrier(4)

    def run(index: int) -> list:
        barrier.wait()
        return [[(f.box.tolist(), f.score) for f in model.detect(examples6[i])] for i in range(index, 15, 4)]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, range(4)))
    for index, got in enumerate(results):
        assert got == expected[index::4]


def test_bad_input_and_cards_raise_typed_errors(detector: GetDetector, cards: dict[str, ModelCard]):
    model = detector("yunet_2023mar")
    for bad in (
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 3), np.float32),
        np.zeros((0, 5, 3), np.uint8),
    ):
        with pytest.raises(BadImageError):
            model.detect(bad)
    with pytest.raises(CardError, match="family"):
        create_detector(dataclasses.replace(cards["yunet_2023mar"], family="mystery"), model.session)
    with pytest.raises(CardError, match="not a detector"):
        YuNetDetector(cards["mobilefacenet_128d"], model.session)
    with pytest.raises(ModelError, match="not in the graph"):
        create_detector(dataclasses.replace(cards["yunet_2023mar"], outputs=("cls_8", "nope")), model.session)


@pytest.fixture(scope="module")
def gate_frames(examples6: list[np.ndarray]) -> list[np.ndarray]:
    """examples6 photos shrunk into 640x480 frames, off-centre: a face a gate camera sees among other pixels."""
    frames = []
    for photo in examples6:
        scale = 240 / max(photo.shape[:2])
        small = cv2.resize(photo, (round(photo.shape[1] * scale), round(photo.shape[0] * scale)))
        frames.append(placed(small, (640, 480), (290, 170)))
    return frames


def gate_window(box: np.ndarray, margin: float = 1.0) -> tuple[int, int, int, int]:
    """The box grown by `margin` box widths on each side: where a tracked face is looked for."""
    grow = margin * float(box[2] - box[0])
    return (int(box[0] - grow), int(box[1] - grow), int(box[2] + grow), int(box[3] + grow))


def test_any_size_yunet_runs_a_window_at_its_own_size_as_opencv_does(
    detector: GetDetector, gate_frames: list[np.ndarray], model_store, cards
):
    """The 640x640 file made size-dynamic at load gives, on a window, what cv2.FaceDetectorYN (which runs this
    very file at any input size) gives on the same pixels."""
    ours = detector("yunet_2023mar")
    cfg = ours.config
    reference = cv2.FaceDetectorYN.create(
        str(model_store.verified_path(cards["yunet_2023mar"])), "", (640, 640),
        cfg.score_threshold, cfg.nms_threshold, cfg.pre_nms_top_k,
    )  # fmt: skip
    for image in gate_frames:
        window = gate_window(best(ours.detect(image)).box)
        prepared = ours.prepare(image, window)
        in_h, in_w = prepared.tensor.shape[2:]
        assert in_w % 32 == 0 and in_h % 32 == 0 and in_w * in_h < 640 * 640
        mine = ours.decode(ours.infer(prepared.tensor), prepared)
        canvas = np.ascontiguousarray(prepared.tensor[0].transpose(1, 2, 0).astype(np.uint8))
        reference.setInputSize((in_w, in_h))
        _, faces = reference.detect(canvas)
        assert faces is not None and len(mine) == len(faces)
        for face in faces:  # cv2 answers in window-input pixels: map them as ours are mapped
            box = np.r_[face[:2], face[:2] + face[2:4]] / prepared.scale + np.tile(prepared.origin, 2)
            match = max(mine, key=lambda d, box=box: iou(d.box, box))
            assert np.abs(match.box - np.clip(box, 0, None)).max() <= 1.0
            assert abs(match.score - face[14]) <= 1e-3


@pytest.mark.parametrize("name", WITH_LANDMARKS)
def test_a_face_in_a_window_is_found_as_in_the_whole_frame(
    name: str, detector: GetDetector, gate_frames: list[np.ndarray]
):
    """Windows start on the anchor grid of the scaled frame, so a face inside one meets the same network input
    as in a whole-frame run, except for what the window's edge cuts from the network's view: with a margin of
    one face width (the service's default) landmarks stay within 5% of the face's width."""
    model = detector(name)
    for image in gate_frames:
        whole = best(model.detect(image))
        found = best(model.detect(image, gate_window(whole.box)))
        assert np.abs(found.landmarks - whole.landmarks).max() <= 0.05 * whole.width
        assert np.abs(found.box - whole.box).max() <= 0.05 * whole.width
        assert abs(found.score - whole.score) <= 0.05
        prepared = model.prepare(image, gate_window(whole.box))
        if model.card.input.size is None or model.card.input.any_size:
            assert prepared.tensor.size < model.prepare(image).tensor.size / 2, (
                "a window runs at its own size"
            )


@pytest.mark.parametrize("name", YUNETS)
def test_windows_off_the_frame_are_clipped_to_it(name: str, detector: GetDetector):
    image = np.random.default_rng(2).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    model = detector(name)
    for window in [(-500, -500, 40, 40), (600, 440, 5000, 5000), (300, 200, 300, 200), (-10, 0, 10_000, 480)]:
        prepared = model.prepare(image, window)
        assert 0 <= prepared.origin[0] < 640 and 0 <= prepared.origin[1] < 480
        for face in model.detect(image, window):
            assert 0 <= face.box[0] <= face.box[2] <= 640 and 0 <= face.box[1] <= face.box[3] <= 480
