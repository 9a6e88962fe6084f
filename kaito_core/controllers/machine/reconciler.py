"""The Machine reconciler: turns a Machine into a Ready GPU Node through a provisioner plugin.

The lifecycle follows Karpenter's NodeClaim:

1. **finalizer** ``machine.finalizer.kaito.sh`` first, so the instance is torn down before the object goes;
2. **Launched**: ``provisioner.create(machine)`` until it returns a providerID (``create`` is idempotent,
   so calling it again after a crash finds the same instance); typed provisioner errors become
   ``Launched=False`` with the error's reason and message, retried after ``retry_after`` with backoff;
3. **Registered**: the Node with that providerID (a cache index) joined: ``status.nodeName``;
   our labels and the Machine's taints are copied onto it;
4. **Initialized**: the Node is Ready with ``nvidia.com/gpu`` allocatable and no ephemeral taint
   (``node.kubernetes.io/not-ready`` and the like, as Karpenter waits for); the startup taints
   are removed; then **Ready**.

Timeouts (``launch_timeout``, ``registration_timeout``, measured from the start of the attempt)
never hang silently: the condition goes False with the reason, the instance is deleted (until
gone), and a fresh attempt starts (annotations ``kaito.sh/launch-attempt`` and
``kaito.sh/launch-attempt-started`` count and time attempts).

On delete: cordon the Node, ``provisioner.delete`` until ``get`` says it is gone, delete the Node
object if the provider did not, drop the finalizer.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import datetime
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import structlog
from pydantic import ValidationError

from kaito_core.api.common import Condition, ConditionStatus
from kaito_core.api.conditions import (
    CONDITION_FALSE,
    CONDITION_TRUE,
    CONDITION_UNKNOWN,
    MachineConditionType,
    MachineReason,
    get_condition,
    is_condition_true,
    set_condition,
)
from kaito_core.api.constants import LABEL_MACHINE, MACHINE_FINALIZER
from kaito_core.api.machine import Machine, MachineStatus
from kaito_core.controllers.machine.settings import MachineControllerSettings
from kaito_core.engine.cache import SharedCache
from kaito_core.engine.client import Client
from kaito_core.engine.errors import ConflictError, NotFoundError
from kaito_core.engine.events import EventRecorder
from kaito_core.engine.indexers import label_index
from kaito_core.engine.labels import parse_selector
from kaito_core.engine.predicate import Predicate, predicate
from kaito_core.engine.reconcile import Request, Result, TerminalError
from kaito_core.engine.resources import NODE
from kaito_core.provisioning.nodes import (
    MACHINE,
    allocatable_gpus,
    ephemeral_taints,
    machine_gpu_request,
    node_is_ready,
    node_labels_for,
    node_taints_for,
    parse_timestamp,
    taint_matches,
)
from kaito_core.provisioning.protocol import NodeRef, Provisioner, ProvisionerContext, ProvisionerError

__all__ = [
    "ANNOTATION_ATTEMPT",
    "ANNOTATION_ATTEMPT_STARTED",
    "INDEX_MACHINE_PROVIDER_ID",
    "INDEX_NODE_MACHINE",
    "INDEX_NODE_PROVIDER_ID",
    "REASON_INSTANCE_NOT_FOUND",
    "REASON_LAUNCH_TIMEOUT",
    "REASON_OTHER_PROVISIONER",
    "REASON_REGISTRATION_TIMEOUT",
    "MachineReconciler",
    "ProvisionerHandle",
    "machine_provider_id_index",
    "node_provider_id_index",
    "not_status_only",
    "selected",
]

log = structlog.get_logger("kaito_core.controllers.machine")

#: On a Machine: the number of the current attempt (1 when absent).
ANNOTATION_ATTEMPT: Final = "kaito.sh/launch-attempt"
#: On a Machine: Unix time the current attempt started (the creation time when absent).
ANNOTATION_ATTEMPT_STARTED: Final = "kaito.sh/launch-attempt-started"

INDEX_NODE_PROVIDER_ID: Final = "kaito.sh/node-provider-id"
INDEX_NODE_MACHINE: Final = "kaito.sh/node-machine"
INDEX_MACHINE_PROVIDER_ID: Final = "kaito.sh/machine-provider-id"

REASON_LAUNCH_TIMEOUT: Final = "LaunchTimeout"
REASON_REGISTRATION_TIMEOUT: Final = "RegistrationTimeout"
REASON_INSTANCE_NOT_FOUND: Final = "InstanceNotFound"
REASON_OTHER_PROVISIONER: Final = "OtherProvisioner"
_TIMEOUT_REASONS = (REASON_LAUNCH_TIMEOUT, REASON_REGISTRATION_TIMEOUT, REASON_INSTANCE_NOT_FOUND)

LAUNCHED = MachineConditionType.LAUNCHED
REGISTERED = MachineConditionType.REGISTERED
INITIALIZED = MachineConditionType.INITIALIZED
READY = MachineConditionType.READY


def node_provider_id_index(obj: Mapping[str, Any]) -> Iterable[str]:
    """Index Nodes by ``spec.providerID``."""
    provider_id = (obj.get("spec") or {}).get("providerID")
    return (str(provider_id),) if provider_id else ()


def machine_provider_id_index(obj: Mapping[str, Any]) -> Iterable[str]:
    """Index Machines by ``status.providerID``."""
    provider_id = (obj.get("status") or {}).get("providerID")
    return (str(provider_id),) if provider_id else ()


node_machine_index = label_index(LABEL_MACHINE)


def _meta_view(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    meta = obj.get("metadata") or {}
    return (meta.get("generation"), meta.get("labels"), meta.get("annotations"), meta.get("finalizers"),
            meta.get("deletionTimestamp"))


#: Machine updates worth a reconcile: anything but a status-only write (our own, mostly), so a
#: status write never cuts a retry's backoff short.
not_status_only = Predicate(update=lambda old, new: _meta_view(old) != _meta_view(new),
                            name="not_status_only")


def selected(selector: str) -> Predicate:
    """Only Machines whose labels match ``selector`` (``machine_selector``)."""
    parsed = parse_selector(selector)
    return predicate(lambda obj: parsed.matches((obj.get("metadata") or {}).get("labels") or {}),
                     name=f"selected[{selector}]")


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:g}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest}s" if rest else f"{minutes}m"


def _at(unix: float) -> str:
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ProvisionerHandle:
    """The provisioner plus its one-time ``start(ctx)``, shared by the reconciler and the collector."""

    def __init__(self, provisioner: Provisioner, context: ProvisionerContext, *, started: bool = False):
        self.provisioner = provisioner
        self.context = context
        self._started = started
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return str(getattr(self.provisioner, "name", type(self.provisioner).__name__))

    @property
    def keeps_nodes(self) -> bool:
        return bool(getattr(self.provisioner, "keeps_nodes", False))

    async def ready(self) -> Provisioner:
        """The provisioner, started once (a failing start is retried on the next call)."""
        if not self._started:
            async with self._lock:
                if not self._started:
                    try:
                        await self.provisioner.start(self.context)
                    except Exception as exc:
                        raise RuntimeError(f"provisioner {self.name!r} failed to start: {exc}") from exc
                    self._started = True
        return self.provisioner

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self.provisioner.close()


@dataclass
class _Work:
    """One reconcile's view: the object as last read or written, the model, the status being built."""

    obj: dict[str, Any]
    machine: Machine
    status: MachineStatus


