"""Face detectors (YuNet, SCRFD, RetinaFace, UltraFace) in numpy around one shared onnxruntime session.

Every family shares one path: letterbox the frame onto the card's input (top-left, zero padding), run the
session, decode the family's raw outputs into boxes in input pixels, then threshold, NMS, map back to the
original frame and clip there. Only the decoding differs per family. A window of the frame (where a tracked
face is expected) goes the same way at the scale the whole frame would get, starting on its anchor grid, so a
face is seen at the same pixels either way; a model that can runs it at the window's own size, which is where
tracking saves time. The gate runs this on every frame, so buffers are reused per thread (sessions are shared
by many threads) and anchor grids are computed once per input size; the YuNet decoder is checked against
cv2.FaceDetectorYN in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import onnxruntime

from gatematch.batching import Batcher
from gatematch.cards import ModelCard
from gatematch.errors import BadImageError, CardError, ModelError
from gatematch.images import JpegFrame, Window
from gatematch.preprocess import ThreadBuffers


@dataclass(frozen=True, eq=False)
class Detection:
    box: np.ndarray  # (4,) float32 x1, y1, x2, y2 in the original image's pixels
    landmarks: (
        np.ndarray | None
    )  # (5, 2) float32: left eye, right eye, nose, left/right mouth (image-left first)
    score: float

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return self.width * self.height


@dataclass(frozen=True)
class DetectorConfig:
    score_threshold: float = 0.6
    nms_threshold: float = 0.3
    min_face_size: float = 0.0  # faces whose shorter box side (original px) is smaller are dropped
    top_k: int = 50  # at most this many faces returned, best score first
    pre_nms_top_k: int = 5000


@dataclass(frozen=True, eq=False)
class Prepared:
    """The input tensor and how to map back. The tensor is this thread's reusable buffer: the next `prepare`
    in the same thread at the same input size overwrites it."""

    tensor: np.ndarray
    scale: float  # input pixels per original pixel
    image_size: tuple[int, int]  # (width, height) of the original image
    origin: tuple[float, float] = (0.0, 0.0)  # where the tensor's top-left pixel is in the original image


@lru_cache(maxsize=256)
def _cell_grid(width: int, height: int, stride: int, per_cell: int) -> np.ndarray:
    """(col, row) of every anchor in feature-map cells, row-major, `per_cell` copies of each cell in a row."""
    cols, rows = math.ceil(width / stride), math.ceil(height / stride)
    grid = np.stack(np.meshgrid(np.arange(cols), np.arange(rows)), axis=-1).reshape(-1, 2)
    grid = np.repeat(grid, per_cell, axis=0).astype(np.float32)
    grid.flags.writeable = False
    return grid


@lru_cache(maxsize=64)
def _retinaface_priors(
    width: int, height: int, strides: tuple[int, ...], min_sizes: tuple[tuple[int, ...], ...]
) -> np.ndarray:
    """(cx, cy, w, h) priors in input pixels, in the order of biubug6's PriorBox (cell-major, sizes inner)."""
    parts = []
    for stride, sizes in zip(strides, min_sizes, strict=True):
        centres = (_cell_grid(width, height, stride, len(sizes)) + 0.5) * stride
        side = np.tile(np.asarray(sizes, np.float32), len(centres) // len(sizes))[:, None]
        parts.append(np.hstack([centres, side, side]))
    priors = np.concatenate(parts).astype(np.float32)
    priors.flags.writeable = False
    return priors


def nms(boxes: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS over `boxes` already sorted best first; indices kept (IoU <= threshold survives, as OpenCV)."""
    x1, y1, x2, y2 = boxes.T
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    order = np.arange(len(boxes))
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        inter_w = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        inter_h = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        inter = inter_w * inter_h
        union = np.maximum(areas[best] + areas[rest] - inter, np.finfo(np.float32).tiny)
        order = rest[inter / union <= threshold]
    return np.asarray(keep, dtype=np.intp)


def _check_count(card: ModelCard, what: str, got: int, expected: int) -> None:
    if got != expected:
        raise ModelError(
            f"detector '{card.name}': {what} has {got} rows but the input size implies {expected}; "
            "the model does not match its card"
        )


def _yunet_scores(cls: np.ndarray, obj: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(indices, scores) with sqrt(clip(cls) * clip(obj)) >= threshold, OpenCV's YuNet score.

    A coarse pass on the raw product first: for a positive threshold a face needs both values positive, where
    clipping can only lower the product, so the pass drops no face and the exact score runs on a handful.
    """
    rows = np.arange(len(cls)) if threshold <= 0 else np.flatnonzero(cls * obj >= threshold**2 * (1 - 1e-5))
    score = np.sqrt(np.clip(cls[rows], 0, 1) * np.clip(obj[rows], 0, 1))
    exact = score >= threshold
    return rows[exact], score[exact]


class Detector:
    """Letterbox, run, decode. Subclasses implement `_candidates` for their family's raw outputs."""

    def __init__(
        self,
        card: ModelCard,
        session: onnxruntime.InferenceSession,
        config: DetectorConfig = DetectorConfig(),
    ):
        if card.task != "detector":
            raise CardError(f"model card '{card.name}' is a {card.task}, not a detector")
        graph_outputs = {output.name for output in session.get_outputs()}
        missing = [name for name in card.outputs if name not in graph_outputs]
        if missing or not card.outputs:
            raise ModelError(f"detector '{card.name}': card outputs {missing or '(none)'} not in the graph")
        self.card = card
        self.session = session
        self.config = config
        self._output_names = list(card.outputs)
        spec = card.input
        self._nchw = spec.layout == "NCHW"
        channel_shape = (3, 1, 1) if self._nchw else (3,)
        self._channels = slice(None, None, -1) if spec.color == "RGB" else slice(None)  # input is BGR
        mean = np.asarray(spec.mean, np.float32)
        inv_std = 1.0 / np.asarray(spec.std, np.float32)
        self._raw = not mean.any() and bool((inv_std == 1.0).all())
        self._mean = mean.reshape(channel_shape)
        self._inv_std = inv_std.reshape(channel_shape)
        self._pad_value = (-mean * inv_std).reshape(channel_shape)  # a zero pixel, normalised
        self._tensors = ThreadBuffers()
        self._resized = ThreadBuffers()
        self._planes = ThreadBuffers()
        self._batcher: Batcher | None = None

    def batch(self, max_batch: int, wait_s: float) -> None:
        """Run concurrent callers' inputs of one size as one batch (gatematch.batching), where the card says
        the graph takes a batch and keeps it in every output (`[detector] batchable`)."""
        if max_batch > 1 and self.card.params.get("batchable", False):
            run = lambda tensor: self.session.run(self._output_names, {self.card.input.name: tensor})  # noqa: E731
            self._batcher = Batcher(run, max_batch, wait_s)

    def _geometry(
        self, width: int, height: int, coarse: float = 1.0
    ) -> tuple[float, tuple[int, int], tuple[int, int]]:
        """(scale, resized (w, h), input (w, h)) for an original frame of width x height; `coarse` < 1 shrinks
        the scale by that factor (a cheap look for faces, at the price of the smallest ones)."""
        spec = self.card.input
        if spec.size is not None:
            in_w, in_h = spec.size
            scale = min(in_w / width, in_h / height)
        else:
            scale = min(1.0, spec.max_side / max(width, height)) if spec.max_side else 1.0
        scale *= coarse
        resized_w = max(1, round(width * scale))
        resized_h = max(1, round(height * scale))
        if spec.size is not None:
            return scale, (min(resized_w, in_w), min(resized_h, in_h)), (in_w, in_h)
        step = spec.size_multiple
        return scale, (resized_w, resized_h), (-(-resized_w // step) * step, -(-resized_h // step) * step)

    def _window(
        self, scaled: tuple[int, int], window: Window, scale: float
    ) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
        """(the window in the scaled frame's pixels, input (w, h)).

        The window starts on the coarsest anchor grid of the scaled frame, so its anchors are the whole frame's
        anchors and a face inside it meets the network as in a whole-frame run (only what lies near the
        window's edge can differ). It runs at its own size where the model allows, else letterboxed into the
        card's input like a whole frame.
        """
        spec, grid = self.card.input, int(max(self.card.params.get("strides", [32])))
        width, height = scaled
        x1 = min(max(math.floor(window[0] * scale / grid) * grid, 0), (width - 1) // grid * grid)
        y1 = min(max(math.floor(window[1] * scale / grid) * grid, 0), (height - 1) // grid * grid)
        x2 = min(max(math.ceil(window[2] * scale), x1 + 1), width)
        y2 = min(max(math.ceil(window[3] * scale), y1 + 1), height)
        if spec.size is not None and not spec.any_size:
            size = spec.size
        else:
            step = spec.size_multiple
            size = (-(-(x2 - x1) // step) * step, -(-(y2 - y1) // step) * step)
        return (x1, y1, x2, y2), size

    def _scaled_part(
        self, image: np.ndarray, scaled: tuple[int, int], part: tuple[int, int, int, int]
    ) -> np.ndarray:
        """Pixels `part` of the image resized to `scaled`, without resizing the rest: the same sampling points
        as cv2.resize (bilinear, pixel centres aligned), so a window sees what the whole scaled frame holds
        (resizing the part alone where the factor is whole, as 1280x720 or 1920x1080 to 640 wide; else one warp)."""
        x1, y1, x2, y2 = part
        height, width = image.shape[:2]
        if scaled == (width, height):
            return image[y1:y2, x1:x2]
        fx, fy = width / scaled[0], height / scaled[1]
        out = self._resized.get((x2 - x1, y2 - y1), lambda: np.empty((y2 - y1, x2 - x1, 3), np.uint8))
        if fx.is_integer() and fy.is_integer():
            source = image[int(y1 * fy) : int(y2 * fy), int(x1 * fx) : int(x2 * fx)]
            return cv2.resize(source, (x2 - x1, y2 - y1), dst=out, interpolation=cv2.INTER_LINEAR)
        matrix = np.float32([[fx, 0, (x1 + 0.5) * fx - 0.5], [0, fy, (y1 + 0.5) * fy - 0.5]])
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        return cv2.warpAffine(
            image, matrix, (x2 - x1, y2 - y1), dst=out, flags=flags, borderMode=cv2.BORDER_REPLICATE
        )

    def reads(self, width: int, height: int, window: Window) -> Window:
        """The pixels of a width x height frame that `prepare(frame, window)` reads: a region to decode."""
        scale, scaled, _ = self._geometry(width, height)
        x1, y1, x2, y2 = self._window(scaled, window, scale)[0]
        if scaled == (width, height):
            return x1, y1, x2, y2
        fx, fy = width / scaled[0], height / scaled[1]
        if fx.is_integer() and fy.is_integer():  # `_scaled_part` resizes the part alone
            return int(x1 * fx), int(y1 * fy), int(x2 * fx), int(y2 * fy)
        # one warp: bilinear sampling at (x + 0.5) * f - 0.5, the pixel on each side (one more: the warp rounds
        # positions to 1/32 of a pixel first), clamped at the frame's edge
        return (
            max(math.floor((x1 + 0.5) * fx - 0.5) - 1, 0),
            max(math.floor((y1 + 0.5) * fy - 0.5) - 1, 0),
            min(math.floor((x2 - 0.5) * fx - 0.5) + 3, width),
            min(math.floor((y2 - 0.5) * fy - 0.5) + 3, height),
        )

    def scale_of(self, width: int, height: int) -> float:
        """Input pixels per frame pixel when a width x height frame is detected whole (and so in a window)."""
        return self._geometry(width, height)[0]

    @property
    def any_size(self) -> bool:
        """Whether a window or a coarse look runs at its own size (and so costs less than a whole frame)."""
        return self.card.input.size is None or self.card.input.any_size

    def _new_tensor(self, in_w: int, in_h: int) -> np.ndarray:
        shape = (1, 3, in_h, in_w) if self._nchw else (1, in_h, in_w, 3)
        return np.empty(shape, np.float32)

    def prepare(
        self, image: np.ndarray | JpegFrame, window: Window | None = None, coarse: float = 1.0
    ) -> Prepared:
        """BGR uint8 HxWx3 -> the card's input tensor: letterboxed top-left, zero pixels padding bottom/right.
        With a `window`, only that region of the image (clipped to it) is prepared; `coarse` < 1 scales it down
        further by that factor. A JpegFrame reveals what is read: the window's pixels (`reads`), else all."""
        if isinstance(image, JpegFrame):
            height, width = image.shape[:2]
            whole = (0, 0, width, height)
            image = image.reveal(self.reads(width, height, window) if window and coarse == 1 else whole)
        if (
            not isinstance(image, np.ndarray)
            or image.dtype != np.uint8
            or image.ndim != 3
            or image.shape[2] != 3
        ):
            raise BadImageError(
                f"detector input must be a BGR uint8 HxWx3 array, got "
                f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}"
            )
        height, width = image.shape[:2]
        if width == 0 or height == 0:
            raise BadImageError(f"image has no pixels ({width}x{height})")
        scale, (res_w, res_h), (in_w, in_h) = self._geometry(width, height, coarse)
        origin = (0.0, 0.0)
        if window is not None:
            (x1, y1, x2, y2), (in_w, in_h) = self._window((res_w, res_h), window, scale)
            origin = (x1 / scale, y1 / scale)
            image = self._scaled_part(image, (res_w, res_h), (x1, y1, x2, y2))
            res_h, res_w = image.shape[:2]
        elif (res_w, res_h) != (width, height):
            resized = self._resized.get((res_w, res_h), lambda: np.empty((res_h, res_w, 3), np.uint8))
            cv2.resize(image, (res_w, res_h), dst=resized, interpolation=cv2.INTER_LINEAR)
            image = resized
        tensor = self._tensors.get((in_w, in_h), lambda: self._new_tensor(in_w, in_h))
        frame = tensor[0]
        if self._nchw:
            # cv2.split into uint8 planes, then one contiguous convert: 3x faster than converting a transpose.
            source = self._planes.get((res_w, res_h), lambda: np.empty((3, res_h, res_w), np.uint8))
            cv2.split(image, list(source)[self._channels])  # an RGB card's planes are filled reversed
            region, below, right = frame[:, :res_h, :res_w], frame[:, res_h:], frame[:, :res_h, res_w:]
        else:
            source = image[:, :, self._channels]
            region, below, right = frame[:res_h, :res_w], frame[res_h:], frame[:res_h, res_w:]
        np.copyto(region, source, casting="unsafe")
        if not self._raw:
            region -= self._mean
            region *= self._inv_std
        below[...] = self._pad_value
        right[...] = self._pad_value
        return Prepared(tensor, scale, (width, height), origin)

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        if self._batcher is not None:
            return self._batcher(tensor)
        return self.session.run(self._output_names, {self.card.input.name: tensor})

    def _input_size(self, prepared: Prepared) -> tuple[int, int]:
        shape = prepared.tensor.shape
        return (shape[3], shape[2]) if self._nchw else (shape[2], shape[1])

    def _candidates(
        self, outputs: Sequence[np.ndarray], in_w: int, in_h: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(boxes (n, 4) corners, scores (n,), landmarks (n, 5, 2) or None) in input pixels, every score at
        or above the threshold."""
        raise NotImplementedError

    def decode(self, outputs: list[np.ndarray], prepared: Prepared) -> list[Detection]:
        boxes, scores, landmarks = self._candidates(outputs, *self._input_size(prepared))
        if not len(scores):
            return []
        cfg = self.config
        order = np.argsort(-scores, kind="stable")[: cfg.pre_nms_top_k]
        order = order[nms(boxes[order], cfg.nms_threshold)]
        width, height = prepared.image_size
        origin = np.asarray(prepared.origin, np.float32)
        boxes = boxes[order] / np.float32(prepared.scale) + np.tile(origin, 2)
        np.clip(boxes[:, 0::2], 0, width, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, height, out=boxes[:, 1::2])
        sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        chosen = np.flatnonzero(sides >= max(cfg.min_face_size, np.finfo(np.float32).tiny))[: cfg.top_k]
        points = None if landmarks is None else landmarks[order[chosen]] / np.float32(prepared.scale) + origin
        return [
            Detection(
                box=boxes[i].astype(np.float32),
                landmarks=None if points is None else points[n].astype(np.float32),
                score=float(scores[order[i]]),
            )
            for n, i in enumerate(chosen)
        ]

    def detect(
        self, image: np.ndarray | JpegFrame, window: Window | None = None, coarse: float = 1.0
    ) -> list[Detection]:
        """Faces in a BGR uint8 frame (or in a window of it), best score first, in the frame's own pixels."""
        prepared = self.prepare(image, window, coarse)
        return self.decode(self.infer(prepared.tensor), prepared)


class YuNetDetector(Detector):
    """Anchor-free, one prior per cell; decoded exactly as OpenCV's FaceDetectorYN::postProcess."""

    def _candidates(self, outputs, in_w, in_h):
        strides = self.card.params.get("strides", [8, 16, 32])
        levels = len(strides)
        boxes, scores, points = [], [], []
        for level, stride in enumerate(strides):
            grid = _cell_grid(in_w, in_h, stride, 1)
            cls, obj = outputs[level].reshape(-1), outputs[levels + level].reshape(-1)
            _check_count(self.card, f"output '{self._output_names[level]}'", len(cls), len(grid))
            keep, score = _yunet_scores(cls, obj, self.config.score_threshold)
            cells = grid[keep]
            box = outputs[2 * levels + level].reshape(-1, 4)[keep]
            centre = (cells + box[:, :2]) * stride
            half = np.exp(box[:, 2:]) * stride / 2
            boxes.append(np.hstack([centre - half, centre + half]))
            scores.append(score)
            points.append((outputs[3 * levels + level].reshape(-1, 5, 2)[keep] + cells[:, None]) * stride)
        return np.concatenate(boxes), np.concatenate(scores), np.concatenate(points)


class SCRFDDetector(Detector):
    """Anchor centres at (col, row) * stride, `anchors_per_cell` per cell; distances in stride units."""

    def _candidates(self, outputs, in_w, in_h):
        strides = self.card.params.get("strides", [8, 16, 32])
        per_cell = int(self.card.params.get("anchors_per_cell", 2))
        levels = len(strides)
        boxes, scores, points = [], [], []
        for level, stride in enumerate(strides):
            grid = _cell_grid(in_w, in_h, stride, per_cell)
            score = outputs[level].reshape(-1)  # 500m has no batch axis, 2.5g has one
            _check_count(self.card, f"output '{self._output_names[level]}'", len(score), len(grid))
            keep = np.flatnonzero(score >= self.config.score_threshold)
            centre = grid[keep] * stride
            distance = outputs[levels + level].reshape(-1, 4)[keep] * stride
            boxes.append(np.hstack([centre - distance[:, :2], centre + distance[:, 2:]]))
            scores.append(score[keep])
            kps = outputs[2 * levels + level].reshape(-1, 5, 2)[keep]
            points.append(kps * stride + centre[:, None])
        return np.concatenate(boxes), np.concatenate(scores), np.concatenate(points)


class RetinaFaceDetector(Detector):
    """SSD-style priors and variances from the card; class scores arrive soft-maxed (column 1 = face)."""

    def _candidates(self, outputs, in_w, in_h):
        params = self.card.params
        strides = tuple(params.get("strides", (8, 16, 32)))
        min_sizes = tuple(
            tuple(sizes) for sizes in params.get("min_sizes", ((16, 32), (64, 128), (256, 512)))
        )
        centre_var, size_var = params.get("variances", (0.1, 0.2))
        priors = _retinaface_priors(in_w, in_h, strides, min_sizes)
        score = outputs[1].reshape(-1, 2)[:, 1]
        _check_count(self.card, f"output '{self._output_names[1]}'", len(score), len(priors))
        keep = np.flatnonzero(score >= self.config.score_threshold)
        prior = priors[keep]
        loc = outputs[0].reshape(-1, 4)[keep]
        centre = prior[:, :2] + loc[:, :2] * centre_var * prior[:, 2:]
        half = prior[:, 2:] * np.exp(loc[:, 2:] * size_var) / 2
        landmarks = outputs[2].reshape(-1, 5, 2)[keep]
        points = prior[:, None, :2] + landmarks * centre_var * prior[:, None, 2:]
        return np.hstack([centre - half, centre + half]), score[keep], points.astype(np.float32)


class UltraFaceDetector(Detector):
    """Relative corner boxes, soft-maxed scores; no landmarks, so its detections cannot be aligned."""

    def _candidates(self, outputs, in_w, in_h):
        score = outputs[0].reshape(-1, 2)[:, 1]
        keep = np.flatnonzero(score >= self.config.score_threshold)
        boxes = outputs[1].reshape(-1, 4)[keep] * np.asarray([in_w, in_h, in_w, in_h], np.float32)
        return boxes, score[keep], None


DETECTORS: dict[str, type[Detector]] = {
    "yunet": YuNetDetector,
    "scrfd": SCRFDDetector,
    "retinaface": RetinaFaceDetector,
    "ultraface": UltraFaceDetector,
}


def create_detector(
    card: ModelCard,
    session: onnxruntime.InferenceSession,
    config: DetectorConfig = DetectorConfig(),
) -> Detector:
    if card.family not in DETECTORS:
        raise CardError(
            f"model card '{card.name}': unknown detector family '{card.family}' "
            f"(known: {', '.join(sorted(DETECTORS))})"
        )
    return DETECTORS[card.family](card, session, config)
