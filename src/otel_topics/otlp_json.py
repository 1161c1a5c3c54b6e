"""OTLP/JSON codec: the JSON encoding the OTLP specification defines, to and from protobuf messages.

OTLP/JSON is protobuf's JSON mapping with a few differences, all handled here:

* ``traceId`` / ``spanId`` / ``parentSpanId`` (on spans, span links, log records, metric exemplars: any
  ``trace_id`` / ``span_id`` / ``parent_span_id`` bytes field of an OTLP message) are hex strings, not
  base64. For compatibility with files written by protobuf's generic ``MessageToJson`` (base64 ids, as
  in the project's captured data) a base64 id of the right length is accepted too; ids are always
  *written* as lowercase hex.
* enum fields are written as integers; integers and enum names are both accepted.
* keys are written lowerCamelCase; snake_case (the proto field names) is accepted.
* 64-bit integers may be JSON strings or numbers (written as strings); unknown fields are ignored.

The conversion walks a per-message-type plan built once from the descriptors and sets fields directly
on the protobuf message: several times faster than ``google.protobuf.json_format``, which is used only
for well-known types (``google.protobuf.Any`` in ``google.rpc.Status.details``).

Every decoding problem raises :class:`~otel_topics.errors.DecodeError` whose message starts with the JSON
path of the offending value, e.g. ``resourceSpans[0].scopeSpans[1].spans[3].traceId: expected 32 hex
characters, got 'xyz'``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otel_topics.errors import DecodeError

__all__ = [
    "decode",
    "decode_logs",
    "decode_metrics",
    "decode_traces",
    "encode",
    "encode_logs",
    "encode_metrics",
    "encode_traces",
]

M = TypeVar("M", bound=Message)

# --- plans: how to convert each field of a message type -------------------------------------------
_MESSAGE, _WELL_KNOWN, _STRING, _INT, _INT64, _FLOAT, _BOOL, _BYTES, _ID, _ENUM = range(10)
_ID_SIZES = {"trace_id": 16, "span_id": 8, "parent_span_id": 8}
_INT64_TYPES = {3, 4, 6, 16, 18}  # TYPE_INT64, TYPE_UINT64, TYPE_FIXED64, TYPE_SFIXED64, TYPE_SINT64
_INT32_TYPES = {5, 7, 13, 15, 17}  # TYPE_INT32, TYPE_FIXED32, TYPE_UINT32, TYPE_SFIXED32, TYPE_SINT32
_SIMPLE_KINDS = {9: _STRING, 1: _FLOAT, 2: _FLOAT, 8: _BOOL, 12: _BYTES, 14: _ENUM}


class _Field:
    __slots__ = ("enum", "json", "kind", "name", "plan", "repeated", "size")

    def __init__(self, name: str, json_name: str, kind: int, repeated: bool) -> None:
        self.name = name
        self.json = json_name
        self.kind = kind
        self.repeated = repeated
        self.size = 0
        self.plan: _Plan | None = None
        self.enum: dict[str, int] = {}


class _Plan:
    __slots__ = ("by_key", "by_name", "dump")

    def __init__(self) -> None:
        self.by_key: dict[str, _Field] = {}  # json name and proto name -> field (decoding)
        self.by_name: dict[str, _Field] = {}  # proto name -> field (encoding)
        self.dump: Callable[[Any], dict[str, Any]] = lambda message: _dump(message, self)


_PLANS: dict[str, _Plan] = {}


def _plan(descriptor: Any) -> _Plan:
    plan = _PLANS.get(descriptor.full_name)
    if plan is not None:
        return plan
    plan = _PLANS[descriptor.full_name] = _Plan()  # registered first: message types may recurse
    otlp = descriptor.full_name.startswith("opentelemetry.proto.")
    for fd in descriptor.fields:
        if fd.message_type is not None:
            well_known = fd.message_type.full_name.startswith("google.protobuf.")
            kind = _WELL_KNOWN if well_known else _MESSAGE
        elif fd.type in _INT64_TYPES:
            kind = _INT64
        elif fd.type in _INT32_TYPES:
            kind = _INT
        else:
            kind = _SIMPLE_KINDS[fd.type]
        if kind == _BYTES and otlp and fd.name in _ID_SIZES:
            kind = _ID
        field = _Field(fd.name, fd.json_name, kind, fd.is_repeated)
        if kind == _ID:
            field.size = _ID_SIZES[fd.name]
        elif kind == _MESSAGE:
            field.plan = _plan(fd.message_type)
        elif kind == _ENUM:
            field.enum = {value.name: value.number for value in fd.enum_type.values}
        plan.by_key[fd.json_name] = plan.by_key[fd.name] = plan.by_name[fd.name] = field
    return plan


# --- decoding ------------------------------------------------------------------------------------
class _Bad(Exception):
    """A decoding problem; ``path`` collects the JSON path innermost first."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []

    def where(self) -> str:
        text = ""
        for part in reversed(self.path):
            text += part if part.startswith("[") or not text else "." + part
        return f"{text or '<root>'}: {self.reason}"


