"""From YAML text to the raw dict the models validate, and from pydantic errors to key paths.

* :func:`read_yaml` parses safely, refuses duplicate keys and names file, line and column on errors.
* :func:`prepare` expands ``${env:VAR}``, ``${VAR}`` and ``${env:VAR:-default}`` in string values
  (``$$`` is a literal ``$``), checks component keys (``type[/name]``) and tags each exporter with
  the type taken from its key.
* :func:`map_errors` turns a pydantic ``ValidationError`` into ``(dotted.path, message)`` pairs.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Collection, Mapping
from typing import Annotated, Any, Final, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from otel_topics.config_components import EXPORTER_TYPES, OtlpReceiver
from otel_topics.config_topics import TopicsProcessor
from otel_topics.config_values import COMPONENT_NAME_RE
from otel_topics.errors import ConfigError

Problems = list[tuple[str, str]]

# --- YAML --------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """Safe loader that refuses a key given twice in one mapping (the collector does too)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # keys merged with << may be overridden
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, (str, int, float, bool)):
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(text: str, source: str) -> dict[str, Any]:
    """Parse ``text``; an empty document is ``{}``. Raises :class:`ConfigError` naming line and column."""
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = exc.problem or "invalid YAML"
        if exc.context and "constructing a mapping" not in exc.context:
            what += f" ({exc.context})"
        raise ConfigError([("", f"YAML syntax error at {where}{what}")], source) from None
    except yaml.YAMLError as exc:
        raise ConfigError([("", f"YAML syntax error: {exc}")], source) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([("", f"the top level must be a mapping of sections, got {_kind(data)}")], source)
    return data


# --- environment expansion ---------------------------------------------------------------------

