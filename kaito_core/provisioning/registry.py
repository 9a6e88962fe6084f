"""Find provisioner plugins through the ``kaito.provisioners`` entry-point group.

A third party ships a distribution whose ``pyproject.toml`` declares::

    [project.entry-points."kaito.provisioners"]
    acme = "acme_kaito:AcmeProvisioner"

and ``kaito controller --provisioner acme`` loads it; nothing in kaito-core changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from kaito_core.provisioning.protocol import Provisioner

__all__ = ["ENTRY_POINT_GROUP", "UnknownProvisionerError", "available_provisioners", "load_provisioner"]

ENTRY_POINT_GROUP = "kaito.provisioners"


class UnknownProvisionerError(LookupError):
    """No installed plugin has the requested name."""


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_provisioners() -> list[str]:
    """Names of every installed provisioner plugin, sorted."""
    return sorted(_entry_points())


def load_provisioner(name: str, settings: Mapping[str, Any] | BaseModel | None = None) -> Provisioner:
    """Instantiate the plugin ``name`` with its settings.

    ``settings`` may be the plugin's own settings model, a mapping validated
    against it, or None (the plugin's defaults, plus its environment variables
    when the model is a pydantic-settings ``BaseSettings``).
    """
    points = _entry_points()
    if name not in points:
        installed = ", ".join(sorted(points)) or "none"
        raise UnknownProvisionerError(
            f"no provisioner plugin named {name!r} is installed (installed: {installed}); "
            f"install its distribution or pick one of those with --provisioner"
        )
    factory = points[name].load()
    model: type[BaseModel] = getattr(factory, "settings_model", BaseModel)
    try:
        if settings is None:
            parsed = model()
        elif isinstance(settings, BaseModel):
            parsed = settings
        else:
            parsed = model.model_validate(dict(settings))
    except ValidationError as exc:
        raise ValueError(f"invalid settings for provisioner {name!r}: {exc}") from exc
    instance = factory(parsed)
    if not isinstance(instance, Provisioner):
        raise TypeError(f"entry point {name!r} ({points[name].value}) does not implement the Provisioner protocol")
    return instance
