"""Value types of the config: durations, sizes, endpoints, names, patterns.

Each ``parse_*`` function raises :class:`ValueError` with the message the user sees after the key
path (``processors.topics.assembler.idle: invalid duration '10x' (use e.g. 500ms, 10s, 5m, 24h)``).
The ``Annotated`` aliases plug them into pydantic models and carry a marker (:class:`Unit`) that
the YAML dumper reads to write ``10s`` rather than ``10.0``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Final, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator

from otel_topics.model import IDENTIFIER_RE

# --- durations ---------------------------------------------------------------------------------

_DURATION_UNITS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)")
_NUMBER = re.compile(r"[+-]?(\d+(?:\.\d*)?|\.\d+)(e[+-]?\d+)?", re.IGNORECASE)
DURATION_HINT: Final = "use e.g. 500ms, 10s, 5m, 24h"


def parse_duration(value: Any, *, positive: bool = False) -> float:
    """``"100ms"``, ``"10s"``, ``"5m"``, ``"24h"``, ``"30d"``, ``"1h30m"`` or a number -> seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"invalid duration {_show(value)} ({DURATION_HINT})")
    if isinstance(value, str):
        text = value.strip()
        seconds = float(text) if _NUMBER.fullmatch(text) else _parse_duration_text(text, value)
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {_show(value)}: must not be negative")
    if positive and seconds == 0:
        raise ValueError(f"invalid duration {_show(value)}: must be greater than 0")
    return seconds


def _parse_duration_text(text: str, original: str) -> float:
    pos, total = 0, 0.0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            raise ValueError(f"invalid duration {_show(original)} ({DURATION_HINT})")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos == 0:
        raise ValueError(f"invalid duration {_show(original)} ({DURATION_HINT})")
    return total


def format_duration(seconds: float) -> str:
    """A short exact spelling: ``10s``, ``1.5s``, ``5m``, ``24h``, ``30d``, ``2ms``, ``1h30m``."""
    if seconds == 0:
        return "0s"
    millis = round(seconds * 1000)
    if not math.isclose(millis, seconds * 1000, abs_tol=1e-6):
        micros = round(seconds * 1e6)
        if math.isclose(micros, seconds * 1e6, abs_tol=1e-6):
            return f"{micros}us"
        return f"{round(seconds * 1e9)}ns"
    if millis % 86_400_000 == 0 and millis > 86_400_000:
        return f"{millis // 86_400_000}d"
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    parts = [f"{hours}h"] if hours else []
    parts += [f"{minutes}m"] if minutes else []
    parts += [f"{rest / 1000:g}s"] if rest else []
    return "".join(parts)


# --- sizes -------------------------------------------------------------------------------------

_SIZE_UNITS: Final = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]+)?")
SIZE_HINT: Final = "use e.g. 100KiB, 512MiB, 2GiB, 10MB, or a number of bytes"


def parse_size(value: Any, *, positive: bool = False) -> int:
    """``"512MiB"``, ``"2GiB"``, ``"10MB"``, ``"100KiB"`` or an int of bytes -> bytes."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"invalid size {_show(value)} ({SIZE_HINT})")
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        unit = (match.group(2) or "b").lower() if match else ""
        if match is None or unit not in _SIZE_UNITS:
            raise ValueError(f"invalid size {_show(value)} ({SIZE_HINT})")
        size = float(match.group(1)) * _SIZE_UNITS[unit]
    else:
        size = float(value)
    if not math.isfinite(size) or size < 0:
        raise ValueError(f"invalid size {_show(value)}: must not be negative")
    if positive and size < 1:
        raise ValueError(f"invalid size {_show(value)}: must be greater than 0")
    return round(size)


def format_size(size: int) -> str:
    """``16MiB``, ``4GiB``, or the plain number of bytes when no binary unit divides it."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


# --- endpoints and URLs ------------------------------------------------------------------------

_HOST_PORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]*):(?P<port>\d{1,5})")


def split_host_port(endpoint: str) -> tuple[str, int]:
    """``"localhost:4317"`` -> ``("localhost", 4317)``; ``"[::1]:4317"`` -> ``("::1", 4317)``."""
    match = _HOST_PORT.fullmatch(endpoint)
    if match is None:
        raise ValueError(f"invalid endpoint {_show(endpoint)} (use host:port, e.g. localhost:4317)")
    port = int(match.group("port"))
    if port > 65535:
        raise ValueError(f"invalid endpoint {_show(endpoint)}: port {port} is out of range 0..65535")
    return match.group("host").strip("[]"), port


def _check_host_port(value: Any) -> Any:
    if isinstance(value, str):
        split_host_port(value)
    return value


def _check_http_url(value: Any) -> Any:
    if isinstance(value, str):
        check_url(value, ("http", "https"))
    return value