_REFERENCE = re.compile(r"\$(\$|\{[^}]*\}|\{)")
_ENV_BODY = re.compile(r"(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


def expand_env(value: str, environ: Mapping[str, str]) -> str:
    """Expand ``${env:VAR}``, ``${VAR}``, ``${env:VAR:-default}``; ``$$`` -> ``$``. Raises ValueError."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(1)
        if token == "$":
            return "$"
        if token == "{":
            raise ValueError(f"unclosed reference '{value[match.start() :]}' (write $$ for a literal $)")
        body = _ENV_BODY.fullmatch(token[1:-1])
        if body is None:
            scheme = token[1:-1].split(":", 1)[0]
            if ":" in token and scheme.isidentifier() and scheme != "env":
                raise ValueError(f"unsupported reference '{match.group(0)}': only ${{env:VAR}} is supported")
            raise ValueError(
                f"invalid reference '{match.group(0)}' (use ${{env:VAR}}, ${{VAR}} or ${{env:VAR:-default}}; "
                "write $$ for a literal $)"
            )
        name, default = body.group(1), body.group(2)
        found = environ.get(name)
        if found is None or (found == "" and default is not None):
            if default is None:
                raise ValueError(f"environment variable '{name}' is not set")
            return default
        return found

    return _REFERENCE.sub(replace, value)


def _expand_tree(data: Any, path: str, environ: Mapping[str, str], problems: Problems) -> Any:
    if isinstance(data, dict):
        return {_key(k): _expand_tree(v, _join(path, _key(k)), environ, problems) for k, v in data.items()}
    if isinstance(data, list):
        return [_expand_tree(v, f"{path}[{i}]", environ, problems) for i, v in enumerate(data)]
    if isinstance(data, str) and "$" in data:
        try:
            return expand_env(data, environ)
        except ValueError as exc:
            problems.append((path, str(exc)))
    return data


def _key(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return key if isinstance(key, str) else str(key)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --- component keys ----------------------------------------------------------------------------

_KNOWN: Final = {
    "receivers": ("receiver", ("otlp",)),
    "processors": ("processor", ("topics",)),
    "exporters": ("exporter", tuple(EXPORTER_TYPES)),
}


def prepare(raw: dict[str, Any], environ: Mapping[str, str]) -> tuple[dict[str, Any], Problems]:
    """Expand env references and check ``type[/name]`` keys; returns the data and the problems found.

    Keys with problems are removed so that validation does not report misleading follow-up errors.
    """
    problems: Problems = []
    data = _expand_tree(raw, "", environ, problems)
    for section, (what, known) in _KNOWN.items():
        components = data.get(section)
        if not isinstance(components, dict):
            continue
        kept: dict[str, Any] = {}
        for key, settings in components.items():
            problem = _check_component_key(section, what, known, key)
            if problem:
                problems.append((f"{section}.{key}", problem))
                continue
            settings = {} if settings is None else settings
            if section == "receivers" and isinstance(settings, dict):
                settings = _listed_protocols(settings)
            if section == "exporters" and isinstance(settings, dict):
                if "type" in settings:
                    problems.append(
                        (f"exporters.{key}.type", "unknown key (the exporter type comes from the key)")
                    )
                settings = {**settings, "type": key.partition("/")[0]}
            kept[key] = settings
        data[section] = kept
    return data, problems


def _listed_protocols(receiver: dict[str, Any]) -> dict[str, Any]:
    """``protocols: {grpc: }``: a protocol listed with an empty value listens with its defaults."""
    protocols = receiver.get("protocols")
    if not isinstance(protocols, dict):
        return receiver
    listed = {k: ({} if v is None and k in ("grpc", "http") else v) for k, v in protocols.items()}
    return {**receiver, "protocols": listed}


def _check_component_key(section: str, what: str, known: tuple[str, ...], key: str) -> str | None:
    kind, slash, name = key.partition("/")
    if kind not in known:
        return f"unknown {what} type '{kind}' (known: {', '.join(known)})"
    if section == "processors" and slash:
        return "only one topics processor is supported; name it 'topics'"
    if slash and not COMPONENT_NAME_RE.fullmatch(name):
        return f"invalid name '{name}' after '/' (letters, digits, '_', '-', '.')"
    return None


# --- pydantic errors -> key paths --------------------------------------------------------------


def map_errors(exc: ValidationError, root: type[BaseModel], skip: Collection[str] = ()) -> Problems:
    """``(dotted.path, message)`` for each error, in the user's key spelling.

    Errors at a path in ``skip`` (values whose ``${env:...}`` expansion already failed) are left out.
    """
    problems: Problems = []
    for error in exc.errors(include_url=False):
        loc = _user_loc(error["loc"])
        problem = (format_path(loc), _message(error, loc, root))
        if problem[0] not in skip and problem not in problems:
            problems.append(problem)
    return problems


def _user_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    parts = [p for p in loc if p != "[key]"]
    # a tagged union inserts the tag: ('exporters', 'otlp/x', 'otlp', 'tls') -> drop 'otlp'
    if len(parts) >= 3 and parts[0] == "exporters" and parts[2] == str(parts[1]).partition("/")[0]:
        del parts[2]
    return tuple(parts)


def format_path(loc: tuple[int | str, ...]) -> str:
    """``('processors', 'topics', 'facets', 3, 'name')`` -> ``processors.topics.facets[3].name``."""
    out = ""
    for part in loc:
        out = f"{out}[{part}]" if isinstance(part, int) else _join(out, part)
    return out


def _message(error: ErrorDetails, loc: tuple[int | str, ...], root: type[BaseModel]) -> str:
    kind, value, ctx = error["type"], error["input"], error.get("ctx") or {}
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"]))
    if kind == "extra_forbidden":
        return _unknown_key(loc, root)
    if kind == "missing":
        return "required"
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        if len(loc) >= 2 and loc[-1] == "type":
            return f"unknown {loc[-2]} type {_show(value)} (known: {', '.join(expected)})"
        return f"invalid value {_show(value)} (expected one of: {', '.join(expected)})"
    if kind == "union_tag_invalid":
        return f"unknown type {_show(ctx.get('tag'))}"
    simple = {
        "bool_parsing": "a boolean (true or false)",
        "bool_type": "a boolean (true or false)",
        "int_parsing": "an integer",
        "int_type": "an integer",
        "int_from_float": "an integer",
        "float_parsing": "a number",
        "float_type": "a number",
        "string_type": "a string",
        "dict_type": "a mapping",
        "model_type": "a mapping",
        "model_attributes_type": "a mapping",
        "list_type": "a list",
    }
    if kind in simple:
        return f"expected {simple[kind]}, got {_kind(value)} {_show(value)}".rstrip()
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        low, high = _range_of(loc, root)
        if low is not None and high is not None:
            return f"must be between {low} and {high}, got {_show(value)}"
        limit = next(iter(ctx.values()), "?")
        return f"must be {bounds[kind]} {limit}, got {_show(value)}"
    return f"{error['msg']} (got {_show(value)})"


def _range_of(loc: tuple[int | str, ...], root: type[BaseModel]) -> tuple[Any, Any]:
    """(ge, le) constraints of the field at ``loc``, when it has both."""
    model = _model_at(loc[:-1], root) if loc else None
    field = model.model_fields.get(str(loc[-1])) if model is not None else None
    if field is None:
        return None, None
    low = next((m.ge for m in field.metadata if getattr(m, "ge", None) is not None), None)
    high = next((m.le for m in field.metadata if getattr(m, "le", None) is not None), None)
    return low, high


def _unknown_key(loc: tuple[int | str, ...], root: type[BaseModel]) -> str:
    key = str(loc[-1]) if loc else ""
    model = _model_at(loc[:-1], root)
    if model is None:
        return "unknown key"
    known = [name for name, f in model.model_fields.items() if not f.exclude]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(known)}"
    return f"unknown key '{key}' ({hint})"


def _model_at(loc: tuple[int | str, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    """The model class that validates the value at ``loc`` (user spelling), if one does."""
    if len(loc) >= 2 and loc[0] in ("receivers", "processors", "exporters"):
        kind = str(loc[1]).partition("/")[0]
        start: Any = {"receivers": OtlpReceiver, "processors": TopicsProcessor}.get(str(loc[0]))
        start = start or EXPORTER_TYPES.get(kind)
        return _walk(start, loc[2:]) if start is not None else None
    return _walk(root, loc)


def _walk(annotation: Any, loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    for part in loc:
        annotation = unwrap_annotation(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return None
            annotation = field.annotation
        elif get_origin(annotation) in (list, dict):
            annotation = get_args(annotation)[-1]
        else:
            return None
    annotation = unwrap_annotation(annotation)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def unwrap_annotation(annotation: Any) -> Any:
    """Strip Annotated and Optional from a type annotation."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, (dict, list)) or value is None:
        return ""
    return repr(value)
