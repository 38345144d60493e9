"""Camera frames decoded by region (images.JpegFrame over _jpegregion.c): the whole decode's pixels exactly, as
strict, and every reader (detector window, alignment, liveness context) reveals what it reads, so a stream
analyses a frame opened this way exactly as the decoded frame."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from gatematch import images
from gatematch.align import norm_crop
from gatematch.benchmarks.encounters import FRAME_BUDGET_S
from gatematch.errors import BadImageError
from gatematch.facepipeline import FacePipeline, PipelineConfig
from gatematch.gallery import OperatingPoint
from gatematch.images import JpegFrame, decode_image, encode_jpeg, open_frame
from gatematch.liveness import LivenessChecker
from gatematch.runtime import RuntimeConfig
from gatematch.service.config import EncounterConfig, FocusConfig
from gatematch.service.dataplane import judge_frame, sightings
from gatematch.service.encounter import EncounterTracker
from gatematch.service.focus import Focus, FocusedFrame
from gatematch.video import read_frames
from support.data import missing
from support.jpegs import cut_and_terminate
from support.synthetic import EMBEDDER, calibration, gallery, strangers

VIDEOS = ("hieubkvn123_obama", "hieubkvn123_biden", "short_hamilton_clip", "dunaifuentes_my_video")


@pytest.fixture(scope="module")
def region_decoder() -> None:
    if not images.decodes_by_region():
        missing(
            "frames are not decoded by region here: gatematch._jpegregion was not built (it needs gcc and the "
            "headers of the C library, Python and libjpeg-turbo) or its pixels differ from simplejpeg's"
        )


def textured_jpeg(
    width: int, height: int, grey: bool = False, options: dict[int, int] | None = None
) -> bytes:
    """A JPEG of a smooth random texture (every block different), written with OpenCV's `options`."""
    options = options or {}
    texture = cv2.GaussianBlur(
        np.random.default_rng(2).integers(0, 256, (height, width, 3), np.uint8), (5, 5), 0
    )
    image = cv2.cvtColor(texture, cv2.COLOR_BGR2GRAY) if grey else texture
    ok, encoded = cv2.imencode(".jpg", image, [p for option in options.items() for p in option])
    assert ok
    return encoded.tobytes()


@pytest.fixture(scope="module")
def video_frames(video_dir: Path) -> list[bytes]:
    """Three frames of each video at its own size (854x480, 1280x720, 640x360, 1080x1920), as a camera sends."""
    frames = []
    for name in VIDEOS:
        for index, frame in enumerate(read_frames(video_dir / f"{name}.mp4", fps=1.0, seconds=3.0)):
            frames.append(encode_jpeg(frame))
            assert index < 3
    return frames


def noise_filled(data: bytes, seed: int = 0) -> JpegFrame:
    """The frame opened, its undecoded pixels noise: whatever a reader reads unrevealed shows."""
    frame = open_frame(data)
    assert isinstance(frame, JpegFrame)
    frame.pixels[:] = np.random.default_rng(seed).integers(0, 256, frame.pixels.shape, np.uint8)
    return frame


def random_region(rng: np.random.Generator, width: int, height: int) -> tuple[int, int, int, int]:
    x1, y1 = int(rng.integers(0, width - 1)), int(rng.integers(0, height - 1))
    return x1, y1, int(rng.integers(x1 + 1, width + 1)), int(rng.integers(y1 + 1, height + 1))


def assert_exact(frame: JpegFrame, whole: np.ndarray, region: tuple[int, int, int, int]) -> None:
    x1, y1, x2, y2 = region
    assert np.array_equal(frame.pixels[y1:y2, x1:x2], whole[y1:y2, x1:x2]), region


def test_a_region_holds_the_whole_decodes_pixels_and_later_regions_keep_earlier_ones(
    region_decoder, video_frames
):
    rng = np.random.default_rng(1)
    for data in video_frames:
        whole = decode_image(data)
        height, width = whole.shape[:2]
        for _ in range(12):
            frame = noise_filled(data)
            region = random_region(rng, width, height)
            frame.reveal(region)
            assert_exact(frame, whole, region)
            later = random_region(rng, width, height)
            frame.reveal(later)
            assert_exact(frame, whole, later)
            assert_exact(frame, whole, region)
            assert_exact(frame, whole, frame.decoded)


SAMPLINGS = {
    "4:2:0": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
    "4:2:2": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
    "4:4:4": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
    "4:4:0": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_440,
    "4:1:1": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411,
}


