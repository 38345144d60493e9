import datetime

from gatematch.v1 import flight_pb2 as _flight_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    DECISION_MATCH: _ClassVar[Decision]
    DECISION_NO_MATCH: _ClassVar[Decision]
    DECISION_NO_FACE: _ClassVar[Decision]
    DECISION_QUALITY_FAILED: _ClassVar[Decision]
    DECISION_MULTIPLE_FACES: _ClassVar[Decision]
    DECISION_LIVENESS_FAILED: _ClassVar[Decision]
    DECISION_BUDGET_EXCEEDED: _ClassVar[Decision]

class PixelType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PIXEL_TYPE_UNSPECIFIED: _ClassVar[PixelType]
    PIXEL_TYPE_UINT8: _ClassVar[PixelType]
    PIXEL_TYPE_UINT16: _ClassVar[PixelType]
    PIXEL_TYPE_FLOAT32: _ClassVar[PixelType]

class ChannelOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANNEL_ORDER_UNSPECIFIED: _ClassVar[ChannelOrder]
    CHANNEL_ORDER_BGR: _ClassVar[ChannelOrder]
    CHANNEL_ORDER_RGB: _ClassVar[ChannelOrder]
DECISION_UNSPECIFIED: Decision
DECISION_MATCH: Decision
DECISION_NO_MATCH: Decision
DECISION_NO_FACE: Decision
DECISION_QUALITY_FAILED: Decision
DECISION_MULTIPLE_FACES: Decision
DECISION_LIVENESS_FAILED: Decision
DECISION_BUDGET_EXCEEDED: Decision
PIXEL_TYPE_UNSPECIFIED: PixelType
PIXEL_TYPE_UINT8: PixelType
PIXEL_TYPE_UINT16: PixelType
PIXEL_TYPE_FLOAT32: PixelType
CHANNEL_ORDER_UNSPECIFIED: ChannelOrder
CHANNEL_ORDER_BGR: ChannelOrder
CHANNEL_ORDER_RGB: ChannelOrder

