import datetime

from gatematch.v1 import flight_pb2 as _flight_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GalleryHeader(_message.Message):
    __slots__ = ("flight_id", "departure_utc", "pack", "retention", "embedder", "embedder_sha256", "embedding_size", "direction")
    FLIGHT_ID_FIELD_NUMBER: _ClassVar[int]
    DEPARTURE_UTC_FIELD_NUMBER: _ClassVar[int]
    PACK_FIELD_NUMBER: _ClassVar[int]
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_SHA256_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_SIZE_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    flight_id: str
    departure_utc: _timestamp_pb2.Timestamp
    pack: str
    retention: _duration_pb2.Duration
    embedder: str
    embedder_sha256: str
    embedding_size: int
    direction: _flight_pb2.Direction
    def __init__(self, flight_id: _Optional[str] = ..., departure_utc: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pack: _Optional[str] = ..., retention: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., embedder: _Optional[str] = ..., embedder_sha256: _Optional[str] = ..., embedding_size: _Optional[int] = ..., direction: _Optional[_Union[_flight_pb2.Direction, str]] = ...) -> None: ...

class EnrollmentPhoto(_message.Message):
    __slots__ = ("traveler_id", "image")
    TRAVELER_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    traveler_id: str
    image: bytes
    def __init__(self, traveler_id: _Optional[str] = ..., image: _Optional[bytes] = ...) -> None: ...

class Template(_message.Message):
    __slots__ = ("traveler_id", "values")
    TRAVELER_ID_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    traveler_id: str
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, traveler_id: _Optional[str] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class PhotoChunk(_message.Message):
    __slots__ = ("photos",)
    PHOTOS_FIELD_NUMBER: _ClassVar[int]
    photos: _containers.RepeatedCompositeFieldContainer[EnrollmentPhoto]
    def __init__(self, photos: _Optional[_Iterable[_Union[EnrollmentPhoto, _Mapping]]] = ...) -> None: ...

class TemplateChunk(_message.Message):
    __slots__ = ("templates",)
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    templates: _containers.RepeatedCompositeFieldContainer[Template]
    def __init__(self, templates: _Optional[_Iterable[_Union[Template, _Mapping]]] = ...) -> None: ...

class LoadCommit(_message.Message):
    __slots__ = ("photo_count", "template_count")
    PHOTO_COUNT_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    photo_count: int
    template_count: int
    def __init__(self, photo_count: _Optional[int] = ..., template_count: _Optional[int] = ...) -> None: ...

class LoadGalleryRequest(_message.Message):
    __slots__ = ("header", "photos", "templates", "commit")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    PHOTOS_FIELD_NUMBER: _ClassVar[int]
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    header: GalleryHeader
    photos: PhotoChunk
    templates: TemplateChunk
    commit: LoadCommit
    def __init__(self, header: _Optional[_Union[GalleryHeader, _Mapping]] = ..., photos: _Optional[_Union[PhotoChunk, _Mapping]] = ..., templates: _Optional[_Union[TemplateChunk, _Mapping]] = ..., commit: _Optional[_Union[LoadCommit, _Mapping]] = ...) -> None: ...

