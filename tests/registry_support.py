"""The local registry (:class:`kaito_core.testing.registry.LocalRegistry`) as the tests start it: a
missing ``docker-registry`` fails the test with the install hint, never skips it.

    from registry_support import Registry, start_registry
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kaito_core.testing.registry import LocalRegistry, RegistryMissingError

Registry = LocalRegistry


def start_registry(root: Path, htpasswd: tuple[str, str] | None) -> Iterator[LocalRegistry]:
    registry = LocalRegistry(root, htpasswd)
    try:
        registry.start()
    except (RegistryMissingError, TimeoutError) as exc:
        registry.stop()
        pytest.fail(str(exc))
    try:
        yield registry
    finally:
        registry.stop()
