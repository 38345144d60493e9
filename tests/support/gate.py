"""Gate-camera frames made from real photos and videos: the face placed where a gate camera sees travelers.

Different photos of one person frame the face differently; at a gate every traveler stands in the same spot.
`at_gate` scales and moves an image so its face box lands on the gate's spot (a similarity transform: the face
itself is not altered), so consecutive frames of different sources look like one camera's view.
"""

from __future__ import annotations

import cv2
import numpy as np

from gatematch.facepipeline import FacePipeline

CANVAS = (640, 480)  # width, height
SPOT = (320.0, 210.0)  # where a traveler's face centre is
FACE_WIDTH = 150.0


def at_gate(
    image: np.ndarray, box: np.ndarray, spot: tuple[float, float] = SPOT, face_width: float = FACE_WIDTH
) -> np.ndarray:
    scale = face_width / float(box[2] - box[0])
    cx, cy = float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2
    matrix = np.float32([[scale, 0, spot[0] - scale * cx], [0, scale, spot[1] - scale * cy]])
    return cv2.warpAffine(image, matrix, CANVAS, flags=cv2.INTER_AREA, borderValue=(90, 90, 90))


def placed(pipeline: FacePipeline, image: np.ndarray, **where: object) -> np.ndarray:
    """`image` with its main face moved to the gate's spot (the image itself when it has no face)."""
    face = pipeline.analyze_batch([image])[0].primary()
    return image if face is None else at_gate(image, face.detection.box, **where)


def jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


def simulated_print(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The photo printed on paper and held up to the camera: shrunk, white border, slight perspective, flatter
    tones, defocus, sensor noise, JPEG (a stand-in: ../shared has no captured attacks)."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (int(w * 0.6), int(h * 0.6)), interpolation=cv2.INTER_AREA)
    paper = cv2.copyMakeBorder(small, 12, 12, 12, 12, cv2.BORDER_CONSTANT, value=(235, 235, 235))
    canvas = np.full((h, w, 3), 90, np.uint8)
    top, left = (h - paper.shape[0]) // 2, (w - paper.shape[1]) // 2
    canvas[top : top + paper.shape[0], left : left + paper.shape[1]] = paper
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    moved = (corners + rng.uniform(-0.04, 0.04, (4, 2)) * [w, h]).astype(np.float32)
    warped = cv2.warpPerspective(canvas, cv2.getPerspectiveTransform(corners, moved), (w, h), borderValue=90)
    flat = cv2.GaussianBlur(warped.astype(np.float32) * 0.8 + 30, (0, 0), 1.0) + rng.normal(
        0, 4, warped.shape
    )
    encoded = cv2.imencode(".jpg", np.clip(flat, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 70])[1]
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)