class EnrollmentRejection(_message.Message):
    __slots__ = ("traveler_id", "reason")
    TRAVELER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    traveler_id: str
    reason: str
    def __init__(self, traveler_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GalleryInfo(_message.Message):
    __slots__ = ("flight_id", "version", "departure_utc", "expires_at", "created_at", "pack", "embedder", "embedder_sha256", "traveler_count", "template_count", "expired", "direction", "flight_date", "content_hash")
    FLIGHT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEPARTURE_UTC_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    PACK_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_SHA256_FIELD_NUMBER: _ClassVar[int]
    TRAVELER_COUNT_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    FLIGHT_DATE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    flight_id: str
    version: str
    departure_utc: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    created_at: _timestamp_pb2.Timestamp
    pack: str
    embedder: str
    embedder_sha256: str
    traveler_count: int
    template_count: int
    expired: bool
    direction: _flight_pb2.Direction
    flight_date: str
    content_hash: str
    def __init__(self, flight_id: _Optional[str] = ..., version: _Optional[str] = ..., departure_utc: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pack: _Optional[str] = ..., embedder: _Optional[str] = ..., embedder_sha256: _Optional[str] = ..., traveler_count: _Optional[int] = ..., template_count: _Optional[int] = ..., expired: _Optional[bool] = ..., direction: _Optional[_Union[_flight_pb2.Direction, str]] = ..., flight_date: _Optional[str] = ..., content_hash: _Optional[str] = ...) -> None: ...

class LoadGalleryResponse(_message.Message):
    __slots__ = ("gallery", "rejected")
    GALLERY_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    gallery: GalleryInfo
    rejected: _containers.RepeatedCompositeFieldContainer[EnrollmentRejection]
    def __init__(self, gallery: _Optional[_Union[GalleryInfo, _Mapping]] = ..., rejected: _Optional[_Iterable[_Union[EnrollmentRejection, _Mapping]]] = ...) -> None: ...

class GetGalleryRequest(_message.Message):
    __slots__ = ("flight_id", "flight_date", "direction")
    FLIGHT_ID_FIELD_NUMBER: _ClassVar[int]
    FLIGHT_DATE_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    flight_id: str
    flight_date: str
    direction: _flight_pb2.Direction
    def __init__(self, flight_id: _Optional[str] = ..., flight_date: _Optional[str] = ..., direction: _Optional[_Union[_flight_pb2.Direction, str]] = ...) -> None: ...

class ListGalleriesRequest(_message.Message):
    __slots__ = ("include_expired",)
    INCLUDE_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    include_expired: bool
    def __init__(self, include_expired: _Optional[bool] = ...) -> None: ...

class ListGalleriesResponse(_message.Message):
    __slots__ = ("galleries",)
    GALLERIES_FIELD_NUMBER: _ClassVar[int]
    galleries: _containers.RepeatedCompositeFieldContainer[GalleryInfo]
    def __init__(self, galleries: _Optional[_Iterable[_Union[GalleryInfo, _Mapping]]] = ...) -> None: ...

class DeleteGalleryRequest(_message.Message):
    __slots__ = ("flight_id", "reason", "flight_date", "direction")
    FLIGHT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FLIGHT_DATE_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    flight_id: str
    reason: str
    flight_date: str
    direction: _flight_pb2.Direction
    def __init__(self, flight_id: _Optional[str] = ..., reason: _Optional[str] = ..., flight_date: _Optional[str] = ..., direction: _Optional[_Union[_flight_pb2.Direction, str]] = ...) -> None: ...

class DeleteGalleryResponse(_message.Message):
    __slots__ = ("deleted", "templates_purged")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    TEMPLATES_PURGED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    templates_purged: int
    def __init__(self, deleted: _Optional[bool] = ..., templates_purged: _Optional[int] = ...) -> None: ...

class UpdateHeader(_message.Message):
    __slots__ = ("flight_id", "flight_date", "direction", "remove", "embedder", "embedder_sha256", "reason")
    FLIGHT_ID_FIELD_NUMBER: _ClassVar[int]
    FLIGHT_DATE_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_SHA256_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    flight_id: str
    flight_date: str
    direction: _flight_pb2.Direction
    remove: _containers.RepeatedScalarFieldContainer[str]
    embedder: str
    embedder_sha256: str
    reason: str
    def __init__(self, flight_id: _Optional[str] = ..., flight_date: _Optional[str] = ..., direction: _Optional[_Union[_flight_pb2.Direction, str]] = ..., remove: _Optional[_Iterable[str]] = ..., embedder: _Optional[str] = ..., embedder_sha256: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class UpdateGalleryRequest(_message.Message):
    __slots__ = ("header", "photos", "templates", "commit")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    PHOTOS_FIELD_NUMBER: _ClassVar[int]
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    header: UpdateHeader
    photos: PhotoChunk
    templates: TemplateChunk
    commit: LoadCommit
    def __init__(self, header: _Optional[_Union[UpdateHeader, _Mapping]] = ..., photos: _Optional[_Union[PhotoChunk, _Mapping]] = ..., templates: _Optional[_Union[TemplateChunk, _Mapping]] = ..., commit: _Optional[_Union[LoadCommit, _Mapping]] = ...) -> None: ...

class UpdateGalleryResponse(_message.Message):
    __slots__ = ("gallery", "rejected", "added", "removed", "unchanged")
    GALLERY_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    gallery: GalleryInfo
    rejected: _containers.RepeatedCompositeFieldContainer[EnrollmentRejection]
    added: _containers.RepeatedScalarFieldContainer[str]
    removed: _containers.RepeatedScalarFieldContainer[str]
    unchanged: bool
    def __init__(self, gallery: _Optional[_Union[GalleryInfo, _Mapping]] = ..., rejected: _Optional[_Iterable[_Union[EnrollmentRejection, _Mapping]]] = ..., added: _Optional[_Iterable[str]] = ..., removed: _Optional[_Iterable[str]] = ..., unchanged: _Optional[bool] = ...) -> None: ...
