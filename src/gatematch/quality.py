"""Face image quality: is this face good enough to enroll, or to trust a gate decision on?

A low-quality probe (tiny, turned, blurred, dark) gives an unreliable comparison score, and a low-quality
enrollment photo poisons every later comparison. Each component is measured, compared with its own configurable
threshold, and every failing component is named, so an operator sees why a face was refused. Thresholds that
are 0 (or None) switch their check off.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np
import onnxruntime as ort

from gatematch.align import ARCFACE_TEMPLATE
from gatematch.cards import ModelCard
from gatematch.detect import Detection
from gatematch.errors import CardError, ModelError
from gatematch.preprocess import CROP_SIZE, card_tensor, check_crops, model_output

# Central face region of the aligned 112x112 crop (brows to chin, cheek to cheek): exposure and sharpness are
# measured here, so black warp borders and background do not count.
FACE_REGION = (slice(24, 108), slice(20, 92))

# Head-pose model (see `head_pose`): nose-tip depth in front of the eye/mouth plane, in inter-eye distances
# (anthropometric mean: about 25 mm in front of the pupils for a 63 mm interpupillary distance).
_NOSE_DEPTH = 0.40
# Frontal nose height between eye line (0) and mouth line (1). The ArcFace template says 0.495, but YuNet puts
# the nose tip lower: on frontal photos (yale, att_orl, examples6) the median is 0.54-0.58, so 0.56 is used;
# with 0.495 every frontal face would read about -12 degrees of pitch.
_FRONTAL_NOSE_RATIO = 0.56
_MOUTH_DROP = float(  # eye line to mouth line, in inter-eye distances (ArcFace template)
    ((ARCFACE_TEMPLATE[3, 1] + ARCFACE_TEMPLATE[4, 1]) - (ARCFACE_TEMPLATE[0, 1] + ARCFACE_TEMPLATE[1, 1]))
    / 2
    / (ARCFACE_TEMPLATE[1, 0] - ARCFACE_TEMPLATE[0, 0])
)


@dataclass(frozen=True)
class QualityThresholds:
    """Defaults are for a GATE PROBE (a cooperative traveller in front of a camera); see `enrollment()`.

    Measured on ../shared/faces with YuNet + w600k (40 sharp frontal celeba_wild faces degraded on purpose):
    - inter-eye 24 px: downscaled to 24 px a face keeps cosine 0.96 to its full-size embedding (16 px: 0.91,
      12 px: 0.82).
    - sharpness 40 (Laplacian variance on the face region): Gaussian blur of 1.5 crop px leaves median 32 and
      cosine 0.87 to the sharp embedding; 99% of celeba_wild faces score above 54.
    - brightness 40..225 and contrast 12: the darkest Extended Yale B faces that are still detected score 26-40;
      99% of celeba_wild faces are above 68 and every set's contrast is above 22.
    - yaw 40 / pitch 30 degrees: celeba_wild 5-95% yaw is -41..+37; beyond 40 faces are visibly three-quarter.
    - LightQNet 0.25: sharp faces score about 0.6 whatever their size; it falls only with strong blur (0.49 at
      3 px, 0.20 at 4 px), so it is a second blur/occlusion guard rather than a size check.
    """

    min_inter_eye_px: float = 24.0
    max_abs_yaw_deg: float = 40.0
    max_abs_pitch_deg: float = 30.0
    min_sharpness: float = 40.0
    min_brightness: float = 40.0
    max_brightness: float = 225.0
    min_contrast: float = 12.0
    min_detector_score: float = 0.6
    min_lightqnet: float | None = 0.25

    @classmethod
    def enrollment(cls) -> QualityThresholds:
        """Stricter, for document/enrollment photos: large (embeddings saturate by 40 px), near-frontal, sharp
        (a 1 px blur already drops the median sharpness to 67), well exposed."""
        return cls(
            min_inter_eye_px=60.0,
            max_abs_yaw_deg=20.0,
            max_abs_pitch_deg=20.0,
            min_sharpness=80.0,
            min_brightness=60.0,
            max_brightness=210.0,
            min_contrast=20.0,
            min_detector_score=0.8,
            min_lightqnet=0.4,
        )


GATE_PROBE = QualityThresholds()
ENROLLMENT = QualityThresholds.enrollment()


@dataclass(frozen=True)
class QualityReport:
    passed: bool
    reasons: tuple[str, ...]  # one human-readable line per failing component
    inter_eye_px: float
    yaw_deg: float
    pitch_deg: float
    sharpness: float
    brightness: float
    contrast: float
    detector_score: float
    lightqnet: float | None

    def as_dict(self) -> dict:
        values = asdict(self)
        values["reasons"] = list(self.reasons)
        return values


def head_pose(landmarks: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) in degrees estimated from the 5 landmarks; roll is removed first.

    Weak-perspective model: eyes and mouth corners lie roughly in one plane and the nose tip stands
    `_NOSE_DEPTH` inter-eye distances in front of it. In the frame whose x axis runs along the eye line:
    - yaw: the nose's sideways offset from the eye-mouth midline, over half the (foreshortened) inter-eye
      distance, equals 2 * depth * tan(yaw). Positive = nose towards image right.
    - pitch: the nose's height between eye line and mouth line departs from the frontal ArcFace-template ratio
      by depth / eye-to-mouth * tan(pitch). Positive = face tilted up (nose moves towards the eyes).
    Accurate to roughly +-10 degrees (faces differ in nose length); meant for refusing turned heads, not for
    measuring them.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    eye_mid = (points[0] + points[1]) / 2
    axis = points[1] - points[0]
    eye_distance = float(np.hypot(*axis))
    if eye_distance < 1e-6:
        return 0.0, 0.0
    cos, sin = axis / eye_distance
    local = (points - eye_mid) @ np.array([[cos, -sin], [sin, cos]])  # rotate the eye line onto +x
    nose = local[2]
    mouth = (local[3] + local[4]) / 2
    if mouth[1] <= 1e-6:  # mouth not below the eyes: landmarks are not a face the model can describe
        return float("nan"), float("nan")
    midline_x = mouth[0] * nose[1] / mouth[1]
    yaw = math.degrees(math.atan((nose[0] - midline_x) / (eye_distance / 2) / (2 * _NOSE_DEPTH)))
    ratio = nose[1] / mouth[1]
    pitch = math.degrees(math.atan((_FRONTAL_NOSE_RATIO - ratio) * _MOUTH_DROP / _NOSE_DEPTH))
    return yaw, pitch


def crop_statistics(crop: np.ndarray) -> tuple[float, float, float]:
    """(sharpness, brightness, contrast) of the face region: variance of the Laplacian, grey mean, grey std."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)[FACE_REGION]
    sharpness = float(cv2.Laplacian(grey, cv2.CV_32F).var())
    mean, std = cv2.meanStdDev(grey)
    return sharpness, float(mean[0, 0]), float(std[0, 0])