_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
_is_hex = re.compile(r"[0-9a-fA-F]*").fullmatch
_B64_FIX = str.maketrans("-_", "+/")


def _show(value: object) -> str:
    text = repr(value) if type(value) in (str, int, float) else _JSON_TYPES.get(type(value), "null")
    return text if len(text) <= 60 else text[:57] + "..."


def _b64(value: str) -> bytes:
    return base64.b64decode(value.translate(_B64_FIX) + "=" * (-len(value) % 4), validate=True)


def _id(value: object, size: int) -> bytes:
    """Hex digits are hex, whatever their number (an id of the wrong length is kept and refused later by
    the receiver's validation, as the same id in protobuf would be); otherwise base64 decoding to exactly
    ``size`` bytes is accepted (protobuf's generic JSON mapping writes ids that way)."""
    if type(value) is not str:
        raise _Bad(f"expected a string of {2 * size} hex characters, got {_show(value)}")
    if len(value) % 2 == 0 and _is_hex(value):
        return bytes.fromhex(value)
    if len(value) in (22, 24) if size == 16 else len(value) in (11, 12):
        try:
            raw = _b64(value)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) == size:
            return raw
    raise _Bad(f"expected {2 * size} hex characters, got {_show(value)}")


def _scalar(field: _Field, value: Any) -> Any:
    kind = field.kind
    kind_type = type(value)
    if kind == _STRING:
        if kind_type is str:
            return value
        raise _Bad(f"expected a string, got {_show(value)}")
    if kind == _ID:
        return _id(value, field.size)
    if kind in (_INT64, _INT):
        if kind_type is int:
            return value
        if kind_type is str:
            try:
                return int(value)
            except ValueError:
                pass
        elif kind_type is float and value.is_integer():
            return int(value)
        raise _Bad(f"expected an integer, got {_show(value)}")
    if kind == _FLOAT:
        if kind_type is float or kind_type is int:
            return float(value)
        if kind_type is str:
            try:
                return float(value)  # also "NaN", "Infinity", "-Infinity"
            except ValueError:
                pass
        raise _Bad(f"expected a number, got {_show(value)}")
    if kind == _ENUM:
        if kind_type is int:
            return value
        if kind_type is str:
            return field.enum.get(value)  # an unknown name is ignored, like an unknown field
        raise _Bad(f"expected an enum number or name, got {_show(value)}")
    if kind == _BOOL:
        if kind_type is bool:
            return value
        raise _Bad(f"expected true or false, got {_show(value)}")
    if kind_type is str:  # _BYTES
        try:
            return _b64(value)
        except (binascii.Error, ValueError):
            pass
    raise _Bad(f"expected base64 bytes, got {_show(value)}")


def _fill(message: Any, obj: dict[str, Any], plan: _Plan) -> None:
    by_key = plan.by_key
    for key, value in obj.items():
        field = by_key.get(key)
        if field is None or value is None:
            continue
        try:
            kind = field.kind
            if field.repeated:
                if type(value) is not list:
                    raise _Bad(f"expected a JSON array, got {_show(value)}")
                container = getattr(message, field.name)
                if kind == _MESSAGE:
                    sub = field.plan
                    assert sub is not None
                    for index, item in enumerate(value):
                        try:
                            if type(item) is not dict:
                                raise _Bad(f"expected a JSON object, got {_show(item)}")
                            _fill(container.add(), item, sub)
                        except _Bad as exc:
                            exc.path.append(f"[{index}]")
                            raise
                elif kind == _WELL_KNOWN:
                    for item in value:
                        json_format.ParseDict(item, container.add(), ignore_unknown_fields=True)
                else:
                    converted = []
                    for index, item in enumerate(value):
                        try:
                            converted.append(_scalar(field, item))
                        except _Bad as exc:
                            exc.path.append(f"[{index}]")
                            raise
                    container.extend(item for item in converted if item is not None)
            elif kind == _MESSAGE:
                if type(value) is not dict:
                    raise _Bad(f"expected a JSON object, got {_show(value)}")
                sub_message = getattr(message, field.name)
                if value:
                    assert field.plan is not None
                    _fill(sub_message, value, field.plan)
                else:
                    sub_message.SetInParent()
            elif kind == _WELL_KNOWN:
                json_format.ParseDict(value, getattr(message, field.name), ignore_unknown_fields=True)
            else:
                converted_value = _scalar(field, value)
                if converted_value is not None:
                    setattr(message, field.name, converted_value)
        except _Bad as exc:
            exc.path.append(key)
            raise
        except (TypeError, ValueError, json_format.ParseError) as exc:  # e.g. an integer out of range
            bad = _Bad(str(exc).rstrip(".") or type(exc).__name__)
            bad.path.append(key)
            raise bad from None


