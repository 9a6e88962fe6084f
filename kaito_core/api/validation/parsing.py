"""Parsing a Workspace from anything: the model, or the schema's errors as :class:`FieldError` s.

The first step of the validator (:func:`~kaito_core.api.validation.validate_workspace`): a
document that does not parse is reported field by field and checked no further.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from kaito_core.api.errors import FieldError, Rule
from kaito_core.api.workspace import Workspace

_SCHEMA_BOUNDS = {
    "string_too_long": "must be at most {max_length} characters long; shorten it",
    "too_long": "must have at most {max_length} items; remove some",
}


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _schema_message(error: Mapping[str, Any]) -> str:
    kind = error.get("type", "")
    if kind == "missing":
        return "required field is missing; set it"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return "must be an object (a mapping of fields)"
    if kind in _SCHEMA_BOUNDS:
        return _SCHEMA_BOUNDS[kind].format(max_length=(error.get("ctx") or {}).get("max_length", "?"))
    message = str(error.get("msg", "is invalid"))
    return message.replace("Input should be", "must be", 1)


def parse_workspace(obj: Any) -> tuple[Workspace | None, list[FieldError]]:
    """Parse a Workspace from anything; (model, []) or (None, schema errors)."""
    if isinstance(obj, Workspace):
        return obj, []
    if not isinstance(obj, Mapping):
        return None, [FieldError("", f"a Workspace must be an object (a mapping), not {type(obj).__name__}")]
    try:
        return Workspace.model_validate(dict(obj), strict=True), []
    except ValidationError as exc:
        errors = [FieldError(_path(tuple(e["loc"])), _schema_message(e), Rule.SCHEMA) for e in exc.errors()]
        return None, errors
