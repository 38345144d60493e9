import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GateAssignment(_message.Message):
    __slots__ = ("assignment_id", "gate_id", "flight_id", "starts_at", "ends_at", "assigned_by", "assigned_at", "released_at", "released_by")
    ASSIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    GATE_ID_FIELD_NUMBER: _ClassVar[int]
    FLIGHT_ID_FIELD_NUMBER: _ClassVar[int]
    STARTS_AT_FIELD_NUMBER: _ClassVar[int]
    ENDS_AT_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_BY_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_AT_FIELD_NUMBER: _ClassVar[int]
    RELEASED_AT_FIELD_NUMBER: _ClassVar[int]
    RELEASED_BY_FIELD_NUMBER: _ClassVar[int]
    assignment_id: int
    gate_id: str
    flight_id: str
    starts_at: _timestamp_pb2.Timestamp
    ends_at: _timestamp_pb2.Timestamp
    assigned_by: str
    assigned_at: _timestamp_pb2.Timestamp
    released_at: _timestamp_pb2.Timestamp
    released_by: str
    def __init__(self, assignment_id: _Optional[int] = ..., gate_id: _Optional[str] = ..., flight_id: _Optional[str] = ..., starts_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ends_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., assigned_by: _Optional[str] = ..., assigned_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., released_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., released_by: _Optional[str] = ...) -> None: ...

class AssignGateRequest(_message.Message):
    __slots__ = ("gate_id", "flight_id", "starts_at", "ends_at", "replace", "reason")
    GATE_ID_FIELD_NUMBER: _ClassVar[int]
    FLIGHT_ID_FIELD_NUMBER: _ClassVar[int]
    STARTS_AT_FIELD_NUMBER: _ClassVar[int]
    ENDS_AT_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    gate_id: str
    flight_id: str
    starts_at: _timestamp_pb2.Timestamp
    ends_at: _timestamp_pb2.Timestamp
    replace: bool
    reason: str
    def __init__(self, gate_id: _Optional[str] = ..., flight_id: _Optional[str] = ..., starts_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ends_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., replace: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class AssignGateResponse(_message.Message):
    __slots__ = ("assignment", "released")
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    assignment: GateAssignment
    released: _containers.RepeatedCompositeFieldContainer[GateAssignment]
    def __init__(self, assignment: _Optional[_Union[GateAssignment, _Mapping]] = ..., released: _Optional[_Iterable[_Union[GateAssignment, _Mapping]]] = ...) -> None: ...

class ReleaseGateRequest(_message.Message):
    __slots__ = ("assignment_id", "reason")
    ASSIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    assignment_id: int
    reason: str
    def __init__(self, assignment_id: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ListGateAssignmentsRequest(_message.Message):
    __slots__ = ("gate_id",)
    GATE_ID_FIELD_NUMBER: _ClassVar[int]
    gate_id: str
    def __init__(self, gate_id: _Optional[str] = ...) -> None: ...

class ListGateAssignmentsResponse(_message.Message):
    __slots__ = ("assignments",)
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    assignments: _containers.RepeatedCompositeFieldContainer[GateAssignment]
    def __init__(self, assignments: _Optional[_Iterable[_Union[GateAssignment, _Mapping]]] = ...) -> None: ...