def check_url(value: str, schemes: tuple[str, ...]) -> str:
    """Refuse a URL whose scheme is not in ``schemes`` or that has no host."""
    parts = urlsplit(value)
    wanted = " or ".join(f"{s}://" for s in schemes)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"invalid URL {_show(value)} (must start with {wanted} and name a host)")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid URL {_show(value)}: {exc}") from None
    return value


def grpc_target(endpoint: str) -> tuple[str, bool | None]:
    """An OTLP/gRPC exporter endpoint -> (``host:port``, TLS implied by the scheme or None).

    ``host:port`` keeps the ``tls.insecure`` setting; ``http://`` means plaintext, ``https://`` TLS;
    a URL without a port takes 80 or 443.
    """
    if "://" not in endpoint:
        split_host_port(endpoint)
        return endpoint, None
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(
            f"invalid endpoint {_show(endpoint)} (use host:port or http(s)://host:port, e.g. jaeger:4317)"
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ValueError(f"invalid endpoint {_show(endpoint)}: {exc}") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}", parts.scheme == "https"


def _check_grpc_endpoint(value: Any) -> Any:
    if isinstance(value, str):
        grpc_target(value)
    return value


# --- names, patterns, references ---------------------------------------------------------------

COMPONENT_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_CUSTOM_FN = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def _check_identifier(value: Any) -> Any:
    if isinstance(value, str) and not IDENTIFIER_RE.match(value):
        raise ValueError(
            f"invalid name {_show(value)}: must be an identifier "
            "(a letter, then letters, digits or '_'; no dots or spaces)"
        )
    return value


def _check_regex(value: Any) -> Any:
    if isinstance(value, str):
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {_show(value)}: {exc}") from None
    return value


def _check_custom_function(value: Any) -> Any:
    if isinstance(value, str) and not _CUSTOM_FN.fullmatch(value):
        raise ValueError(
            f"invalid function reference {_show(value)} "
            "(use package.module:function, e.g. mypkg.preprocess:to_conversation)"
        )
    return value


def _str_map(value: Any) -> Any:
    """Header maps: YAML numbers and booleans become strings, as HTTP headers are."""
    if isinstance(value, dict):
        return {k: _scalar_str(v) for k, v in value.items()}
    return value


def _scalar_str(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


def lowercase(value: Any) -> Any:
    """Lower-case a string (for case-insensitive choices); other values pass through."""
    return value.lower() if isinstance(value, str) else value


def _show(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else repr(value)


# --- Annotated aliases for the models ----------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """Marker in a field's metadata: ``"duration"`` or ``"size"`` (read by the YAML dumper)."""

    kind: str


Duration = Annotated[float, Unit("duration"), BeforeValidator(parse_duration)]
"""Seconds; written as ``10s``, ``5m``, ``1h30m``, ``30d`` or a number of seconds. Zero allowed."""
PositiveDuration = Annotated[
    float, Unit("duration"), BeforeValidator(lambda v: parse_duration(v, positive=True))
]
"""Seconds, greater than zero."""
ByteSize = Annotated[int, Unit("size"), BeforeValidator(parse_size)]
"""Bytes; written as ``512MiB``, ``2GiB``, ``10MB``, ``100KiB`` or a number of bytes. Zero allowed."""
PositiveByteSize = Annotated[int, Unit("size"), BeforeValidator(lambda v: parse_size(v, positive=True))]
"""Bytes, greater than zero."""
HostPort = Annotated[str, BeforeValidator(_check_host_port)]
"""``host:port`` to listen on (port 0 picks a free port)."""
HttpUrl = Annotated[str, BeforeValidator(_check_http_url)]
"""An ``http://`` or ``https://`` URL."""
GrpcEndpoint = Annotated[str, BeforeValidator(_check_grpc_endpoint)]
"""``host:port`` or ``http(s)://host:port``."""
Identifier = Annotated[str, BeforeValidator(_check_identifier)]
"""A facet or topic map name: ``[A-Za-z][A-Za-z0-9_]*``."""
Regex = Annotated[str, BeforeValidator(_check_regex)]
"""A Python regular expression that compiles."""
FunctionRef = Annotated[str, BeforeValidator(_check_custom_function)]
"""``package.module:function``."""
StrMap = Annotated[dict[str, str], BeforeValidator(_str_map)]
"""A map of strings (headers); scalar values are turned into strings."""


# --- the base of every config section ----------------------------------------------------------


class Section(BaseModel):
    """Base of every config model: unknown keys are refused; ``key: null`` means the key's default.

    As in the collector, an empty YAML value (``topics:``) leaves every key at its default, so a null
    for a field that is not nullable is dropped before validation.
    """

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(v is None for v in data.values()):
            fields = cls.model_fields
            return {
                k: v
                for k, v in data.items()
                if v is not None or k not in fields or _accepts_none(fields[k].annotation)
            }
        return data


def _accepts_none(annotation: Any) -> bool:
    return annotation is None or type(None) in get_args(annotation)