class MachineReconciler:
    """Reconciles one Machine at a time (the controller never runs two on the same key)."""

    def __init__(self, client: Client, cache: SharedCache, provisioner: ProvisionerHandle,
                 settings: MachineControllerSettings | None = None, *, recorder: EventRecorder | None = None,
                 clock: Callable[[], float] = time.time):
        self.client = client
        self.cache = cache
        self.handle = provisioner
        self.settings = settings or MachineControllerSettings()
        self.recorder = recorder
        self.clock = clock
        self._failures: dict[str, int] = {}
        self._not_before: dict[str, float] = {}
        self._selector = parse_selector(self.settings.machine_selector) if self.settings.machine_selector else None

    # -- watches

    def machines_for_node(self, node: Mapping[str, Any]) -> builtins.list[Request]:
        """The Machines a Node event concerns: by providerID, and by its ``kaito.sh/machine`` label."""
        names: set[str] = set()
        provider_id = (node.get("spec") or {}).get("providerID")
        if provider_id:
            with contextlib.suppress(LookupError):
                for machine in self.cache.by_index(MACHINE, INDEX_MACHINE_PROVIDER_ID, str(provider_id), copy=False):
                    names.add(str(machine["metadata"]["name"]))
        label = ((node.get("metadata") or {}).get("labels") or {}).get(LABEL_MACHINE)
        if label:
            names.add(str(label))
        return [Request(None, name) for name in sorted(names)]

    # -- reconcile

    async def reconcile(self, request: Request) -> Result:
        obj = self.cache.get(MACHINE, None, request.name)
        if obj is None:
            self._forget(request.name)
            return Result()
        if self._selector is not None and not self._selector.matches((obj.get("metadata") or {}).get("labels")):
            return Result()  # another controller's Machine (machine_selector)
        try:
            machine = Machine.from_dict(obj)
        except ValidationError as exc:
            raise TerminalError(f"Machine {request.name} cannot be read: {exc}", reason="InvalidMachine") from exc
        work = _Work(obj, machine, (machine.status or MachineStatus()).model_copy(deep=True))
        wanted = machine.spec.provisioner
        if wanted and wanted != self.handle.name:
            return await self._not_ours(work, wanted)
        try:
            if machine.metadata.deletion_timestamp:
                return await self._finalize(work)
            if MACHINE_FINALIZER not in (machine.metadata.finalizers or []):
                work.obj = await self.client.patch(MACHINE, machine.name, {"metadata": {
                    "finalizers": [*(machine.metadata.finalizers or []), MACHINE_FINALIZER],
                    "resourceVersion": machine.metadata.resource_version}})
            result = await self._lifecycle(work)
            await self._write_status(work)
            return result
        except ConflictError:
            # The cache was behind our own last write: the watch event brings the new version.
            log.debug("machine changed while reconciling; retrying", machine=request.name)
            return Result(requeue=True)
        except NotFoundError:
            if await self.client.get_or_none(MACHINE, request.name) is None:
                return Result()
            raise

    async def _not_ours(self, work: _Work, wanted: str) -> Result:
        """A Machine for another provisioner: say so once, touch nothing else (its controller owns it)."""
        if self._cond(work, LAUNCHED) is None and not work.machine.metadata.deletion_timestamp:
            self._set(work, LAUNCHED, CONDITION_UNKNOWN, REASON_OTHER_PROVISIONER,
                      f"this Machine asks for provisioner {wanted!r} but this controller runs "
                      f"{self.handle.name!r}; run a controller with --provisioner {wanted}, or recreate the "
                      f"Machine without spec.provisioner")
            with contextlib.suppress(ConflictError, NotFoundError):
                await self._write_status(work)
        return Result()

    # -- helpers

    def _set(self, work: _Work, type_: str, status: ConditionStatus, reason: str, message: str) -> None:
        work.status.conditions = set_condition(work.status.conditions, type_, status, reason, message,
                                               observed_generation=work.machine.metadata.generation)

    def _cond(self, work: _Work, type_: str) -> Condition | None:
        return get_condition(work.status.conditions, type_)

    def _keep_timeout(self, work: _Work, type_: str) -> bool:
        """A False timeout condition from the previous attempt stays until this attempt gets past it."""
        cond = self._cond(work, type_)
        return cond is not None and cond.status == CONDITION_FALSE and cond.reason in _TIMEOUT_REASONS

    def _event(self, work: _Work, reason: str, message: str, *, warning: bool = False) -> None:
        if self.recorder is None:
            return
        if warning:
            self.recorder.warning(work.obj, reason, message)
        else:
            self.recorder.normal(work.obj, reason, message)

    def _backoff(self, name: str, retry_after: float | None) -> float:
        """The wait before the next provisioner call after a failure (doubling; remembered, so an
        unrelated event cannot cut it short)."""
        failures = self._failures.get(name, 0) + 1
        self._failures[name] = failures
        base = retry_after if retry_after and retry_after > 0 else 1.0
        delay = float(min(base * 2 ** (failures - 1), self.settings.retry_backoff_max))
        self._not_before[name] = self.clock() + delay
        return delay

    def _forget(self, name: str) -> None:
        self._failures.pop(name, None)
        self._not_before.pop(name, None)

    def _wait_backoff(self, name: str) -> Result | None:
        """A Result to come back later if ``name`` is still backing off."""
        remaining = self._not_before.get(name, 0.0) - self.clock()
        return Result(requeue_after=remaining) if remaining > 0 else None

    def _attempt(self, machine: Machine) -> tuple[int, float]:
        annotations = machine.metadata.annotations or {}
        try:
            attempt = int(annotations.get(ANNOTATION_ATTEMPT, "1"))
        except ValueError:
            attempt = 1
        started: float | None
        try:
            started = float(annotations[ANNOTATION_ATTEMPT_STARTED])
        except (KeyError, ValueError):
            started = parse_timestamp(machine.metadata.creation_timestamp)
        return attempt, started if started is not None else self.clock()

    async def _write_status(self, work: _Work) -> None:
        """Write ``work.status`` when it differs from what the object holds (guarded by resourceVersion)."""
        new = work.status.model_dump(mode="json", by_alias=True, exclude_none=True)
        old = MachineStatus.model_validate(work.obj.get("status") or {}).model_dump(
            mode="json", by_alias=True, exclude_none=True)
        if new == old:
            return
        body = {**work.obj, "status": new}
        work.obj = await self.client.update_status(body, kind=MACHINE)

    def _nodes(self, work: _Work) -> builtins.list[dict[str, Any]]:
        """Every Node the Machine's instance may have: by providerID, by label, by name; deduplicated."""
        found: dict[str, dict[str, Any]] = {}
        if work.status.provider_id:
            for node in self.cache.by_index(NODE, INDEX_NODE_PROVIDER_ID, work.status.provider_id):
                found[node["metadata"]["name"]] = node
        for node in self.cache.by_index(NODE, INDEX_NODE_MACHINE, work.machine.name):
            found[node["metadata"]["name"]] = node
        if work.status.node_name and work.status.node_name not in found:
            named = self.cache.get(NODE, None, work.status.node_name)
            labels = ((named or {}).get("metadata") or {}).get("labels") or {}
            if named is not None and labels.get(LABEL_MACHINE) in (None, work.machine.name):
                found[work.status.node_name] = named
        return list(found.values())

    def _find_node(self, work: _Work) -> dict[str, Any] | None:
        """The Node of the current instance: the one with its providerID (or, for providers that
        hand out Nodes without one, the one labelled with the Machine's name)."""
        provider_id = work.status.provider_id
        if not provider_id:
            return None
        nodes = self.cache.by_index(NODE, INDEX_NODE_PROVIDER_ID, provider_id)
        if nodes:
            return nodes[0]
        for node in self.cache.by_index(NODE, INDEX_NODE_MACHINE, work.machine.name):
            if not (node.get("spec") or {}).get("providerID"):
                return node
        return None

    # -- the lifecycle

    async def _lifecycle(self, work: _Work) -> Result:
        now = self.clock()
        attempt, started = self._attempt(work.machine)
        if not work.status.provider_id:
            waiting = await self._launch(work, attempt, started, now)
            if waiting is not None:
                return waiting
        node = self._find_node(work)
        if node is None:
            return await self._await_registration(work, attempt, started, now)
        return await self._initialize(work, node)

    async def _launch(self, work: _Work, attempt: int, started: float, now: float) -> Result | None:
        try:
            provisioner = await self.handle.ready()
        except Exception as exc:
            self._set(work, LAUNCHED, CONDITION_FALSE, MachineReason.LAUNCH_FAILED, str(exc))
            self._set(work, READY, CONDITION_FALSE, MachineReason.LAUNCH_FAILED, str(exc))
            with contextlib.suppress(Exception):
                await self._write_status(work)
            raise
        name, machine = work.machine.name, work.machine
        deadline = started + self.settings.launch_timeout
        what = f"{self.handle.name} is launching a {machine.spec.instance_type or 'node'} (attempt {attempt})"
        if now >= deadline:
            return await self._recycle(work, attempt, LAUNCHED, REASON_LAUNCH_TIMEOUT,
                                       f"no instance was launched within {_duration(self.settings.launch_timeout)}")
        if (backing_off := self._wait_backoff(name)) is not None:
            return backing_off
        if self._cond(work, LAUNCHED) is None:
            self._set(work, LAUNCHED, CONDITION_UNKNOWN, MachineReason.LAUNCHING,
                      f"{what}; launch timeout at {_at(deadline)}")
            self._set(work, READY, CONDITION_FALSE, MachineReason.NOT_READY, "waiting for the node to launch")
            await self._write_status(work)
        try:
            async with asyncio.timeout(deadline - now) as budget:
                ref = await provisioner.create(machine)
        except TimeoutError:
            if not budget.expired():
                raise
            return await self._recycle(
                work, attempt, LAUNCHED, REASON_LAUNCH_TIMEOUT,
                f"the provisioner did not launch an instance within {_duration(self.settings.launch_timeout)}")
        except ProvisionerError as exc:
            delay = self._backoff(name, exc.retry_after)
            message = f"{exc.message} (retrying in {_duration(delay)})"
            self._set(work, LAUNCHED, CONDITION_FALSE, exc.reason, message)
            self._set(work, READY, CONDITION_FALSE, exc.reason, message)
            self._event(work, exc.reason, message, warning=True)
            log.info("provisioner could not launch", machine=name, reason=exc.reason, error=exc.message,
                     retry_in=delay)
            await self._write_status(work)
            return Result(requeue_after=delay)
        except Exception as exc:
            message = f"provisioner {self.handle.name} failed to launch the instance: {exc or type(exc).__name__}"
            self._set(work, LAUNCHED, CONDITION_FALSE, MachineReason.LAUNCH_FAILED, message)
            self._set(work, READY, CONDITION_FALSE, MachineReason.LAUNCH_FAILED, message)
            with contextlib.suppress(Exception):
                await self._write_status(work)
            raise
        if not ref.provider_id:
            if not self._keep_timeout(work, LAUNCHED):
                self._set(work, LAUNCHED, CONDITION_UNKNOWN, MachineReason.LAUNCHING,
                          f"{ref.message or what}; launch timeout at {_at(deadline)}")
            return Result(requeue_after=min(self.settings.poll_interval, max(deadline - now, 0.1)))
        self._forget(name)
        work.status.provider_id = ref.provider_id
        message = f"{self.handle.name} launched instance {ref.provider_id}"
        self._set(work, LAUNCHED, CONDITION_TRUE, MachineReason.LAUNCHED, message)
        self._event(work, MachineReason.LAUNCHED, message)
        await self._write_status(work)  # persist the providerID before anything else can fail
        return None

    async def _await_registration(self, work: _Work, attempt: int, started: float, now: float) -> Result:
        provider_id = work.status.provider_id
        if work.status.node_name:
            message = f"Node {work.status.node_name} of this Machine is gone"
            work.status.node_name = None
            work.status.capacity = work.status.allocatable = None
            self._set(work, REGISTERED, CONDITION_FALSE, MachineReason.NODE_NOT_FOUND, message)
            self._set(work, READY, CONDITION_FALSE, MachineReason.NODE_NOT_FOUND, message)
            self._event(work, MachineReason.NODE_NOT_FOUND, message, warning=True)
        deadline = started + self.settings.registration_timeout
        if now >= deadline:
            return await self._recycle(
                work, attempt, REGISTERED, REASON_REGISTRATION_TIMEOUT,
                f"instance {provider_id} launched but no Node with that providerID joined within "
                f"{_duration(self.settings.registration_timeout)}")
        provisioner = await self.handle.ready()
        ref: NodeRef | None
        try:
            ref = await provisioner.get(work.machine)
        except Exception as exc:  # a failing lookup is not a lost instance; wait and look again
            log.info("provisioner lookup failed while waiting for registration", machine=work.machine.name,
                     error=str(exc))
            ref = NodeRef(provider_id=provider_id or "", message=f"the provider could not be asked: {exc}")
        if ref is None:
            return await self._recycle(
                work, attempt, LAUNCHED, REASON_INSTANCE_NOT_FOUND,
                f"provisioner {self.handle.name} no longer has instance {provider_id}")
        if not self._keep_timeout(work, REGISTERED):
            message = (f"waiting for a Node with providerID {provider_id} to join; registration timeout at "
                       f"{_at(deadline)}" + (f"; {ref.message}" if ref.message else ""))
            self._set(work, REGISTERED, CONDITION_UNKNOWN, MachineReason.NODE_NOT_FOUND, message)
            if not self._keep_timeout(work, READY):
                self._set(work, READY, CONDITION_FALSE, MachineReason.NOT_READY, "waiting for the node to register")
        return Result(requeue_after=min(self.settings.poll_interval, max(deadline - now, 0.1)))

    async def _initialize(self, work: _Work, node: dict[str, Any]) -> Result:
        machine = work.machine
        node_name = str(node["metadata"]["name"])
        if work.status.node_name != node_name or not is_condition_true(work.status.conditions, REGISTERED):
            work.status.node_name = node_name
            message = f"Node {node_name} joined the cluster"
            self._set(work, REGISTERED, CONDITION_TRUE, MachineReason.REGISTERED, message)
            self._event(work, MachineReason.REGISTERED, message)
        ready = node_is_ready(node)
        gpus = allocatable_gpus(node)
        wanted = machine_gpu_request(machine) or 1
        gpus_ok = not self.settings.require_gpus or gpus >= wanted
        initialized = is_condition_true(work.status.conditions, INITIALIZED)
        node = await self._sync_node(work, node, remove_startup=ready and gpus_ok and not initialized)
        status = node.get("status") or {}
        work.status.capacity = dict(status.get("capacity") or {}) or None
        work.status.allocatable = dict(status.get("allocatable") or {}) or None
        if not ready:
            message = f"Node {node_name} is not Ready"
            if not initialized:
                self._set(work, INITIALIZED, CONDITION_UNKNOWN, MachineReason.NODE_NOT_READY, f"{message} yet")
            self._set(work, READY, CONDITION_FALSE, MachineReason.NODE_NOT_READY, message)
            return Result()
        if not gpus_ok:
            message = (f"Node {node_name} has {gpus} allocatable nvidia.com/gpu, the Machine needs {wanted}; "
                       f"is the NVIDIA device plugin running on it?")
            if not initialized:
                self._set(work, INITIALIZED, CONDITION_UNKNOWN, MachineReason.GPUS_NOT_ALLOCATABLE, message)
            self._set(work, READY, CONDITION_FALSE, MachineReason.GPUS_NOT_ALLOCATABLE, message)
            return Result()
        pending_taints = ephemeral_taints(node)
        if pending_taints and not initialized:
            # The node lifecycle controller removes these once it has seen the Node Ready; a pod
            # sent there before would be Unschedulable.
            message = (f"Node {node_name} is Ready but still carries {', '.join(pending_taints)}; "
                       "kube-controller-manager removes it once it sees the Node Ready")
            self._set(work, INITIALIZED, CONDITION_UNKNOWN, MachineReason.NODE_NOT_READY, message)
            self._set(work, READY, CONDITION_FALSE, MachineReason.NODE_NOT_READY, message)
            return Result()
        if not initialized:
            message = f"Node {node_name} is Ready with {gpus} allocatable GPU(s)"
            self._set(work, INITIALIZED, CONDITION_TRUE, MachineReason.INITIALIZED, message)
            self._event(work, MachineReason.INITIALIZED, message)
        self._set(work, READY, CONDITION_TRUE, MachineReason.READY, f"Node {node_name} is Ready")
        return Result()

    async def _sync_node(self, work: _Work, node: dict[str, Any], *, remove_startup: bool) -> dict[str, Any]:
        """Copy our labels (and, on nodes we own, the Machine's taints) onto the Node; drop startup taints."""
        machine = work.machine
        meta = node.get("metadata") or {}
        labels: dict[str, str] = meta.get("labels") or {}
        missing = {k: v for k, v in node_labels_for(machine).items() if labels.get(k) != v}
        patch: dict[str, Any] = {}
        if missing:
            patch["metadata"] = {"labels": missing}
        if not self.handle.keeps_nodes:
            taints: list[dict[str, Any]] = list((node.get("spec") or {}).get("taints") or [])
            regular = node_taints_for(machine, startup=False)
            startup = [t for t in node_taints_for(machine, startup=True)
                       if not any(taint_matches(t, r) for r in regular)]
            kept = [t for t in taints if not (remove_startup and any(taint_matches(t, s) for s in startup))]
            kept += [t for t in regular if not any(taint_matches(t, have) for have in kept)]
            if kept != taints:
                patch["spec"] = {"taints": kept}
        if not patch:
            return node
        patch.setdefault("metadata", {})["resourceVersion"] = meta.get("resourceVersion")
        updated: dict[str, Any] = await self.client.patch(NODE, str(meta.get("name")), patch)
        return updated

    async def _recycle(self, work: _Work, attempt: int, type_: str, reason: str, message: str) -> Result:
        """The attempt failed: delete its instance (until gone) and start a fresh attempt."""
        provisioner = await self.handle.ready()
        name = work.machine.name
        if (backing_off := self._wait_backoff(name)) is not None:
            return backing_off
        try:
            await provisioner.delete(work.machine)
            leftover = await provisioner.get(work.machine)
        except ProvisionerError as exc:
            delay = self._backoff(name, exc.retry_after)
            text = f"attempt {attempt}: {message}; deleting the instance failed: {exc.message}"
            self._set(work, type_, CONDITION_FALSE, reason, text)
            self._set(work, READY, CONDITION_FALSE, reason, text)
            await self._write_status(work)
            return Result(requeue_after=delay)
        if leftover is not None:
            text = f"attempt {attempt}: {message}; deleting the instance before trying again"
            self._set(work, type_, CONDITION_FALSE, reason, text)
            self._set(work, READY, CONDITION_FALSE, reason, text)
            await self._write_status(work)
            return Result(requeue_after=self.settings.poll_interval)
        if not self.handle.keeps_nodes:
            for node in self._nodes(work):
                await self.client.delete(NODE, node["metadata"]["name"], missing_ok=True)
        text = f"attempt {attempt}: {message}; trying again with a fresh node (attempt {attempt + 1})"
        work.status.provider_id = work.status.node_name = None
        work.status.capacity = work.status.allocatable = None
        work.status.conditions = [c for c in work.status.conditions or [] if c.type in (type_, READY)]
        self._set(work, type_, CONDITION_FALSE, reason, text)
        self._set(work, READY, CONDITION_FALSE, reason, text)
        self._event(work, reason, text, warning=True)
        log.warning("machine attempt failed; starting a fresh one", machine=name, reason=reason, attempt=attempt)
        await self._write_status(work)
        work.obj = await self.client.patch(MACHINE, name, {"metadata": {
            "resourceVersion": work.obj["metadata"].get("resourceVersion"),
            "annotations": {ANNOTATION_ATTEMPT: str(attempt + 1), ANNOTATION_ATTEMPT_STARTED: f"{self.clock():.3f}"},
        }})
        self._forget(name)
        return Result(requeue_after=0.1)

    # -- deletion

    async def _finalize(self, work: _Work) -> Result:
        machine = work.machine
        if MACHINE_FINALIZER not in (machine.metadata.finalizers or []):
            return Result()
        provisioner = await self.handle.ready()
        self._set(work, READY, CONDITION_FALSE, MachineReason.DELETING, "deleting the node")
        await self._write_status(work)
        nodes = self._nodes(work)
        if not self.handle.keeps_nodes:
            for node in nodes:
                if not (node.get("spec") or {}).get("unschedulable"):
                    with contextlib.suppress(NotFoundError):
                        await self.client.patch(NODE, node["metadata"]["name"], {"spec": {"unschedulable": True}})
        try:
            await provisioner.delete(machine)
            leftover = await provisioner.get(machine)
        except ProvisionerError as exc:
            delay = self._backoff(machine.name, exc.retry_after)
            message = f"deleting the instance failed: {exc.message} (retrying in {_duration(delay)})"
            self._set(work, READY, CONDITION_FALSE, MachineReason.DELETING, message)
            self._event(work, exc.reason, message, warning=True)
            await self._write_status(work)
            return Result(requeue_after=delay)
        if leftover is not None:
            message = f"waiting for {self.handle.name} to delete instance {leftover.provider_id or machine.name}"
            self._set(work, READY, CONDITION_FALSE, MachineReason.DELETING, message)
            await self._write_status(work)
            return Result(requeue_after=self.settings.poll_interval)
        if not self.handle.keeps_nodes:
            for node in nodes:
                await self.client.delete(NODE, node["metadata"]["name"], missing_ok=True)
        finalizers = [f for f in machine.metadata.finalizers or [] if f != MACHINE_FINALIZER]
        await self.client.patch(MACHINE, machine.name, {"metadata": {
            "finalizers": finalizers, "resourceVersion": work.obj["metadata"].get("resourceVersion")}})
        self._forget(machine.name)
        log.info("machine finalized", machine=machine.name)
        return Result()
