"""Kubeconfig, in-cluster and exec-plugin credentials from ``kubernetes_asyncio``, without its generated API.

We keep ``kubernetes_asyncio`` for what is worth a well-kept library: kubeconfig parsing (contexts,
embedded and file certificates, ``tls-server-name``), the in-cluster service account with its
rotating projected token, exec plugins and OIDC refresh, and the aiohttp session its REST client
builds from all that. But importing any module of that distribution first runs
``kubernetes_asyncio/__init__.py``, which imports ``client/__init__.py``, which imports about 60
generated API classes and 700 generated models: 70 MiB of resident memory in the operator, which
speaks plain dicts and uses none of them. The config loaders need only ``client.configuration``,
``client.rest`` and ``client.api_client``; the last names the models package only to deserialize
typed responses, which we never ask it for.

So before the first import we register the three package modules (``kubernetes_asyncio``,
``kubernetes_asyncio.client``, ``kubernetes_asyncio.client.models``) as lazy packages: their
submodules import as usual, ``ApiClient`` and ``Configuration`` resolve to their own submodules,
and any other attribute (``client.CoreV1Api``, ``models.V1Pod``) runs the package's real
``__init__`` in place first. Code in the same process that does want the generated client (tests,
plugins) gets exactly the package it always got; it just pays for it when it asks.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient, Configuration

__all__ = ["LIGHT_PACKAGES", "load_configuration", "new_api_client"]

# Package -> names its real __init__ would bind that live in one submodule we may import alone.
LIGHT_PACKAGES: dict[str, dict[str, str]] = {
    "kubernetes_asyncio": {},
    "kubernetes_asyncio.client": {"ApiClient": "api_client", "Configuration": "configuration"},
    "kubernetes_asyncio.client.models": {},
}
# Dunders a package's real __init__ defines; other dunder probes (inspect, copy) are no reason to load.
_LOADING_DUNDERS = frozenset({"__all__", "__version__", "__project__"})


class _LazyPackage(types.ModuleType):
    """A package whose ``__init__`` runs on the first attribute it does not already have."""

    _lazy_names: dict[str, str]
    _lazy_state: str  # "lazy", "loading", "loaded"

    def __getattr__(self, name: str) -> Any:
        if self._lazy_state != "lazy":
            # Loaded (or partly, while its own __init__ runs): behave like any module.
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        if name.startswith("__") and name not in _LOADING_DUNDERS:
            raise AttributeError(name)
        submodule = self._lazy_names.get(name)
        if submodule is not None:
            return getattr(importlib.import_module(f"{self.__name__}.{submodule}"), name)
        if importlib.machinery.PathFinder.find_spec(f"{self.__name__}.{name}", list(self.__path__)) is not None:
            return importlib.import_module(f"{self.__name__}.{name}")
        self._load()
        try:
            return self.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}") from None

    def _load(self) -> None:
        self._lazy_state = "loading"
        assert self.__spec__ is not None and self.__spec__.loader is not None
        try:
            self.__spec__.loader.exec_module(self)
        except BaseException:
            self._lazy_state = "lazy"
            raise
        self._lazy_state = "loaded"


def _install_light_packages() -> None:
    """Register the lazy package modules, unless the distribution is imported already (then it
    is paid for, and replacing live modules would split its classes in two)."""
    if "kubernetes_asyncio" in sys.modules:
        return
    parent: _LazyPackage | None = None
    search: list[str] | None = None
    for name, names in LIGHT_PACKAGES.items():
        spec = importlib.machinery.PathFinder.find_spec(name, search)
        if spec is None or spec.submodule_search_locations is None:
            raise ModuleNotFoundError(f"{name} is not installed: pip install kubernetes_asyncio", name=name)
        module = _LazyPackage(name)
        module.__spec__ = spec
        module.__loader__ = spec.loader
        module.__file__ = spec.origin
        module.__path__ = list(spec.submodule_search_locations)
        module.__package__ = name
        module._lazy_names = names
        module._lazy_state = "lazy"
        sys.modules[name] = module
        if parent is not None:
            # What the import system does for a submodule it loads itself.
            setattr(parent, name.rpartition(".")[2], module)
        parent, search = module, module.__path__


async def load_configuration(path: str | Path | None = None, *, context: str | None = None,
                             pool_size: int = 64) -> Configuration:
    """A ``Configuration`` from a kubeconfig (``path``, else ``$KUBECONFIG`` / ``~/.kube/config``),
    or from the in-cluster service account when no kubeconfig is found and no ``path`` was given."""
    _install_light_packages()
    from kubernetes_asyncio.client.configuration import Configuration
    from kubernetes_asyncio.config.config_exception import ConfigException
    from kubernetes_asyncio.config.incluster_config import load_incluster_config
    from kubernetes_asyncio.config.kube_config import load_kube_config

    configuration = Configuration()
    configuration.connection_pool_maxsize = pool_size
    try:
        await load_kube_config(config_file=str(path) if path else None, context=context,
                               client_configuration=configuration)
    except ConfigException:
        if path is not None:
            raise
        load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return configuration


def new_api_client(configuration: Configuration) -> ApiClient:
    """The ``ApiClient`` (its aiohttp session, auth settings) for a loaded ``Configuration``."""
    _install_light_packages()
    from kubernetes_asyncio.client.api_client import ApiClient

    return ApiClient(configuration)
