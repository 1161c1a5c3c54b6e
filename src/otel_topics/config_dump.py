"""Config -> commented YAML, and the list of every key of the schema (for the README test)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from typing import Any, Final, get_args, get_origin

import yaml
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from otel_topics.config_components import (
    DebugExporter,
    FileExporter,
    OtlpGrpcExporter,
    OtlpHttpExporter,
    OtlpReceiver,
)
from otel_topics.config_load import unwrap_annotation
from otel_topics.config_topics import TopicsProcessor
from otel_topics.config_values import Unit, format_duration, format_size

_MASK: Final = "**********"
_WIDTH: Final = 100
_COMPONENTS: Final[dict[str, list[tuple[str, type[BaseModel]]]]] = {
    "receivers": [("otlp", OtlpReceiver)],
    "processors": [("topics", TopicsProcessor)],
    "exporters": [
        ("otlp", OtlpGrpcExporter),
        ("otlphttp", OtlpHttpExporter),
        ("debug", DebugExporter),
        ("file", FileExporter),
    ],
}


def dump(config: BaseModel, *, comments: bool = True, show_secrets: bool = False) -> str:
    """YAML for ``config``: every key, with its description as a comment above it.

    API keys are written as ``**********`` unless ``show_secrets``.
    """
    lines: list[str] = []
    if comments:
        lines += [
            "# otel-topics configuration (collector style). Every key left out takes the default shown.",
            "# Durations: 500ms, 10s, 5m, 24h, 30d. Sizes: 100KiB, 512MiB, 2GiB. ${env:VAR} is expanded.",
        ]
    _model(config, 0, lines, comments, show_secrets)
    return "\n".join(lines) + "\n"


def _model(model: BaseModel, indent: int, lines: list[str], comments: bool, secrets: bool) -> None:
    pad = " " * indent
    for name, field in type(model).model_fields.items():
        if field.exclude:
            continue
        value = getattr(model, name)
        if value is None and _is_model(field.annotation):
            continue  # an optional section left out (a protocol that is not listed)
        if comments and field.description:
            lines += textwrap.wrap(
                field.description,
                _WIDTH - indent,
                initial_indent=f"{pad}# ",
                subsequent_indent=f"{pad}# ",
                break_on_hyphens=False,
            )
        _entry(name, value, field, indent, lines, comments, secrets)
    for name, value in (model.model_extra or {}).items():
        lines.append(f"{pad}{_scalar(name, None, secrets)}: {_scalar(value, None, secrets)}")


def _entry(
    name: str,
    value: Any,
    field: FieldInfo | None,
    indent: int,
    lines: list[str],
    comments: bool,
    secrets: bool,
) -> None:
    pad = " " * indent
    if isinstance(value, BaseModel):
        if not _has_content(value):
            lines.append(f"{pad}{name}: {{}}")
        else:
            lines.append(f"{pad}{name}:")
            _model(value, indent + 2, lines, comments, secrets)
    elif isinstance(value, dict) and value and all(isinstance(v, BaseModel) for v in value.values()):
        lines.append(f"{pad}{name}:")
        for key, item in value.items():
            _entry(_scalar(key, None, secrets), item, None, indent + 2, lines, comments, secrets)
    elif isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
        lines.append(f"{pad}{name}:")
        for item in value:
            sub: list[str] = []
            _model(item, indent + 4, sub, False, secrets)
            sub[0] = f"{pad}  - {sub[0][indent + 4 :]}"
            lines += sub
    else:
        lines.append(f"{pad}{name}: {_scalar(value, field, secrets)}")


def _has_content(model: BaseModel) -> bool:
    return any(not f.exclude for f in type(model).model_fields.values()) or bool(model.model_extra)


def _scalar(value: Any, field: FieldInfo | None, secrets: bool) -> str:
    unit = next((m for m in field.metadata if isinstance(m, Unit)), None) if field else None
    if unit is not None and isinstance(value, (int, float)):
        return format_duration(float(value)) if unit.kind == "duration" else format_size(int(value))
    if isinstance(value, SecretStr):
        value = value.get_secret_value() if secrets else _MASK
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()


# --- keys --------------------------------------------------------------------------------------


def iter_keys(root: type[BaseModel]) -> Iterator[str]:
    """Dotted paths of every leaf key (lists as ``[]``, user-named maps as ``<name>``)."""
    for name, field in root.model_fields.items():
        if name in _COMPONENTS:
            for kind, model in _COMPONENTS[name]:
                yield from _keys(model, f"{name}.{kind}")
        else:
            yield from _field_keys(name, field.annotation)


def _keys(model: type[BaseModel], prefix: str) -> Iterator[str]:
    for name, field in model.model_fields.items():
        if not field.exclude:
            yield from _field_keys(f"{prefix}.{name}", field.annotation)


def _field_keys(path: str, annotation: Any) -> Iterator[str]:
    annotation = unwrap_annotation(annotation)
    origin = get_origin(annotation)
    args: tuple[Any, ...] = get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation.model_fields:
            yield from _keys(annotation, path)
        else:
            yield path  # a free-form map
    elif origin is list and _is_model(args[0]):
        yield from _keys(unwrap_annotation(args[0]), f"{path}[]")
    elif origin is dict and _is_model(args[1]):
        placeholder = "<signal>" if path.endswith("pipelines") else "<name>"
        yield from _keys(unwrap_annotation(args[1]), f"{path}.{placeholder}")
    else:
        yield path


def _is_model(annotation: Any) -> bool:
    annotation = unwrap_annotation(annotation)
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)