class LightQNet:
    """LightQNet (Chen et al. 2021) learned face-quality score; higher = better, about 0.6 on a sharp frontal face."""

    def __init__(self, card: ModelCard, session: ort.InferenceSession):
        if card.task != "quality":
            raise CardError(f"model '{card.name}' is a {card.task}, not a quality model")
        if card.input.size is None:
            raise CardError(f"quality model '{card.name}' needs a fixed input size")
        self.card = card
        self.session = session
        self._output = model_output(card, session)

    def score(self, crops: np.ndarray) -> np.ndarray:
        """(N,) scores for (N,112,112,3) BGR aligned crops, resized to the card's input size and batched."""
        crops = check_crops(crops, CROP_SIZE)
        if len(crops) == 0:
            return np.zeros(0, dtype=np.float32)
        width, height = self.card.input.size
        resized = np.stack([cv2.resize(c, (width, height), interpolation=cv2.INTER_LINEAR) for c in crops])
        out = self.session.run([self._output], {self.card.input.name: card_tensor(resized, self.card.input)})[
            0
        ]
        if out.size != len(crops):
            raise ModelError(
                f"quality model '{self.card.name}': output shape {out.shape} for {len(crops)} crops"
            )
        return out.reshape(-1).astype(np.float32)


def _below(value: float, limit: float | None, what: str, unit: str = "") -> str | None:
    if limit and value < limit:
        return f"{what} {value:.3g}{unit} < {limit:g}{unit}"
    return None