class RawImage(_message.Message):
    __slots__ = ("pixels", "width", "height", "channels", "dtype", "channel_order")
    PIXELS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ORDER_FIELD_NUMBER: _ClassVar[int]
    pixels: bytes
    width: int
    height: int
    channels: int
    dtype: PixelType
    channel_order: ChannelOrder
    def __init__(self, pixels: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., channels: _Optional[int] = ..., dtype: _Optional[_Union[PixelType, str]] = ..., channel_order: _Optional[_Union[ChannelOrder, str]] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("encoded", "raw")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    raw: RawImage
    def __init__(self, encoded: _Optional[bytes] = ..., raw: _Optional[_Union[RawImage, _Mapping]] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("camera_id", "gate_id", "flight_id", "captured_at", "sequence", "image", "flight_date", "direction")
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    GATE_ID_FIELD_NUMBER: _ClassVar[int]
    FLIGHT_ID_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_AT_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    FLIGHT_DATE_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    gate_id: str
    flight_id: str
    captured_at: _timestamp_pb2.Timestamp
    sequence: int
    image: Image
    flight_date: str
    direction: _flight_pb2.Direction
    def __init__(self, camera_id: _Optional[str] = ..., gate_id: _Optional[str] = ..., flight_id: _Optional[str] = ..., captured_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sequence: _Optional[int] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., flight_date: _Optional[str] = ..., direction: _Optional[_Union[_flight_pb2.Direction, str]] = ...) -> None: ...

class MatchRequest(_message.Message):
    __slots__ = ("frame", "max_candidates", "include_ranking")
    FRAME_FIELD_NUMBER: _ClassVar[int]
    MAX_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_RANKING_FIELD_NUMBER: _ClassVar[int]
    frame: Frame
    max_candidates: int
    include_ranking: bool
    def __init__(self, frame: _Optional[_Union[Frame, _Mapping]] = ..., max_candidates: _Optional[int] = ..., include_ranking: _Optional[bool] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("traveler_id", "score", "confidence", "estimated_fpir")
    TRAVELER_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_FPIR_FIELD_NUMBER: _ClassVar[int]
    traveler_id: str
    score: float
    confidence: float
    estimated_fpir: float
    def __init__(self, traveler_id: _Optional[str] = ..., score: _Optional[float] = ..., confidence: _Optional[float] = ..., estimated_fpir: _Optional[float] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ...) -> None: ...

class FaceObservation(_message.Message):
    __slots__ = ("box", "detection_score", "quality_passed", "quality_reasons", "liveness", "encounter_id", "assessment_skipped")
    BOX_FIELD_NUMBER: _ClassVar[int]
    DETECTION_SCORE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_PASSED_FIELD_NUMBER: _ClassVar[int]
    QUALITY_REASONS_FIELD_NUMBER: _ClassVar[int]
    LIVENESS_FIELD_NUMBER: _ClassVar[int]
    ENCOUNTER_ID_FIELD_NUMBER: _ClassVar[int]
    ASSESSMENT_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    box: Box
    detection_score: float
    quality_passed: bool
    quality_reasons: _containers.RepeatedScalarFieldContainer[str]
    liveness: float
    encounter_id: int
    assessment_skipped: bool
    def __init__(self, box: _Optional[_Union[Box, _Mapping]] = ..., detection_score: _Optional[float] = ..., quality_passed: _Optional[bool] = ..., quality_reasons: _Optional[_Iterable[str]] = ..., liveness: _Optional[float] = ..., encounter_id: _Optional[int] = ..., assessment_skipped: _Optional[bool] = ...) -> None: ...

class FrameError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class MatchResponse(_message.Message):
    __slots__ = ("decision", "candidates", "quality_reasons", "stage_ms", "faces", "flight_id", "gallery_version", "sequence", "threshold", "budget_ms", "false_match_probability", "flight_date", "direction")
    class StageMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    DECISION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    QUALITY_REASONS_FIELD_NUMBER: _ClassVar[int]
    STAGE_MS_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    FLIGHT_ID_FIELD_NUMBER: _ClassVar[int]
    GALLERY_VERSION_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    FALSE_MATCH_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    FLIGHT_DATE_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    quality_reasons: _containers.RepeatedScalarFieldContainer[str]
    stage_ms: _containers.ScalarMap[str, float]
    faces: _containers.RepeatedCompositeFieldContainer[FaceObservation]
    flight_id: str
    gallery_version: str
    sequence: int
    threshold: float
    budget_ms: float
    false_match_probability: float
    flight_date: str
    direction: _flight_pb2.Direction
    def __init__(self, decision: _Optional[_Union[Decision, str]] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., quality_reasons: _Optional[_Iterable[str]] = ..., stage_ms: _Optional[_Mapping[str, float]] = ..., faces: _Optional[_Iterable[_Union[FaceObservation, _Mapping]]] = ..., flight_id: _Optional[str] = ..., gallery_version: _Optional[str] = ..., sequence: _Optional[int] = ..., threshold: _Optional[float] = ..., budget_ms: _Optional[float] = ..., false_match_probability: _Optional[float] = ..., flight_date: _Optional[str] = ..., direction: _Optional[_Union[_flight_pb2.Direction, str]] = ...) -> None: ...

class FrameObservation(_message.Message):
    __slots__ = ("sequence", "captured_at", "status", "faces", "stage_ms", "dropped_frames", "error", "passed_over")
    class StageMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    STAGE_MS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FRAMES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PASSED_OVER_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    captured_at: _timestamp_pb2.Timestamp
    status: Decision
    faces: _containers.RepeatedCompositeFieldContainer[FaceObservation]
    stage_ms: _containers.ScalarMap[str, float]
    dropped_frames: int
    error: FrameError
    passed_over: bool
    def __init__(self, sequence: _Optional[int] = ..., captured_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[Decision, str]] = ..., faces: _Optional[_Iterable[_Union[FaceObservation, _Mapping]]] = ..., stage_ms: _Optional[_Mapping[str, float]] = ..., dropped_frames: _Optional[int] = ..., error: _Optional[_Union[FrameError, _Mapping]] = ..., passed_over: _Optional[bool] = ...) -> None: ...

class EncounterDecision(_message.Message):
    __slots__ = ("encounter_id", "decision", "candidates", "frames_used", "first_sequence", "last_sequence", "elapsed_ms", "flight_id", "gallery_version", "threshold", "dropped_frames", "tailgating", "false_match_probability", "frames_seen", "flight_date", "direction")
    ENCOUNTER_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    FRAMES_USED_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_MS_FIELD_NUMBER: _ClassVar[int]
    FLIGHT_ID_FIELD_NUMBER: _ClassVar[int]
    GALLERY_VERSION_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FRAMES_FIELD_NUMBER: _ClassVar[int]
    TAILGATING_FIELD_NUMBER: _ClassVar[int]
    FALSE_MATCH_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    FRAMES_SEEN_FIELD_NUMBER: _ClassVar[int]
    FLIGHT_DATE_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    encounter_id: int
    decision: Decision
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    frames_used: int
    first_sequence: int
    last_sequence: int
    elapsed_ms: float
    flight_id: str
    gallery_version: str
    threshold: float
    dropped_frames: int
    tailgating: bool
    false_match_probability: float
    frames_seen: int
    flight_date: str
    direction: _flight_pb2.Direction
    def __init__(self, encounter_id: _Optional[int] = ..., decision: _Optional[_Union[Decision, str]] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., frames_used: _Optional[int] = ..., first_sequence: _Optional[int] = ..., last_sequence: _Optional[int] = ..., elapsed_ms: _Optional[float] = ..., flight_id: _Optional[str] = ..., gallery_version: _Optional[str] = ..., threshold: _Optional[float] = ..., dropped_frames: _Optional[int] = ..., tailgating: _Optional[bool] = ..., false_match_probability: _Optional[float] = ..., frames_seen: _Optional[int] = ..., flight_date: _Optional[str] = ..., direction: _Optional[_Union[_flight_pb2.Direction, str]] = ...) -> None: ...

class StreamEvent(_message.Message):
    __slots__ = ("observation", "decision")
    OBSERVATION_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    observation: FrameObservation
    decision: EncounterDecision
    def __init__(self, observation: _Optional[_Union[FrameObservation, _Mapping]] = ..., decision: _Optional[_Union[EncounterDecision, _Mapping]] = ...) -> None: ...

class ReferenceTemplate(_message.Message):
    __slots__ = ("embedder", "embedder_sha256", "values")
    EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_SHA256_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    embedder: str
    embedder_sha256: str
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, embedder: _Optional[str] = ..., embedder_sha256: _Optional[str] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("frame", "reference_photo", "reference_template")
    FRAME_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_PHOTO_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    frame: Frame
    reference_photo: Image
    reference_template: ReferenceTemplate
    def __init__(self, frame: _Optional[_Union[Frame, _Mapping]] = ..., reference_photo: _Optional[_Union[Image, _Mapping]] = ..., reference_template: _Optional[_Union[ReferenceTemplate, _Mapping]] = ...) -> None: ...

class VerifyReference(_message.Message):
    __slots__ = ("photo", "template")
    PHOTO_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    photo: Image
    template: ReferenceTemplate
    def __init__(self, photo: _Optional[_Union[Image, _Mapping]] = ..., template: _Optional[_Union[ReferenceTemplate, _Mapping]] = ...) -> None: ...

class VerifyStreamRequest(_message.Message):
    __slots__ = ("reference", "frame")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    reference: VerifyReference
    frame: Frame
    def __init__(self, reference: _Optional[_Union[VerifyReference, _Mapping]] = ..., frame: _Optional[_Union[Frame, _Mapping]] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("decision", "score", "false_match_rate", "threshold", "target_fmr", "quality_reasons", "stage_ms", "faces", "sequence", "budget_ms")
    class StageMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    DECISION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    FALSE_MATCH_RATE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TARGET_FMR_FIELD_NUMBER: _ClassVar[int]
    QUALITY_REASONS_FIELD_NUMBER: _ClassVar[int]
    STAGE_MS_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    score: float
    false_match_rate: float
    threshold: float
    target_fmr: float
    quality_reasons: _containers.RepeatedScalarFieldContainer[str]
    stage_ms: _containers.ScalarMap[str, float]
    faces: _containers.RepeatedCompositeFieldContainer[FaceObservation]
    sequence: int
    budget_ms: float
    def __init__(self, decision: _Optional[_Union[Decision, str]] = ..., score: _Optional[float] = ..., false_match_rate: _Optional[float] = ..., threshold: _Optional[float] = ..., target_fmr: _Optional[float] = ..., quality_reasons: _Optional[_Iterable[str]] = ..., stage_ms: _Optional[_Mapping[str, float]] = ..., faces: _Optional[_Iterable[_Union[FaceObservation, _Mapping]]] = ..., sequence: _Optional[int] = ..., budget_ms: _Optional[float] = ...) -> None: ...
