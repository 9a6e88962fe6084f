"""The Workspace reconciler's workload phase: the children it applies once the nodes are ready.

Inference: the Deployment (or, spread over nodes, the StatefulSet and its headless Service),
the Service, the weights cache claim and the API key Secret; the ConfigMap the Workspace names
is checked first. Tuning: the Job (made anew when the tuning spec changes: a Job's pod template
is immutable) and its ConfigMap. Each child is applied only when its manifest changed
(:data:`APPLIED_HASH_ANNOTATION`). :class:`WorkspaceChildren` is a part of
:class:`~kaito_core.controllers.workspace.reconciler.WorkspaceReconciler`, which gives it its
client, cache and Events.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kaito_core.api import CONDITION_FALSE, Workspace, WorkspaceReason
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
from kaito_core.controllers.workspace.naming import headless_service_name
from kaito_core.controllers.workspace.nodes import ResourceState
from kaito_core.controllers.workspace.status import Check, inference_check, job_checks
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
    PERSISTENTVOLUMECLAIM,
    POD,
    SECRET,
    SERVICE,
    STATEFULSET,
    AlreadyExistsError,
    Client,
    EventType,
    ResourceKind,
    SharedCache,
    controller_owner,
    meta,
)

__all__ = ["APPLIED_HASH_ANNOTATION", "WorkspaceChildren", "manifest_hash", "owned_by"]

#: On every child we apply: a hash of what we applied, so an unchanged child is not written again.
APPLIED_HASH_ANNOTATION = "kaito.sh/applied-hash"


def manifest_hash(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def owned_by(obj: Mapping[str, Any] | None, uid: str | None) -> bool:
    """``obj``'s controlling owner is the object with ``uid`` (never a same-named one made since)."""
    owner = controller_owner(obj) if obj is not None else None
    return owner is not None and owner.get("uid") == uid


class WorkspaceChildren:
    """The children of a Workspace: applied, replaced and deleted (a part of WorkspaceReconciler)."""

    if TYPE_CHECKING:  # given by WorkspaceReconciler
        client: Client
        cache: SharedCache

        @staticmethod
        def _ref(ws: Workspace) -> dict[str, Any]: ...

        async def _emit(self, obj: Mapping[str, Any], type_: EventType, reason: str, message: str) -> None: ...

    async def _ensure(self, desired: dict[str, Any], kind: ResourceKind) -> dict[str, Any]:
        """Server-side apply ``desired`` unless the cached child was applied from the same manifest."""
        metadata = desired["metadata"]
        digest = manifest_hash(desired)
        metadata.setdefault("annotations", {})[APPLIED_HASH_ANNOTATION] = digest
        cached = self.cache.get(kind, metadata.get("namespace"), metadata["name"])
        if cached is not None and meta(cached).annotations.get(APPLIED_HASH_ANNOTATION) == digest:
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
        if owned_by(cached, uid):
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
        if job is not None and not owned_by(job, ws.metadata.uid):
            message = f"a Job named {ctx.name} exists and does not belong to this Workspace; delete or rename it"
            return job_checks(None, [], blocked=message)
        want = tuning_hash(ctx)
        if job is not None and meta(job).annotations.get(TUNING_HASH_ANNOTATION) != want:
            # The pod template of a Job is immutable: a new tuning spec means a new Job.
            if not meta(job).deleting:
                await self.client.delete(JOB, ctx.name, ctx.namespace, missing_ok=True,
                                         propagation_policy="Background")
                await self._emit(self._ref(ws), "Normal", "JobRecreated",
                                 "the tuning spec changed; replacing the tuning job")
            return job_checks(None, [])
        if job is None:
            if not resource.ready or not ctx.nodes:
                return job_checks(None, [])
            if ws.tuning.config:
                user = self.cache.get(CONFIGMAP, ctx.namespace, ws.tuning.config)
                if user is None:
                    return job_checks(None, [], blocked=(
                        f"ConfigMap {ws.tuning.config} (tuning.config) not found in namespace {ctx.namespace}; "
                        "create it or remove tuning.config to use the method's default template"))
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