def decode(body: bytes | str, message: M) -> M:
    """Parse OTLP/JSON ``body`` into ``message`` (any protobuf message; cleared first) and return it."""
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except UnicodeDecodeError as exc:
        raise DecodeError(f"invalid JSON: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise DecodeError("invalid JSON: nested too deeply") from None
    if type(obj) is not dict:
        raise DecodeError(
            f"expected a JSON object at the top level, got {_JSON_TYPES.get(type(obj), 'null')}"
        )
    message.Clear()
    try:
        _fill(message, obj, _plan(message.DESCRIPTOR))
    except _Bad as exc:
        raise DecodeError(exc.where()) from None
    except RecursionError:
        raise DecodeError("the JSON is nested too deeply") from None
    return message


def decode_traces(body: bytes | str) -> ExportTraceServiceRequest:
    """OTLP/JSON -> ``ExportTraceServiceRequest``. Raises :class:`DecodeError`."""
    return decode(body, ExportTraceServiceRequest())


def decode_logs(body: bytes | str) -> ExportLogsServiceRequest:
    """OTLP/JSON -> ``ExportLogsServiceRequest``. Raises :class:`DecodeError`."""
    return decode(body, ExportLogsServiceRequest())


def decode_metrics(body: bytes | str) -> ExportMetricsServiceRequest:
    """OTLP/JSON -> ``ExportMetricsServiceRequest``. Raises :class:`DecodeError`."""
    return decode(body, ExportMetricsServiceRequest())


# --- encoding ------------------------------------------------------------------------------------
def _float_out(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _out(field: _Field, value: Any) -> Any:
    kind = field.kind
    if kind == _INT64:
        return str(value)
    if kind == _ID:
        return value.hex()
    if kind == _BYTES:
        return base64.b64encode(value).decode("ascii")
    if kind == _FLOAT:
        return _float_out(value)
    return value  # string, int32, bool, enum (as its number)


def _dump(message: Any, plan: _Plan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    by_name = plan.by_name
    for descriptor, value in message.ListFields():
        field = by_name[descriptor.name]
        kind = field.kind
        if kind == _MESSAGE:
            assert field.plan is not None
            dump = field.plan.dump
            out[field.json] = [dump(item) for item in value] if field.repeated else dump(value)
        elif kind == _WELL_KNOWN:
            if field.repeated:
                out[field.json] = [json_format.MessageToDict(item) for item in value]
            else:
                out[field.json] = json_format.MessageToDict(value)
        elif field.repeated:
            out[field.json] = [_out(field, item) for item in value]
        else:
            out[field.json] = _out(field, value)
    return out


# Attributes are most of what a span holds: KeyValue and AnyValue get hand-written fast paths.
def _dump_any_value(value: Any) -> dict[str, Any]:
    which = value.WhichOneof("value")
    if which == "string_value":
        return {"stringValue": value.string_value}
    if which == "int_value":
        return {"intValue": str(value.int_value)}
    if which == "double_value":
        return {"doubleValue": _float_out(value.double_value)}
    if which == "bool_value":
        return {"boolValue": value.bool_value}
    return _dump(value, _ANY_VALUE)  # arrays, kvlists, bytes, unset


def _dump_key_value(pair: Any) -> dict[str, Any]:
    if not pair.HasField("value") or not pair.key or pair.key_strindex:
        return _dump(pair, _KEY_VALUE)
    return {"key": pair.key, "value": _dump_any_value(pair.value)}


_ANY_VALUE = _plan(AnyValue.DESCRIPTOR)
_ANY_VALUE.dump = _dump_any_value
_KEY_VALUE = _plan(KeyValue.DESCRIPTOR)
_KEY_VALUE.dump = _dump_key_value


def encode(message: Message) -> bytes:
    """Any protobuf message -> OTLP/JSON bytes (UTF-8, compact, lowerCamelCase, integer enums)."""
    obj = _dump(message, _plan(message.DESCRIPTOR))
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def encode_traces(request: ExportTraceServiceRequest) -> bytes:
    """``ExportTraceServiceRequest`` -> OTLP/JSON bytes (hex ids, integer enums, lowerCamelCase)."""
    return encode(request)


def encode_logs(request: ExportLogsServiceRequest) -> bytes:
    """``ExportLogsServiceRequest`` -> OTLP/JSON bytes."""
    return encode(request)


def encode_metrics(request: ExportMetricsServiceRequest) -> bytes:
    """``ExportMetricsServiceRequest`` -> OTLP/JSON bytes."""
    return encode(request)
