"""What wakes the Machine reconciler: cache indexes, predicates and the Node-to-Machine map."""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Iterable, Mapping
from typing import Any, Final

from kaito_core.api.constants import LABEL_MACHINE
from kaito_core.engine.cache import SharedCache
from kaito_core.engine.indexers import label_index
from kaito_core.engine.labels import parse_selector
from kaito_core.engine.objects import meta, spec_of, status_of
from kaito_core.engine.predicate import Predicate, predicate
from kaito_core.engine.reconcile import Request
from kaito_core.provisioning.nodes import MACHINE

__all__ = [
    "INDEX_MACHINE_PROVIDER_ID",
    "INDEX_NODE_MACHINE",
    "INDEX_NODE_PROVIDER_ID",
    "machine_provider_id_index",
    "machines_for_node",
    "node_machine_index",
    "node_provider_id_index",
    "not_status_only",
    "selected",
]

INDEX_NODE_PROVIDER_ID: Final = "kaito.sh/node-provider-id"
INDEX_NODE_MACHINE: Final = "kaito.sh/node-machine"
INDEX_MACHINE_PROVIDER_ID: Final = "kaito.sh/machine-provider-id"


def node_provider_id_index(obj: Mapping[str, Any]) -> Iterable[str]:
    """Index Nodes by ``spec.providerID``."""
    provider_id = spec_of(obj).get("providerID")
    return (str(provider_id),) if provider_id else ()


def machine_provider_id_index(obj: Mapping[str, Any]) -> Iterable[str]:
    """Index Machines by ``status.providerID``."""
    provider_id = status_of(obj).get("providerID")
    return (str(provider_id),) if provider_id else ()


node_machine_index = label_index(LABEL_MACHINE)


def _meta_view(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    view = meta(obj)
    return (view.generation, dict(view.labels), dict(view.annotations), view.finalizers, view.deletion_timestamp)


#: Machine updates worth a reconcile: anything but a status-only write (our own, mostly), so a
#: status write never cuts a retry's backoff short.
not_status_only = Predicate(update=lambda old, new: _meta_view(old) != _meta_view(new),
                            name="not_status_only")


def selected(selector: str) -> Predicate:
    """Only Machines whose labels match ``selector`` (``machine_selector``)."""
    parsed = parse_selector(selector)
    return predicate(lambda obj: parsed.matches(meta(obj).labels), name=f"selected[{selector}]")


def machines_for_node(cache: SharedCache, node: Mapping[str, Any]) -> builtins.list[Request]:
    """The Machines a Node event concerns: by providerID, and by its ``kaito.sh/machine`` label."""
    names: set[str] = set()
    provider_id = spec_of(node).get("providerID")
    if provider_id:
        with contextlib.suppress(LookupError):
            for machine in cache.by_index(MACHINE, INDEX_MACHINE_PROVIDER_ID, str(provider_id), copy=False):
                names.add(meta(machine).name)
    label = meta(node).labels.get(LABEL_MACHINE)
    if label:
        names.add(str(label))
    return [Request(None, name) for name in sorted(names)]
