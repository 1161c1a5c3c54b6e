# mypy: ignore-errors
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as _trace_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Classification(_message.Message):
    __slots__ = ("map", "label", "id", "distance", "map_version", "source")
    MAP_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    MAP_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    map: str
    label: str
    id: str
    distance: float
    map_version: int
    source: str
    def __init__(self, map: _Optional[str] = ..., label: _Optional[str] = ..., id: _Optional[str] = ..., distance: _Optional[float] = ..., map_version: _Optional[int] = ..., source: _Optional[str] = ...) -> None: ...

class EnrichResponse(_message.Message):
    __slots__ = ("traces",)
    TRACES_FIELD_NUMBER: _ClassVar[int]
    traces: _containers.RepeatedCompositeFieldContainer[TraceEnrichment]
    def __init__(self, traces: _Optional[_Iterable[_Union[TraceEnrichment, _Mapping]]] = ...) -> None: ...

class TraceEnrichment(_message.Message):
    __slots__ = ("trace_id", "status", "facets", "classifications")
    class FacetsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FACETS_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATIONS_FIELD_NUMBER: _ClassVar[int]
    trace_id: bytes
    status: str
    facets: _containers.ScalarMap[str, str]
    classifications: _containers.RepeatedCompositeFieldContainer[Classification]
    def __init__(self, trace_id: _Optional[bytes] = ..., status: _Optional[str] = ..., facets: _Optional[_Mapping[str, str]] = ..., classifications: _Optional[_Iterable[_Union[Classification, _Mapping]]] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("map", "texts")
    MAP_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    map: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, map: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("assignments",)
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    assignments: _containers.RepeatedCompositeFieldContainer[Classification]
    def __init__(self, assignments: _Optional[_Iterable[_Union[Classification, _Mapping]]] = ...) -> None: ...

class ListTopicMapsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTopicMapsResponse(_message.Message):
    __slots__ = ("maps",)
    MAPS_FIELD_NUMBER: _ClassVar[int]
    maps: _containers.RepeatedCompositeFieldContainer[TopicMapSummary]
    def __init__(self, maps: _Optional[_Iterable[_Union[TopicMapSummary, _Mapping]]] = ...) -> None: ...

class TopicMapSummary(_message.Message):
    __slots__ = ("name", "version", "clusters", "created_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    clusters: int
    created_at: float
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., clusters: _Optional[int] = ..., created_at: _Optional[float] = ...) -> None: ...

class GetTopicMapRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class TopicMap(_message.Message):
    __slots__ = ("name", "facet", "version", "distance_threshold", "embedder", "created_at", "clusters")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FACET_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    facet: str
    version: int
    distance_threshold: float
    embedder: str
    created_at: float
    clusters: _containers.RepeatedCompositeFieldContainer[Cluster]
    def __init__(self, name: _Optional[str] = ..., facet: _Optional[str] = ..., version: _Optional[int] = ..., distance_threshold: _Optional[float] = ..., embedder: _Optional[str] = ..., created_at: _Optional[float] = ..., clusters: _Optional[_Iterable[_Union[Cluster, _Mapping]]] = ...) -> None: ...

class Cluster(_message.Message):
    __slots__ = ("id", "name", "description", "keywords", "size", "radius", "parents", "examples")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    KEYWORDS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    RADIUS_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    keywords: _containers.RepeatedScalarFieldContainer[str]
    size: int
    radius: float
    parents: _containers.RepeatedScalarFieldContainer[str]
    examples: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., keywords: _Optional[_Iterable[str]] = ..., size: _Optional[int] = ..., radius: _Optional[float] = ..., parents: _Optional[_Iterable[str]] = ..., examples: _Optional[_Iterable[str]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("maps",)
    MAPS_FIELD_NUMBER: _ClassVar[int]
    maps: _containers.RepeatedCompositeFieldContainer[MapStatus]
    def __init__(self, maps: _Optional[_Iterable[_Union[MapStatus, _Mapping]]] = ...) -> None: ...

class MapStatus(_message.Message):
    __slots__ = ("map", "state", "reason", "since", "version")
    MAP_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    map: str
    state: str
    reason: str
    since: float
    version: int
    def __init__(self, map: _Optional[str] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ..., since: _Optional[float] = ..., version: _Optional[int] = ...) -> None: ...
