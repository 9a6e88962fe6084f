"""The Workspace reconciler: one level-based pass from the cache toward the Workspace.

Each run: finalizer -> validate (the shared validator; never trust the webhook ran) ->
revision -> nodes (reuse ready ones, create Machines for the rest in bounded batches, delete extras) ->
workload (inference or tuning, once the nodes are ready) -> status (recomputed, written
only when it changed, an Event per transition). On delete: delete the workload (so pods stop
on nodes that still exist), delete this Workspace's Machines, wait until they are gone, drop
the finalizer; the rest goes by ownerReference.

Running it twice changes nothing; a crash between any two writes is picked up by the
next run; names are deterministic, so a stale cache cannot create a second object.

The workload phase (the children it applies) is :class:`~.children.WorkspaceChildren`, a part
of :class:`WorkspaceReconciler`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Mapping
from typing import Any

import structlog
from kaito_presets import Catalog, GpuSku, ModelPreset, default_catalog

from kaito_core.api import (
    ANNOTATION_REVISION,
    CONDITION_TRUE,
    LABEL_WORKSPACE,
    LABEL_WORKSPACE_NAMESPACE,
    MAX_NODE_COUNT,
    WORKSPACE_FINALIZER,
    FieldError,
    Workspace,
    WorkspaceConditionType,
    WorkspaceReason,
    WorkspaceState,
    parse_workspace,
    validate_workspace,
)
from kaito_core.controllers.workspace.children import (
    APPLIED_HASH_ANNOTATION,
    WorkspaceChildren,
    manifest_hash,
    owned_by,
)
from kaito_core.controllers.workspace.context import BuildContext
from kaito_core.controllers.workspace.kinds import CONTROLLERREVISION, MACHINE, WORKSPACE
from kaito_core.controllers.workspace.naming import machine_name, revision_name
from kaito_core.controllers.workspace.nodes import (
    NodePlan,
    ResourceState,
    labelled_gpus,
    machine_manifest,
    plan_nodes,
    required_node_count,
    resource_state,
    unplaced_message,
)
from kaito_core.controllers.workspace.revision import controller_revision, prune_revisions, spec_hash
from kaito_core.controllers.workspace.settings import WorkspaceSettings
from kaito_core.controllers.workspace.status import Check, Observed, compute_status, status_equal, status_events
from kaito_core.engine import (
    DEPLOYMENT,
    JOB,
    NODE,
    STATEFULSET,
    AlreadyExistsError,
    APIError,
    Client,
    ConflictError,
    EventRecorder,
    EventType,
    NotFoundError,
    Request,
    Result,
    SharedCache,
    meta,
)
from kaito_core.provisioning.identity import InstallIdentity

__all__ = ["APPLIED_HASH_ANNOTATION", "WorkspaceReconciler", "manifest_hash"]

log = structlog.get_logger("kaito_core.controllers.workspace")

#: Slot names a deleting Workspace asks the API server about even when the cache shows no Machine
#: (every slot a valid ``count`` can have).
_MAX_TEARDOWN_SLOTS = MAX_NODE_COUNT

_WARNING_REASONS = {
    WorkspaceReason.VALIDATION_FAILED, WorkspaceReason.INFERENCE_FAILED, WorkspaceReason.JOB_FAILED,
    WorkspaceReason.FAILED, WorkspaceReason.INSUFFICIENT_CAPACITY, WorkspaceReason.QUOTA_EXCEEDED,
    WorkspaceReason.INSTANCE_TYPE_UNAVAILABLE, WorkspaceReason.PROVISIONING_FAILED,
}


class WorkspaceReconciler(WorkspaceChildren):
    """Reconciles Workspaces (see the module docstring); reads come from ``cache``."""

    def __init__(self, client: Client, cache: SharedCache, recorder: EventRecorder | None = None,
                 settings: WorkspaceSettings | None = None, *, catalog: Catalog | None = None,
                 provisioner: str | None = None, install: InstallIdentity | None = None):
        self.client = client
        self.cache = cache
        self.recorder = recorder
        self.settings = settings or WorkspaceSettings()
        self.catalog = catalog or default_catalog()
        self.provisioner = provisioner
        self.install = install
        self._metadata_written: dict[tuple[str, str], str | None] = {}
        """Workspace -> the resourceVersion its finalizer/revision patch was made from, until the cache moves on."""
        self._status_written: dict[tuple[str, str], tuple[str | None, dict[str, Any]]] = {}
        """Workspace -> (the resourceVersion a status patch was computed from, the status it wrote), until
        the cache shows a newer version (one entry per Workspace whose status is in flight)."""
        """Stamped on every Machine (``kaito.sh/install``): what the leak collector may delete."""

    # ------------------------------------------------------------------ entry

    async def reconcile(self, request: Request) -> Result:
        obj = self.cache.get(WORKSPACE, request.namespace, request.name)
        key = (str(request.namespace), request.name)
        if obj is None or meta(obj).deleting:
            self._status_written.pop(key, None)
            self._metadata_written.pop(key, None)
        if obj is None:
            return Result()  # gone: children follow by ownerReference
        if meta(obj).deleting:
            return await self._teardown(obj)
        if self._metadata_written.get(key) == meta(obj).resource_version:
            # Our finalizer/revision patch is not in the cache yet: a patch now would only be refused
            # (Conflict); the watch event of that patch brings the next pass.
            return Result(requeue_after=1.0)
        self._metadata_written.pop(key, None)
        errors = validate_workspace(obj, catalog=self.catalog, default_runtime=self.settings.default_runtime)
        ws, parse_errors = parse_workspace(obj)
        digest = spec_hash(ws) if not errors and ws is not None else None
        try:
            obj = await self._ensure_metadata(obj, digest)
        except ConflictError:
            return Result(requeue=True)  # the cache was behind; the next run sees the newer object
        if errors or ws is None or digest is None:
            return await self._invalid(obj, errors or parse_errors)
        return await self._reconcile_valid(obj, ws, digest)

    async def _ensure_metadata(self, obj: dict[str, Any], digest: str | None) -> dict[str, Any]:
        """The finalizer and the revision annotation in one patch (one write, not two), before any child
        is made; guarded by resourceVersion, so a stale view answers Conflict and never drops a finalizer."""
        view = meta(obj)
        finalizers = list(view.finalizers)
        patch: dict[str, Any] = {"resourceVersion": view.resource_version}
        if WORKSPACE_FINALIZER not in finalizers:
            patch["finalizers"] = [*finalizers, WORKSPACE_FINALIZER]
        if digest is not None and view.annotations.get(ANNOTATION_REVISION) != digest:
            patch["annotations"] = {ANNOTATION_REVISION: digest}
        if len(patch) == 1:
            return obj
        patched = await self.client.patch(WORKSPACE, view.name, {"metadata": patch}, view.namespace)
        self._metadata_written[(str(view.namespace), view.name)] = view.resource_version
        return patched

    async def _invalid(self, obj: dict[str, Any], errors: list[FieldError]) -> Result:
        message = ("the Workspace is invalid, nothing was created; fix it and apply again: "
                   + "; ".join(str(e) for e in errors))
        observed = Observed(generation=meta(obj).generation, invalid=message)
        await self._write_status(obj, observed)
        return Result()  # reconciled again when it changes

    async def _reconcile_valid(self, obj: dict[str, Any], ws: Workspace, revision: str) -> Result:
        preset = self.catalog.find_model(ws.preset.name) if ws.preset is not None else None
        sku = self.catalog.find_sku(ws.resource.instance_type) if ws.resource.instance_type else None
        await self._revision(obj, ws, revision)
        plan, resource = await self._nodes(ws, preset, sku, detail=self._long_wait(obj))
        ctx = BuildContext(ws=ws, settings=self.settings, preset=preset, sku=sku or plan.gpus, nodes=plan.nodes,
                           labelled_nodes=frozenset(plan.labelled), revision=revision)
        observed = Observed(generation=meta(obj).generation, is_tuning=ws.tuning is not None,
                            resource=Check("True" if resource.ready else "False", resource.reason, resource.message),
                            worker_nodes=list(resource.usable))
        if ws.inference is not None:
            observed.workload = await self._inference(ctx, resource)
            done = observed.workload.ok and resource.ready
        else:
            observed.job_started, observed.job_succeeded = await self._tuning(ctx, resource)
            done = observed.job_succeeded.ok or observed.job_succeeded.reason == WorkspaceReason.JOB_FAILED
        await self._write_status(obj, observed)
        return Result() if done else Result(requeue_after=self.settings.requeue_seconds)

    # ------------------------------------------------------------------ finalizer / teardown

    async def _set_finalizers(self, obj: dict[str, Any], finalizers: list[str]) -> dict[str, Any]:
        """Merge patch guarded by resourceVersion: a stale view answers Conflict, never loses a finalizer."""
        view = meta(obj)
        patch = {"metadata": {"finalizers": finalizers, "resourceVersion": view.resource_version}}
        return await self.client.patch(WORKSPACE, view.name, patch, view.namespace)

    def _own_machines(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return self.cache.list(MACHINE, label_selector={LABEL_WORKSPACE: name, LABEL_WORKSPACE_NAMESPACE: namespace})

    async def _teardown(self, obj: dict[str, Any]) -> Result:
        view = meta(obj)
        namespace, name = str(view.namespace), view.name
        if WORKSPACE_FINALIZER not in view.finalizers:
            return Result()
        count = (obj.get("resource") or {}).get("count")
        slots = min(count, _MAX_TEARDOWN_SLOTS) if isinstance(count, int) and count > 0 else 1
        await self._stop_workloads(namespace, name, view.uid)
        names = {meta(m).name for m in self._own_machines(namespace, name)}
        if (obj.get("status") or {}).get("state") != WorkspaceState.DELETING:
            # The cache may lag behind a Machine created just now: its name is deterministic, ask
            # for it too. Once the first pass recorded Deleting, every slot was asked for and no
            # Machine can be made since (one reconcile per Workspace at a time): the cache suffices.
            names |= {machine_name(namespace, name, slot) for slot in range(slots)}
        remaining: list[str] = []
        for machine in sorted(names):
            cached = self.cache.get(MACHINE, None, machine)
            if cached is not None and meta(cached).deleting:
                remaining.append(machine)
                continue
            answer = await self.client.delete(MACHINE, machine, missing_ok=True, propagation_policy="Background")
            if answer is not None and answer.get("kind") == "Machine" and meta(answer).finalizers:
                remaining.append(machine)
        if remaining:
            if (obj.get("status") or {}).get("state") != WorkspaceState.DELETING:
                status = dict(obj.get("status") or {})
                status["state"] = WorkspaceState.DELETING
                try:
                    await self.client.patch_status(WORKSPACE, name, {"status": status}, namespace)
                except NotFoundError:
                    return Result()
            log.info("waiting for machines to go", machines=remaining)
            return Result(requeue_after=self.settings.teardown_poll_seconds)
        finalizers = [f for f in view.finalizers if f != WORKSPACE_FINALIZER]
        try:
            await self._set_finalizers(obj, finalizers)
        except NotFoundError:
            return Result()
        except ConflictError:
            return Result(requeue=True)
        await self._emit(obj, "Normal", "Deleted", "machines are gone; the workload goes with the Workspace")
        return Result()

    async def _stop_workloads(self, namespace: str, name: str, uid: str | None) -> None:
        """Delete the workload before its nodes: pods stop gracefully on nodes that still exist,
        and no controller recreates them onto nodes on their way out (garbage collection would
        only remove them once the finalizer is gone)."""
        for kind in (DEPLOYMENT, STATEFULSET, JOB):
            cached = self.cache.get(kind, namespace, name, copy=False)
            if cached is not None and owned_by(cached, uid) and not meta(cached).deleting:
                # uid-conditional: never a same-named object made since the cache saw this one.
                with contextlib.suppress(ConflictError):
                    await self.client.delete(kind, name, namespace, missing_ok=True,
                                             propagation_policy="Background", uid=meta(cached).uid)

    # ------------------------------------------------------------------ revision

    async def _revision(self, obj: dict[str, Any], ws: Workspace, digest: str) -> None:
        """The ControllerRevision history (the annotation went on with the finalizer)."""
        try:
            await self._record_revision(obj, ws, digest)
        except APIError as exc:
            # The history is for people; it must never hold the Workspace up.
            log.warning("could not record the revision history", error=str(exc))

    async def _record_revision(self, obj: dict[str, Any], ws: Workspace, digest: str) -> None:
        namespace = ws.namespace
        revisions = self.cache.list(CONTROLLERREVISION, namespace, label_selector={LABEL_WORKSPACE: ws.name})
        revisions = [r for r in revisions if owned_by(r, ws.metadata.uid)]
        name = revision_name(ws.name, digest)
        current = next((r for r in revisions if meta(r).name == name), None)
        top = max((int(r.get("revision") or 0) for r in revisions), default=0)
        if current is not None and int(current.get("revision") or 0) < top:
            # Back to an earlier spec: it becomes the newest revision again. A ControllerRevision's
            # data is immutable (and compared byte for byte), so it is made anew rather than patched.
            await self.client.delete(CONTROLLERREVISION, name, namespace, missing_ok=True)
            revisions = [r for r in revisions if meta(r).name != name]
            current = None
        if current is None:
            try:
                current = await self.client.create(controller_revision(ws, digest, revisions), kind=CONTROLLERREVISION)
            except AlreadyExistsError:
                return  # made by an earlier run the cache has not shown yet
            revisions.append(current)
            if int(current.get("revision") or 0) > 1:  # the first one is the Workspace's creation: no news
                await self._emit(obj, "Normal", "RevisionCreated",
                                 f"spec revision {current.get('revision')} ({digest}) recorded")
        for old in prune_revisions(revisions, self.settings.revision_history, name):
            await self.client.delete(CONTROLLERREVISION, old, namespace, missing_ok=True)

    # ------------------------------------------------------------------ nodes

    def _candidate_nodes(self, ws: Workspace, machines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The nodes this Workspace could use or already uses: its Machines' nodes and those that
        match ``labelSelector.matchLabels`` (the label index answers; no scan of every Node)."""
        match_labels = ws.resource.label_selector.match_labels or {}
        found = {meta(n).name: n for n in self.cache.list(NODE, label_selector=dict(match_labels), copy=False)}
        for machine in machines:
            node_name = (machine.get("status") or {}).get("nodeName")
            if node_name and node_name not in found:
                node = self.cache.get(NODE, None, str(node_name), copy=False)
                if node is not None:
                    found[str(node_name)] = node
        return list(found.values())

    def _long_wait(self, obj: Mapping[str, Any]) -> bool:
        """ResourceReady has been False for longer than ``status_detail_after_seconds``."""
        cond = next((c for c in (obj.get("status") or {}).get("conditions") or ()
                     if c.get("type") == WorkspaceConditionType.RESOURCE_READY), None)
        if cond is None or cond.get("status") == CONDITION_TRUE:
            return False
        try:
            since = dt.datetime.fromisoformat(str(cond.get("lastTransitionTime")).replace("Z", "+00:00"))
        except ValueError:
            return True
        return (dt.datetime.now(dt.UTC) - since).total_seconds() >= self.settings.status_detail_after_seconds

    async def _nodes(self, ws: Workspace, preset: ModelPreset | None, sku: GpuSku | None, *,
                     detail: bool = True) -> tuple[NodePlan, ResourceState]:
        machines = self._own_machines(ws.namespace, ws.name)
        nodes = self._candidate_nodes(ws, machines)
        # No instance type: the nodes' GPU feature discovery labels stand in for the SKU (Kaito's BYO).
        gpus = labelled_gpus(ws, preset, nodes) if not ws.resource.instance_type else None
        plan = plan_nodes(ws, required_node_count(ws, preset, sku or gpus), machines, nodes, preset=preset)
        plan.gpus = gpus
        if plan.create_slots and not ws.resource.instance_type:
            return plan, ResourceState(False, WorkspaceReason.WAITING_FOR_NODES, unplaced_message(plan))
        # A bounded batch per pass: the Machines made now bring the next pass (their events), which makes
        # the next batch; ResourceReady counts the rest as still to create.
        batch, plan.create_slots = (plan.create_slots[:self.settings.machine_create_batch],
                                    plan.create_slots[self.settings.machine_create_batch:])
        made: list[str] = []
        for slot in batch:
            manifest = machine_manifest(ws, slot, preset=preset, sku=sku, provisioner=self.provisioner,
                                        install=self.install)
            try:
                created = await self.client.create(manifest, kind=MACHINE)
            except AlreadyExistsError:
                continue  # made by an earlier run the cache has not shown yet
            made.append(manifest["metadata"]["name"])
            plan.machines.append(created)
        if made:
            # "Nodes requested": one Event per batch, not one per Machine.
            await self._emit(self._ref(ws), "Normal", "MachineCreated",
                             f"requested {len(made)} {ws.resource.instance_type} node(s): Machine {', '.join(made)}")
        for name in plan.delete_machines:
            await self.client.delete(MACHINE, name, missing_ok=True)
            await self._emit(self._ref(ws), "Normal", "MachineDeleted", f"deleted Machine {name}: not needed any more")
        nodes_by_name = {meta(n).name: n for n in nodes}
        return plan, resource_state(plan, nodes_by_name, detail=detail)

    # ------------------------------------------------------------------ status / events

    async def _write_status(self, obj: dict[str, Any], observed: Observed) -> None:
        """One status patch per reconcile, only when it changed; its Events are written first, so every
        write a change causes is done by the time the Workspace shows it (nothing drains after Ready)."""
        current = obj.get("status") or {}
        new = compute_status(current, observed)
        view = meta(obj)
        key = (str(view.namespace), view.name)
        pending = self._status_written.pop(key, None)
        if pending is not None and pending[0] == view.resource_version:
            # The cache has not shown our last status patch yet: compare with what it wrote, or the
            # next pass (woken by that very patch, or by a child) writes the same status again.
            self._status_written[key] = pending
            current = pending[1]
        if status_equal(current, new):
            return
        for event in status_events(current, new, warnings=_WARNING_REASONS):
            await self._emit(obj, event.type, event.reason, event.message)
        try:
            await self.client.patch_status(WORKSPACE, view.name, {"status": new}, view.namespace)
        except NotFoundError:
            return
        self._status_written[key] = (view.resource_version, new)

    @staticmethod
    def _ref(ws: Workspace) -> dict[str, Any]:
        return {"apiVersion": WORKSPACE.api_version,
                "metadata": {"name": ws.name, "namespace": ws.namespace, "uid": ws.metadata.uid}}

    async def _emit(self, obj: Mapping[str, Any], type_: EventType, reason: str, message: str) -> None:
        """An Event about the Workspace, written before this returns (the recorder folds repeats)."""
        if self.recorder is None:
            return
        ref = {"apiVersion": obj.get("apiVersion") or WORKSPACE.api_version, "kind": "Workspace",
               "metadata": dict(obj.get("metadata") or {})}
        await self.recorder.emit(ref, type_, reason, message)