class QualityAssessor:
    def __init__(self, thresholds: QualityThresholds = GATE_PROBE, lightqnet: LightQNet | None = None):
        self.thresholds = thresholds
        self.lightqnet = lightqnet

    def assess(
        self, detections: Sequence[Detection], crops: np.ndarray, learned_if_passing: bool = False
    ) -> list[QualityReport]:
        """One report per detection; `crops[i]` is detection i aligned by `norm_crop` (N,112,112,3).

        `learned_if_passing`: LightQNet scores only faces that pass every other check (a gate stream's frames,
        where a refused face's reasons are information, not a decision); the others report `lightqnet` None.
        """
        crops = check_crops(crops, CROP_SIZE)
        if len(detections) != len(crops):
            raise ValueError(f"{len(detections)} detections but {len(crops)} crops")
        reports = [self._report(det, crop) for det, crop in zip(detections, crops, strict=True)]
        if self.lightqnet is None or not len(crops):
            return reports
        scored = [i for i, r in enumerate(reports) if r.passed or not learned_if_passing]
        learned = self.lightqnet.score(crops[scored] if len(scored) < len(crops) else crops) if scored else []
        for i, score in zip(scored, learned, strict=True):
            reports[i] = self._learned(reports[i], float(score))
        return reports

    def _report(self, det: Detection, crop: np.ndarray) -> QualityReport:
        """Every check but LightQNet's."""
        if det.landmarks is None:
            raise ValueError("quality needs landmarks: the detection was not alignable")
        t = self.thresholds
        inter_eye = float(np.hypot(*(det.landmarks[1] - det.landmarks[0])))
        yaw, pitch = head_pose(det.landmarks)
        sharpness, brightness, contrast = crop_statistics(crop)
        reasons = [
            _below(inter_eye, t.min_inter_eye_px, "face too small: inter-eye", " px"),
            _below(sharpness, t.min_sharpness, "too blurred: sharpness"),
            _below(brightness, t.min_brightness, "too dark: brightness"),
            _below(contrast, t.min_contrast, "too flat: contrast"),
            _below(det.score, t.min_detector_score, "uncertain face: detector score"),
        ]
        if t.max_abs_yaw_deg and not abs(yaw) <= t.max_abs_yaw_deg:  # NaN pose fails too
            reasons.append(f"head turned: yaw {yaw:+.0f} deg, limit +-{t.max_abs_yaw_deg:g}")
        if t.max_abs_pitch_deg and not abs(pitch) <= t.max_abs_pitch_deg:
            reasons.append(f"head tilted: pitch {pitch:+.0f} deg, limit +-{t.max_abs_pitch_deg:g}")
        if t.max_brightness and brightness > t.max_brightness:
            reasons.append(f"overexposed: brightness {brightness:.1f} > {t.max_brightness:g}")
        failed = tuple(r for r in reasons if r is not None)
        return QualityReport(
            passed=not failed,
            reasons=failed,
            inter_eye_px=inter_eye,
            yaw_deg=yaw,
            pitch_deg=pitch,
            sharpness=sharpness,
            brightness=brightness,
            contrast=contrast,
            detector_score=float(det.score),
            lightqnet=None,
        )

    def _learned(self, report: QualityReport, learned: float) -> QualityReport:
        """The report with LightQNet's score, and its reason when it is too low."""
        reason = _below(learned, self.thresholds.min_lightqnet, "low learned quality: LightQNet")
        reasons = (*report.reasons, reason) if reason else report.reasons
        return replace(report, passed=not reasons, reasons=reasons, lightqnet=learned)
