"""One reconcile of one Machine: what the phases share, and the one place status is written.

The phases (``launch``, ``registration``, ``initialization``, ``termination``) change
:attr:`MachineWork.status` and return a :class:`~kaito_core.engine.Result`; the reconciler writes
the status once at the end (:meth:`MachineWork.persist`), Ready computed there from Launched,
Registered and Initialized (:func:`~kaito_core.api.conditions.machine_ready`). The only earlier
writes are the checkpoints around a provider call (:meth:`MachineWork.checkpoint`): the Launching
condition before a ``create`` that may take minutes, the providerID the moment ``create`` returns
one (so a crash after the launch finds it), and Deleting before a ``delete``.
"""

from __future__ import annotations

import builtins
import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from kaito_core.api.common import Condition, ConditionStatus
from kaito_core.api.conditions import (
    CONDITION_FALSE,
    MACHINE_TIMEOUT_REASONS,
    MachineConditionType,
    get_condition,
    is_condition_true,
    machine_ready,
    set_condition,
)
from kaito_core.api.constants import LABEL_MACHINE
from kaito_core.api.machine import Machine, MachineStatus
from kaito_core.controllers.machine.settings import MachineControllerSettings
from kaito_core.controllers.machine.watches import INDEX_NODE_MACHINE, INDEX_NODE_PROVIDER_ID
from kaito_core.engine.cache import SharedCache
from kaito_core.engine.client import Client
from kaito_core.engine.events import EventRecorder
from kaito_core.engine.objects import meta, spec_of
from kaito_core.engine.ratelimit import ItemBackoff
from kaito_core.engine.resources import NODE
from kaito_core.provisioning.handle import ProvisionerHandle
from kaito_core.provisioning.nodes import MACHINE

__all__ = ["INITIALIZED", "LAUNCHED", "READY", "REGISTERED", "Deps", "MachineWork", "at", "duration"]

LAUNCHED: Final = MachineConditionType.LAUNCHED
REGISTERED: Final = MachineConditionType.REGISTERED
INITIALIZED: Final = MachineConditionType.INITIALIZED
READY: Final = MachineConditionType.READY


def duration(seconds: float) -> str:
    """``90s``, ``5m``, ``12m30s``: a timeout as a person reads it."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:g}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest}s" if rest else f"{minutes}m"


def at(unix: float) -> str:
    """A Unix time as Kubernetes writes timestamps."""
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Deps:
    """What every phase may use: the API, the cache, the provisioner, the settings, the backoff."""

    client: Client
    cache: SharedCache
    handle: ProvisionerHandle
    settings: MachineControllerSettings
    backoff: ItemBackoff
    recorder: EventRecorder | None = None
    clock: Callable[[], float] = time.time


@dataclass
class MachineWork:
    """One reconcile's view: the object as last read or written, the model, the status being built."""

    deps: Deps
    obj: dict[str, Any]
    machine: Machine
    status: MachineStatus
    now: float = 0.0
    attempt: int = 1
    """The number of the current attempt (``kaito.sh/launch-attempt``)."""
    started: float = 0.0
    """Unix time the current attempt started."""
    node: dict[str, Any] | None = None
    """The Node of the current instance, once registration found it."""
    blocked: tuple[str, str] | None = None
    """(reason, message) keeping the Machine from Ready that its lifecycle conditions do not show."""
    next_attempt: bool = False
    """The attempt failed and its instance is gone: start the next one after the status write."""
    released: bool = False
    """Deletion finished: drop the finalizer after the status write."""

    @property
    def name(self) -> str:
        return self.machine.name

    # -- conditions

    def set(self, type_: str, status: ConditionStatus, reason: str, message: str) -> None:
        self.status.conditions = set_condition(self.status.conditions, type_, status, reason, message,
                                               observed_generation=self.machine.metadata.generation)

    def cond(self, type_: str) -> Condition | None:
        return get_condition(self.status.conditions, type_)

    def is_true(self, type_: str) -> bool:
        return is_condition_true(self.status.conditions, type_)

    def keep_timeout(self, type_: str) -> bool:
        """A False timeout condition from the previous attempt stays until this attempt gets past it."""
        cond = self.cond(type_)
        return cond is not None and cond.status == CONDITION_FALSE and cond.reason in MACHINE_TIMEOUT_REASONS

    def event(self, reason: str, message: str, *, warning: bool = False) -> None:
        recorder = self.deps.recorder
        if recorder is None:
            return
        if warning:
            recorder.warning(self.obj, reason, message)
        else:
            recorder.normal(self.obj, reason, message)

    # -- status

    async def write_status(self) -> None:
        """Write :attr:`status` when it differs from what the object holds (guarded by resourceVersion)."""
        new = self.status.model_dump(mode="json", by_alias=True, exclude_none=True)
        old = MachineStatus.model_validate(self.obj.get("status") or {}).model_dump(
            mode="json", by_alias=True, exclude_none=True)
        if new == old:
            return
        body = {**self.obj, "status": new}
        self.obj = await self.deps.client.update_status(body, kind=MACHINE)

    async def persist(self) -> None:
        """Ready from the other conditions (:func:`machine_ready`), then :meth:`write_status`."""
        status, reason, message = machine_ready(self.status.conditions, node_name=self.status.node_name,
                                                blocked=self.blocked)
        self.set(READY, status, reason, message)
        await self.write_status()

    async def checkpoint(self) -> None:
        """Persist now, around a provider call (see the module docstring); the end write still follows."""
        await self.persist()

    # -- nodes

    def nodes(self) -> builtins.list[dict[str, Any]]:
        """Every Node the Machine's instance may have: by providerID, by label, by name; deduplicated."""
        cache = self.deps.cache
        found: dict[str, dict[str, Any]] = {}
        if self.status.provider_id:
            for node in cache.by_index(NODE, INDEX_NODE_PROVIDER_ID, self.status.provider_id):
                found[meta(node).name] = node
        for node in cache.by_index(NODE, INDEX_NODE_MACHINE, self.name):
            found[meta(node).name] = node
        node_name = self.status.node_name
        if node_name and node_name not in found:
            named = cache.get(NODE, None, node_name)
            if named is not None and meta(named).labels.get(LABEL_MACHINE) in (None, self.name):
                found[node_name] = named
        return list(found.values())

    def find_node(self) -> dict[str, Any] | None:
        """The Node of the current instance: the one with its providerID (or, for providers that
        hand out Nodes without one, the one labelled with the Machine's name)."""
        provider_id = self.status.provider_id
        if not provider_id:
            return None
        cache = self.deps.cache
        nodes = cache.by_index(NODE, INDEX_NODE_PROVIDER_ID, provider_id)
        if nodes:
            return nodes[0]
        for node in cache.by_index(NODE, INDEX_NODE_MACHINE, self.name):
            if not spec_of(node).get("providerID"):
                return node
        return None

    async def delete_nodes(self, nodes: builtins.list[dict[str, Any]]) -> None:
        """Delete these Node objects (never for a provisioner that keeps its nodes)."""
        if self.deps.handle.keeps_nodes:
            return
        for node in nodes:
            await self.deps.client.delete(NODE, meta(node).name, missing_ok=True)
