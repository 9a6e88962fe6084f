"""The one Workspace validator, used by the admission webhook and by the reconciler.

Pure: no I/O, no DNS, no clock. Give it a Workspace (model or dict) and, on
update, the old one; it returns every problem it finds as a
:class:`~kaito_core.api.errors.FieldError` naming the field and saying what to do::

    errors = validate_workspace(obj)                 # [] when valid
    ws = check_workspace(obj, old=old_obj)           # parsed Workspace, or raises WorkspaceValidationError

Anything at all may be passed in (a dict from YAML, garbage); the only exception
:func:`check_workspace` raises is :class:`~kaito_core.api.errors.WorkspaceValidationError`,
and :func:`validate_workspace` raises nothing.

The checks live in this package by what they check: :mod:`.parsing` (the schema),
:mod:`.fields` (names, annotations, labels and selectors), :mod:`.urls`, :mod:`.resources`
(instance type, fit, runtime), :mod:`.pods` (pod templates and volume sources), :mod:`.inference`
and :mod:`.tuning`; :func:`validate_workspace` here runs them all.

What a URL may point at is :mod:`.urls`'s docstring.
"""

from __future__ import annotations

from typing import Any

from kaito_presets import Catalog, default_catalog

# The URL checks call kaito_presets.egress's own functions (the downloader's too: one home, no copy);
# they stay reachable here, where the validator's URL checks always found them.
from kaito_presets.egress import address_problem as address_problem
from kaito_presets.egress import redact_url as redact_url

from kaito_core.api.errors import FieldError, Messages, Rule, WorkspaceValidationError
from kaito_core.api.validation.fields import NODE_IMAGE_FAMILIES, RESERVED_SELECTOR_LABELS
from kaito_core.api.validation.inference import _InferenceChecks
from kaito_core.api.validation.parsing import parse_workspace
from kaito_core.api.validation.pods import SAFE_VOLUME_KINDS
from kaito_core.api.validation.resources import resolve_runtime
from kaito_core.api.validation.tuning import _TuningChecks
from kaito_core.api.validation.urls import url_problem
from kaito_core.api.workspace import Workspace

__all__ = [
    "NODE_IMAGE_FAMILIES",
    "RESERVED_SELECTOR_LABELS",
    "SAFE_VOLUME_KINDS",
    "check_workspace",
    "parse_workspace",
    "resolve_runtime",
    "url_problem",
    "validate_workspace",
]


class _Validator(_InferenceChecks, _TuningChecks):
    """Every check, in the order their errors are listed."""

    def run(self) -> list[FieldError]:
        ws = self.ws
        self.check_identity()
        if ws.inference is not None and ws.tuning is not None:
            self.error("tuning", Messages.INFERENCE_AND_TUNING, Rule.INFERENCE_AND_TUNING)
        elif ws.inference is None and ws.tuning is None:
            self.error("", Messages.NEITHER_INFERENCE_NOR_TUNING, Rule.NEITHER_INFERENCE_NOR_TUNING)
        self.check_resource()
        if ws.inference is not None:
            self.check_inference(ws.inference)
        if ws.tuning is not None:
            self.check_tuning(ws.tuning)
        self.check_weights()
        self.check_node_image_family()
        self.check_api_key_secret()
        return self.errors


def _immutability(new: Workspace, old: Workspace) -> list[FieldError]:
    errors: list[FieldError] = []

    def changed(path: str, before: Any, after: Any) -> None:
        if before != after:
            errors.append(FieldError(path, Messages.IMMUTABLE, Rule.IMMUTABLE))

    if (new.inference is None) != (old.inference is None):
        errors.append(FieldError("", Messages.SWITCH_INFERENCE_TUNING, Rule.SWITCH_INFERENCE_TUNING))
    changed("resource.instanceType", old.resource.instance_type, new.resource.instance_type)
    changed("resource.labelSelector", old.resource.label_selector.to_dict(), new.resource.label_selector.to_dict())
    if new.inference and old.inference and new.inference.preset and old.inference.preset:
        changed("inference.preset.name", old.inference.preset.name, new.inference.preset.name)
    if new.tuning and old.tuning:
        changed("tuning.method", old.tuning.method, new.tuning.method)
        if new.tuning.preset and old.tuning.preset:
            changed("tuning.preset.name", old.tuning.preset.name, new.tuning.preset.name)
    return errors


def validate_workspace(obj: Any, old: Any = None, *, catalog: Catalog | None = None,
                       default_runtime: str | None = None) -> list[FieldError]:
    """Every problem with ``obj`` (a Workspace or a dict); [] when it is valid.

    ``old`` is the Workspace before an update (webhook: ``oldObject``), for the
    immutable fields. ``catalog`` defaults to the packaged one. Never raises.
    """
    ws, errors = parse_workspace(obj)
    if ws is None:
        return errors
    errors = _Validator(ws, catalog or default_catalog(), default_runtime=default_runtime).run()
    if old is not None:
        old_ws, _ = parse_workspace(old)
        if old_ws is not None:
            errors += _immutability(ws, old_ws)
    return errors


def check_workspace(obj: Any, old: Any = None, *, catalog: Catalog | None = None,
                    default_runtime: str | None = None) -> Workspace:
    """The parsed Workspace when valid; raises :class:`WorkspaceValidationError` listing every problem."""
    errors = validate_workspace(obj, old, catalog=catalog, default_runtime=default_runtime)
    if errors:
        raise WorkspaceValidationError(errors)
    ws, _ = parse_workspace(obj)
    assert ws is not None  # no errors means it parsed
    return ws