@pytest.mark.parametrize("sampling", sorted(SAMPLINGS))
@pytest.mark.parametrize("kind", ["colour", "grey", "restart markers"])
def test_every_chroma_sampling_grey_and_restart_markers_decode_by_region_exactly(
    region_decoder, sampling, kind
):
    options = {cv2.IMWRITE_JPEG_SAMPLING_FACTOR: SAMPLINGS[sampling]}
    if kind == "restart markers":
        options[cv2.IMWRITE_JPEG_RST_INTERVAL] = 3
    data = textured_jpeg(333, 251, grey=kind == "grey", options=options)
    whole = decode_image(data)
    rng = np.random.default_rng(2)
    for _ in range(20):
        frame = noise_filled(data)
        region = random_region(rng, 333, 251)
        frame.reveal(region)
        assert_exact(frame, whole, region)


@pytest.mark.parametrize("width", [258, 333])  # 16 k + 2: a last chroma column of its own in 4:2:0
def test_narrow_regions_at_the_frames_edges_decode_exactly(region_decoder, width):
    """Found in review: a crop one chroma sample wide is upsampled another way by libjpeg (box, not fancy)."""
    data = textured_jpeg(width, 67)
    whole = decode_image(data)
    for columns in range(1, 21):
        for x1 in (0, 1, 15, 16, width // 2, width - 17, width - 16, width - columns):
            for rows in ((0, 1), (33, 34), (66, 67), (0, 67)):
                region = (x1, rows[0], min(x1 + columns, width), rows[1])
                frame = noise_filled(data)
                frame.reveal(region)
                assert_exact(frame, whole, region)


def test_a_frame_that_is_neither_grey_nor_three_components_is_decoded_whole_as_ever(region_decoder):
    buffer = io.BytesIO()
    Image.new("CMYK", (64, 48), (10, 200, 30, 5)).save(buffer, format="JPEG")
    data = buffer.getvalue()
    frame = open_frame(data)
    assert isinstance(frame, JpegFrame)  # one baseline scan: only libjpeg knows its components
    try:
        expected = decode_image(data)
    except BadImageError as exc:
        with pytest.raises(BadImageError, match=str(exc)):
            frame.reveal((0, 0, 8, 8))
    else:
        assert np.array_equal(frame.reveal((0, 0, 8, 8)), expected)


def test_the_decoder_writes_only_the_rows_asked_for_and_the_columns_it_reports(region_decoder, video_frames):
    """Bounds of what libjpeg writes into the frame's buffer (AddressSanitizer cannot see them: Debian's libjpeg
    is not instrumented): the buffer sits between guard rows, every byte starts as a pattern, and only the
    region's rows over the reported columns may change."""
    rng = np.random.default_rng(4)
    for data in [*video_frames[::3], textured_jpeg(258, 67), textured_jpeg(333, 251, grey=True)]:
        height, width = decode_image(data).shape[:2]
        for _ in range(10):
            x1, y1, x2, y2 = random_region(rng, width, height)
            guarded = np.full((height + 2, width, 3), 0xA5, np.uint8)
            before = guarded.copy()
            first, last = images._jpegregion.decode_region(data, guarded[1:-1], width, height, x1, y1, x2, y2)
            assert first <= x1 and x2 <= last <= width
            changed = np.argwhere((guarded != before).any(axis=2))
            if len(changed):
                rows, columns = changed[:, 0] - 1, changed[:, 1]
                assert rows.min() >= y1 and rows.max() < y2, (x1, y1, x2, y2)
                assert columns.min() >= first and columns.max() < last, (x1, y1, x2, y2, first, last)


def test_the_decoder_refuses_a_size_or_region_that_is_not_the_frames(region_decoder):
    data = textured_jpeg(96, 64)
    out = np.zeros((64, 96, 3), np.uint8)
    assert images._jpegregion.decode_region(data, out, 96, 64, 10, 10, 50, 40) == (0, 50)
    for size, region in [
        ((64, 96), (10, 10, 50, 40)),
        ((96, 64), (10, 10, 97, 40)),
        ((96, 64), (10, 40, 50, 10)),
    ]:
        with pytest.raises(ValueError, match=r"size|region"):
            images._jpegregion.decode_region(data, out, *size, *region)
    with pytest.raises(ValueError, match="size"):
        images._jpegregion.decode_region(data, np.zeros((64, 95, 3), np.uint8), 96, 64, 0, 0, 8, 8)


def test_frames_that_cannot_be_decoded_by_region_are_decoded_whole(video_frames):
    image = decode_image(video_frames[0])
    ok, progressive = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    png = cv2.imencode(".png", image)[1].tobytes()
    for data in (progressive.tobytes(), png):
        opened = open_frame(data)
        assert isinstance(opened, np.ndarray)
        assert np.array_equal(opened, decode_image(data))


def test_a_frame_is_checked_before_it_is_opened(video_frames):
    with pytest.raises(BadImageError, match="truncated JPEG"):
        open_frame(video_frames[0][: len(video_frames[0]) // 2])
    with pytest.raises(BadImageError, match="empty"):
        open_frame(b"")


def test_corrupt_data_in_or_above_a_region_is_refused_as_the_whole_decode_refuses_it(
    region_decoder, video_frames
):
    data = video_frames[4]  # 1280x720
    cut = cut_and_terminate(data, 0.5)  # about the upper half of the rows survives
    with pytest.raises(BadImageError, match="corrupt JPEG") as whole:
        decode_image(cut)
    for region in ((0, 0, 1280, 720), (600, 650, 700, 720)):  # the whole frame; a region below the cut
        with pytest.raises(BadImageError, match="corrupt JPEG") as caught:
            open_frame(cut).reveal(region)
        assert str(caught.value) == str(whole.value)
    # A region wholly above the cut is decoded: the rows below it are never read (a whole-frame search is).
    top = (600, 0, 700, 40)
    frame = open_frame(cut)
    frame.reveal(top)
    assert_exact(frame, decode_image(data), top)


# -- every reader reveals what it reads ----------------------------------------------------------------------


def test_the_detector_window_the_alignment_and_the_liveness_context_read_only_what_they_reveal(
    region_decoder, video_frames, pipeline: FacePipeline, liveness_checker: LivenessChecker
):
    detector = pipeline.detector
    rng = np.random.default_rng(3)
    faces = 0
    for data in video_frames:
        whole = decode_image(data)
        height, width = whole.shape[:2]
        for _ in range(
            4
        ):  # windows anywhere, with the three ways a window is resized (none, whole factor, warp)
            window = random_region(rng, width, height)
            expected = detector.prepare(whole, window).tensor.copy()
            assert np.array_equal(detector.prepare(noise_filled(data), window).tensor, expected), window
        for face in detector.detect(whole):
            faces += 1
            assert np.array_equal(
                norm_crop(noise_filled(data), face.landmarks), norm_crop(whole, face.landmarks)
            )
            for card in liveness_checker.cards:
                assert np.array_equal(
                    liveness_checker.crops(noise_filled(data), [face], card),
                    liveness_checker.crops(whole, [face], card),
                )
    assert faces >= 10


def test_a_stream_analyses_frames_decoded_by_region_exactly_as_decoded_frames(
    region_decoder, video_dir, model_store
):
    """The four videos through a camera focus and its tracker, frames opened and frames decoded: the same
    detections, skips, qualities, liveness and templates frame by frame, and the same decisions."""
    config = PipelineConfig(liveness=True, runtime=RuntimeConfig(intra_op_threads=1))
    pipeline = FacePipeline.from_pack("default", store=model_store, config=config)
    centres = strangers(30, seed=7)
    table = calibration()
    enrolled = gallery(centres)

    def search(template: np.ndarray, target_fpir: float, frames: int):
        return enrolled.search(template, EMBEDDER, table, k=3, point=OperatingPoint(target_fpir))

    def run(frames: list[bytes], by_region: bool) -> tuple[list, list]:
        rule = EncounterConfig()
        tracker = EncounterTracker(rule, 0.003, 2.0, float(table.threshold_for_fmr(0.01)))
        focus = Focus(FocusConfig(), rule, tracker, FRAME_BUDGET_S)
        seen_faces, decided = [], []
        for index, data in enumerate(frames):
            now = index / 5.0
            if focus.pass_over(now):
                continue
            focused = FocusedFrame(now)
            analysis = focus.analyze(pipeline, open_frame(data) if by_region else decode_image(data), focused)
            seen_faces.append(analysis.faces)
            assessment = judge_frame(analysis)
            seen = sightings(assessment)
            ids, outcomes = tracker.observe(now, index + 1, seen, search)
            focus.follow(focused, assessment.gate_faces, seen, ids)
            decided += [o.decision for o in outcomes]
        return seen_faces, decided + [o.decision for o in tracker.close(len(frames) / 5.0, search)]

    for name in VIDEOS:
        frames = [encode_jpeg(f) for f in read_frames(video_dir / f"{name}.mp4", fps=5.0, seconds=6.0)]
        opened, decided = run(frames, by_region=True)
        decoded, expected = run(frames, by_region=False)
        assert decided == expected and len(opened) == len(decoded), name
        for a_faces, b_faces in zip(opened, decoded, strict=True):
            assert len(a_faces) == len(b_faces), name
            for a, b in zip(a_faces, b_faces, strict=True):
                assert np.array_equal(a.detection.box, b.detection.box), name
                assert a.skipped == b.skipped and a.quality == b.quality and a.liveness == b.liveness, name
                assert (a.embedding is None) == (b.embedding is None), name
                assert a.embedding is None or np.array_equal(a.embedding, b.embedding), name
