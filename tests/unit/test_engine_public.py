"""The engine's public face: every name in ``__all__`` exists, and the engine stays generic."""

from __future__ import annotations

import importlib
import pkgutil

from kaito_core import engine


def test_all_names_exist_and_are_unique() -> None:
    assert len(set(engine.__all__)) == len(engine.__all__)
    for name in engine.__all__:
        assert hasattr(engine, name), name


def test_every_module_declares_all_and_imports_nothing_above_it() -> None:
    forbidden = ("kaito_core.api", "kaito_core.provisioning", "kaito_core.controllers", "kaito_core.manager",
                 "kaito_core.cli", "kaito_core.testing")
    for info in pkgutil.iter_modules(engine.__path__):
        module = importlib.import_module(f"kaito_core.engine.{info.name}")
        assert hasattr(module, "__all__"), info.name
        for name in module.__all__:
            assert hasattr(module, name), f"{info.name}.{name}"
        source = open(module.__file__ or "").read()  # noqa: SIM115
        for layer in forbidden:
            assert f"import {layer}" not in source and f"from {layer}" not in source, (info.name, layer)


def test_key_names_for_other_packages() -> None:
    for name in ("Client", "Controller", "Manager", "ManagerSettings", "Request", "Result", "TerminalError",
                 "Reconciler", "ResourceKind", "SharedCache", "EventRecorder", "NotFoundError", "ConflictError",
                 "generation_changed", "WorkQueue", "LeaderElectionLostError"):
        assert name in engine.__all__
