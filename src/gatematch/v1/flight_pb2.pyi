from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class Direction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIRECTION_UNSPECIFIED: _ClassVar[Direction]
    DIRECTION_DEPARTURE: _ClassVar[Direction]
    DIRECTION_ARRIVAL: _ClassVar[Direction]
DIRECTION_UNSPECIFIED: Direction
DIRECTION_DEPARTURE: Direction
DIRECTION_ARRIVAL: Direction
