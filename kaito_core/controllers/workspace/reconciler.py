"""The Workspace reconciler: one level-based pass from the cache toward the Workspace.

Each run: finalizer -> validate (the shared validator; never trust the webhook ran) ->
revision -> nodes (reuse ready ones, create Machines for the rest in bounded batches, delete extras) ->
workload (inference or tuning, once the nodes are ready) -> status (recomputed, written
only when it changed, an Event per transition). On delete: delete the workload (so pods stop
on nodes that still exist), delete this Workspace's Machines, wait until they are gone, drop
the finalizer; the rest goes by ownerReference.

Running it twice changes nothing; a crash between any two writes is picked up by the
next run; names are deterministic, so a stale cache cannot create a second object.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import structlog
from kaito_presets import Catalog, GpuSku, ModelPreset, default_catalog

from kaito_core.api import (
    ANNOTATION_REVISION,
    CONDITION_FALSE,
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
from kaito_core.api.configmaps import describe_config_errors, validate_inference_config, validate_tuning_config
from kaito_core.controllers.workspace.auth import generated_api_key_secret
from kaito_core.controllers.workspace.context import BuildContext
from kaito_core.controllers.workspace.inference import (
    default_inference_config_data,
    headless_service,
    inference_config_name,
    inference_service,
    inference_workload,
    is_distributed,
)
from kaito_core.controllers.workspace.kinds import CONTROLLERREVISION, MACHINE, WORKSPACE
from kaito_core.controllers.workspace.naming import headless_service_name, machine_name, revision_name
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
from kaito_core.controllers.workspace.status import (
    Check,
    Observed,
    compute_status,
    inference_check,
    job_checks,
    status_equal,
    status_events,
)
from kaito_core.controllers.workspace.tuning import (
    TUNING_HASH_ANNOTATION,
    tuning_config_map,
    tuning_hash,
    tuning_job,
)
from kaito_core.controllers.workspace.weights import weights_cache_claim
from kaito_core.engine import (
    CONFIGMAP,
    DEPLOYMENT,
    JOB,
    NODE,
    PERSISTENTVOLUMECLAIM,
    POD,
    SECRET,
    SERVICE,
    STATEFULSET,
    AlreadyExistsError,
    APIError,
    Client,
    ConflictError,
    EventRecorder,
    EventType,
    NotFoundError,
    Request,
    ResourceKind,
    Result,
    SharedCache,
)
from kaito_core.provisioning.identity import InstallIdentity

__all__ = ["APPLIED_HASH_ANNOTATION", "WorkspaceReconciler", "manifest_hash"]

log = structlog.get_logger("kaito_core.controllers.workspace")

#: On every child we apply: a hash of what we applied, so an unchanged child is not written again.
APPLIED_HASH_ANNOTATION = "kaito.sh/applied-hash"

#: Slot names a deleting Workspace asks the API server about even when the cache shows no Machine
#: (every slot a valid ``count`` can have).
_MAX_TEARDOWN_SLOTS = MAX_NODE_COUNT

_WARNING_REASONS = {
    WorkspaceReason.VALIDATION_FAILED, WorkspaceReason.INFERENCE_FAILED, WorkspaceReason.JOB_FAILED,
    WorkspaceReason.FAILED, WorkspaceReason.INSUFFICIENT_CAPACITY, WorkspaceReason.QUOTA_EXCEEDED,
    WorkspaceReason.INSTANCE_TYPE_UNAVAILABLE, WorkspaceReason.PROVISIONING_FAILED,
}


def manifest_hash(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    return dict(obj.get("metadata") or {})


def _annotations(obj: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(_meta(obj).get("annotations") or {}) if obj else {}


def _owned_by(obj: Mapping[str, Any] | None, uid: str | None) -> bool:
    return obj is not None and any(ref.get("uid") == uid and ref.get("controller")
                                   for ref in _meta(obj).get("ownerReferences") or ())


class WorkspaceReconciler:
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
        if obj is None or _meta(obj).get("deletionTimestamp"):
            self._status_written.pop(key, None)
            self._metadata_written.pop(key, None)
        if obj is None:
            return Result()  # gone: children follow by ownerReference
        if _meta(obj).get("deletionTimestamp"):
            return await self._teardown(obj)
        if self._metadata_written.get(key) == _meta(obj).get("resourceVersion"):
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
        meta = _meta(obj)
        finalizers = list(meta.get("finalizers") or [])
        patch: dict[str, Any] = {"resourceVersion": meta.get("resourceVersion")}
        if WORKSPACE_FINALIZER not in finalizers:
            patch["finalizers"] = [*finalizers, WORKSPACE_FINALIZER]
        if digest is not None and _annotations(obj).get(ANNOTATION_REVISION) != digest:
            patch["annotations"] = {ANNOTATION_REVISION: digest}
        if len(patch) == 1:
            return obj
        patched = await self.client.patch(WORKSPACE, meta["name"], {"metadata": patch}, meta.get("namespace"))
        self._metadata_written[(str(meta.get("namespace")), str(meta["name"]))] = meta.get("resourceVersion")
        return patched

    async def _invalid(self, obj: dict[str, Any], errors: list[FieldError]) -> Result:
        message = ("the Workspace is invalid, nothing was created; fix it and apply again: "
                   + "; ".join(str(e) for e in errors))
        observed = Observed(generation=_meta(obj).get("generation"), invalid=message)
        await self._write_status(obj, observed)
        return Result()  # reconciled again when it changes

    async def _reconcile_valid(self, obj: dict[str, Any], ws: Workspace, revision: str) -> Result:
        preset = self.catalog.find_model(ws.preset.name) if ws.preset is not None else None
        sku = self.catalog.find_sku(ws.resource.instance_type) if ws.resource.instance_type else None
        await self._revision(obj, ws, revision)
        plan, resource = await self._nodes(ws, preset, sku, detail=self._long_wait(obj))
        ctx = BuildContext(ws=ws, settings=self.settings, preset=preset, sku=sku or plan.gpus, nodes=plan.nodes,
                           labelled_nodes=frozenset(plan.labelled), revision=revision)
        observed = Observed(generation=_meta(obj).get("generation"), is_tuning=ws.tuning is not None,
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
        meta = _meta(obj)
        patch = {"metadata": {"finalizers": finalizers, "resourceVersion": meta.get("resourceVersion")}}
        return await self.client.patch(WORKSPACE, meta["name"], patch, meta.get("namespace"))

    def _own_machines(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return self.cache.list(MACHINE, label_selector={LABEL_WORKSPACE: name, LABEL_WORKSPACE_NAMESPACE: namespace})

    async def _teardown(self, obj: dict[str, Any]) -> Result:
        meta = _meta(obj)
        namespace, name = str(meta.get("namespace")), str(meta["name"])
        if WORKSPACE_FINALIZER not in (meta.get("finalizers") or []):
            return Result()
        count = (obj.get("resource") or {}).get("count")
        slots = min(count, _MAX_TEARDOWN_SLOTS) if isinstance(count, int) and count > 0 else 1
        await self._stop_workloads(namespace, name, meta.get("uid"))
        names = {_meta(m)["name"] for m in self._own_machines(namespace, name)}
        if (obj.get("status") or {}).get("state") != WorkspaceState.DELETING:
            # The cache may lag behind a Machine created just now: its name is deterministic, ask
            # for it too. Once the first pass recorded Deleting, every slot was asked for and no
            # Machine can be made since (one reconcile per Workspace at a time): the cache suffices.
            names |= {machine_name(namespace, name, slot) for slot in range(slots)}
        remaining: list[str] = []
        for machine in sorted(names):
            cached = self.cache.get(MACHINE, None, machine)
            if cached is not None and _meta(cached).get("deletionTimestamp"):
                remaining.append(machine)
                continue
            answer = await self.client.delete(MACHINE, machine, missing_ok=True, propagation_policy="Background")
            if answer is not None and answer.get("kind") == "Machine" and _meta(answer).get("finalizers"):
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
        finalizers = [f for f in meta.get("finalizers") or [] if f != WORKSPACE_FINALIZER]
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
            if cached is not None and _owned_by(cached, uid) and not _meta(cached).get("deletionTimestamp"):
                # uid-conditional: never a same-named object made since the cache saw this one.
                with contextlib.suppress(ConflictError):
                    await self.client.delete(kind, name, namespace, missing_ok=True,
                                             propagation_policy="Background", uid=_meta(cached).get("uid"))

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
        revisions = [r for r in revisions if _owned_by(r, ws.metadata.uid)]
        name = revision_name(ws.name, digest)
        current = next((r for r in revisions if _meta(r).get("name") == name), None)
        top = max((int(r.get("revision") or 0) for r in revisions), default=0)
        if current is not None and int(current.get("revision") or 0) < top:
            # Back to an earlier spec: it becomes the newest revision again. A ControllerRevision's
            # data is immutable (and compared byte for byte), so it is made anew rather than patched.
            await self.client.delete(CONTROLLERREVISION, name, namespace, missing_ok=True)
            revisions = [r for r in revisions if _meta(r).get("name") != name]
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
        found = {_meta(n)["name"]: n for n in self.cache.list(NODE, label_selector=dict(match_labels), copy=False)}
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
        nodes_by_name = {_meta(n)["name"]: n for n in nodes}
        return plan, resource_state(plan, nodes_by_name, detail=detail)

    # ------------------------------------------------------------------ children

    async def _ensure(self, desired: dict[str, Any], kind: ResourceKind) -> dict[str, Any]:
        """Server-side apply ``desired`` unless the cached child was applied from the same manifest."""
        meta = desired["metadata"]
        digest = manifest_hash(desired)
        meta.setdefault("annotations", {})[APPLIED_HASH_ANNOTATION] = digest
        cached = self.cache.get(kind, meta.get("namespace"), meta["name"])
        if cached is not None and _annotations(cached).get(APPLIED_HASH_ANNOTATION) == digest:
            return cached
        return await self.client.apply(desired, kind=kind, force=True)

    async def _ensure_api_key_secret(self, ctx: BuildContext) -> None:
        """The token Secret of a LoadBalancer Workspace that named none: created once, before the
        Service turns public, and never rewritten (its clients keep the token). One write, only
        while the Service is not yet a LoadBalancer; a Secret of that name already there is used."""
        secret = generated_api_key_secret(ctx)
        if secret is None:
            return
        service = self.cache.get(SERVICE, ctx.namespace, ctx.name, copy=False)
        if service is not None and (service.get("spec") or {}).get("type") == "LoadBalancer":
            return
        with contextlib.suppress(AlreadyExistsError):
            await self.client.create(secret, kind=SECRET)

    async def _ensure_weights_claim(self, ctx: BuildContext) -> None:
        claim = weights_cache_claim(ctx)
        if claim is not None:
            await self._ensure(claim, PERSISTENTVOLUMECLAIM)

    async def _delete_owned(self, kind: ResourceKind, namespace: str, name: str, uid: str | None) -> None:
        cached = self.cache.get(kind, namespace, name)
        if _owned_by(cached, uid):
            await self.client.delete(kind, name, namespace, missing_ok=True, propagation_policy="Background")

    def _pods(self, ctx: BuildContext) -> list[dict[str, Any]]:
        return self.cache.list(POD, ctx.namespace, label_selector=ctx.selector_labels)

    async def _inference(self, ctx: BuildContext, resource: ResourceState) -> Check:
        ws = ctx.ws
        assert ws.inference is not None
        distributed = is_distributed(ctx)
        kind, other = (STATEFULSET, DEPLOYMENT) if distributed else (DEPLOYMENT, STATEFULSET)
        existing = self.cache.get(kind, ctx.namespace, ctx.name)
        if not resource.ready or not ctx.nodes:
            # Never deploy before the nodes are ready; an existing workload is left as it is.
            return inference_check(existing, self._pods(ctx)) if existing is not None else Check(
                CONDITION_FALSE, WorkspaceReason.WAITING_FOR_RESOURCE, "waiting for the GPU nodes before deploying")
        config_data: dict[str, Any] | None = None
        if ws.inference.template is None:
            if ws.inference.config:
                user = self.cache.get(CONFIGMAP, ctx.namespace, ws.inference.config)
                if user is None:
                    return inference_check(existing, self._pods(ctx), blocked=(
                        f"ConfigMap {ws.inference.config} (inference.config) not found in namespace "
                        f"{ctx.namespace}; create it or remove inference.config to use the preset's defaults"))
                config_data = dict(user.get("data") or {})
                problems = validate_inference_config(config_data, name=ws.inference.config, preset=ctx.preset)
                if problems:
                    return inference_check(existing, self._pods(ctx), blocked=describe_config_errors(
                        ws.inference.config, "inference.config", problems))
            else:
                config_data = default_inference_config_data(ctx)  # carried by the pod template
            # The default config's ConfigMap of an earlier version is not used any more.
            await self._delete_owned(CONFIGMAP, ctx.namespace, inference_config_name(ctx), ws.metadata.uid)
        await self._ensure_weights_claim(ctx)
        await self._delete_owned(other, ctx.namespace, ctx.name, ws.metadata.uid)
        workload = await self._ensure(inference_workload(ctx, config_data=config_data), kind)
        await self._ensure_api_key_secret(ctx)
        await self._ensure(inference_service(ctx), SERVICE)
        if distributed:
            await self._ensure(headless_service(ctx), SERVICE)
        else:
            await self._delete_owned(SERVICE, ctx.namespace, headless_service_name(ctx.name), ws.metadata.uid)
        return inference_check(workload, self._pods(ctx))

    async def _tuning(self, ctx: BuildContext, resource: ResourceState) -> tuple[Check, Check]:
        ws = ctx.ws
        assert ws.tuning is not None
        job = self.cache.get(JOB, ctx.namespace, ctx.name)
        if job is not None and not _owned_by(job, ws.metadata.uid):
            message = f"a Job named {ctx.name} exists and does not belong to this Workspace; delete or rename it"
            return job_checks(None, [], blocked=message)
        want = tuning_hash(ctx)
        if job is not None and _annotations(job).get(TUNING_HASH_ANNOTATION) != want:
            # The pod template of a Job is immutable: a new tuning spec means a new Job.
            if not _meta(job).get("deletionTimestamp"):
                await self.client.delete(JOB, ctx.name, ctx.namespace, missing_ok=True,
                                         propagation_policy="Background")
                await self._emit(self._ref(ws), "Normal", "JobRecreated",
                                 "the tuning spec changed; replacing the tuning job")
            return job_checks(None, [])
        if job is None:
            if not resource.ready or not ctx.nodes:
                return job_checks(None, [])
            if ws.tuning.config:
                if self.cache.get(CONFIGMAP, ctx.namespace, ws.tuning.config) is None:
                    return job_checks(None, [], blocked=(
                        f"ConfigMap {ws.tuning.config} (tuning.config) not found in namespace {ctx.namespace}; "
                        "create it or remove tuning.config to use the method's default template"))
                user = self.cache.get(CONFIGMAP, ctx.namespace, ws.tuning.config) or {}
                problems = validate_tuning_config(user.get("data"), name=ws.tuning.config, method=ws.tuning.method)
                if problems:
                    return job_checks(None, [], blocked=describe_config_errors(
                        ws.tuning.config, "tuning.config", problems))
            else:
                await self._ensure(tuning_config_map(ctx), CONFIGMAP)
            await self._ensure_weights_claim(ctx)
            try:
                job = await self.client.create(tuning_job(ctx), kind=JOB)
                await self._emit(self._ref(ws), "Normal", "JobCreated", f"created tuning job {ctx.name}")
            except AlreadyExistsError:
                job = await self.client.get_or_none(JOB, ctx.name, ctx.namespace)
        elif not ws.tuning.config:
            await self._ensure(tuning_config_map(ctx), CONFIGMAP)
        return job_checks(job, self._pods(ctx))

    # ------------------------------------------------------------------ status / events

    async def _write_status(self, obj: dict[str, Any], observed: Observed) -> None:
        """One status patch per reconcile, only when it changed; its Events are written first, so every
        write a change causes is done by the time the Workspace shows it (nothing drains after Ready)."""
        current = obj.get("status") or {}
        new = compute_status(current, observed)
        meta = _meta(obj)
        key = (str(meta.get("namespace")), str(meta["name"]))
        pending = self._status_written.pop(key, None)
        if pending is not None and pending[0] == meta.get("resourceVersion"):
            # The cache has not shown our last status patch yet: compare with what it wrote, or the
            # next pass (woken by that very patch, or by a child) writes the same status again.
            self._status_written[key] = pending
            current = pending[1]
        if status_equal(current, new):
            return
        for event in status_events(current, new, warnings=_WARNING_REASONS):
            await self._emit(obj, event.type, event.reason, event.message)
        try:
            await self.client.patch_status(WORKSPACE, meta["name"], {"status": new}, meta.get("namespace"))
        except NotFoundError:
            return
        self._status_written[key] = (meta.get("resourceVersion"), new)

    @staticmethod
    def _ref(ws: Workspace) -> dict[str, Any]:
        return {"apiVersion": WORKSPACE.api_version,
                "metadata": {"name": ws.name, "namespace": ws.namespace, "uid": ws.metadata.uid}}

    async def _emit(self, obj: Mapping[str, Any], type_: EventType, reason: str, message: str) -> None:
        """An Event about the Workspace, written before this returns (the recorder folds repeats)."""
        if self.recorder is None:
            return
        ref = {"apiVersion": obj.get("apiVersion") or WORKSPACE.api_version, "kind": "Workspace",
               "metadata": _meta(obj)}
        await self.recorder.emit(ref, type_, reason, message)
