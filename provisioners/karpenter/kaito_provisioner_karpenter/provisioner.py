"""The Karpenter provisioner: one ``karpenter.sh/v1`` NodeClaim per Machine.

For clusters running Karpenter (any cloud). ``create`` makes (or finds) the
NodeClaim named after the Machine, with requirements on
``node.kubernetes.io/instance-type`` (plus the Machine's own), the configured
``nodeClassRef`` (AKSNodeClass, EC2NodeClass, KWOKNodeClass or KaitoNodeClass),
``expireAfter: Never`` (a GPU node running a model must not be recycled under it),
no ``storage`` request (a resource the Node never reports would keep the NodeClaim
from ever becoming Initialized), the GPU taint and our labels (Karpenter copies them
to the Node). Karpenter does the rest; this plugin reads the NodeClaim back:

* ``status.providerID`` becomes the Machine's providerID (Launched) once the NodeClaim is
  Registered too (Karpenter's Node exists before that, tainted ``karpenter.sh/unregistered``
  and without the NodeClaim's labels and taints), and the Machine reconciler then finds the
  Node by it (Registered, Initialized);
* the NodeClaim's Launched/Registered/Initialized conditions are mirrored into
  ``NodeRef.message`` (shown in the Machine's conditions while it waits);
* a failed launch becomes the matching typed error (InsufficientCapacity, QuotaExceeded,
  InstanceTypeUnavailable, else Retryable). Real Karpenter (v1) reports one in two ways,
  and never as ``Launched=False``: a cloud error leaves ``Launched=Unknown`` with reason
  ``LaunchFailed`` (Karpenter retries the same NodeClaim, whose spec is immutable, forever),
  after which the plugin deletes the NodeClaim so the next attempt asks afresh; insufficient
  capacity or a missing or not-ready NodeClass makes Karpenter delete the NodeClaim itself
  (with a Warning event), which the plugin notices as a NodeClaim it made vanishing before
  it launched.

``delete`` deletes the NodeClaim; Karpenter's termination finalizer drains and deletes
the instance and its Node, and ``get`` keeps returning the NodeClaim until it is gone.
An ownerReference to the Machine lets Kubernetes collect the NodeClaim should the
Machine ever vanish without its finalizer.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kaito_core.api import (
    GPU_TAINT,
    LABEL_INSTANCE_TYPE,
    LABEL_MACHINE,
    LABEL_WORKSPACE,
    LABEL_WORKSPACE_NAMESPACE,
    Machine,
)
from kaito_core.engine import CRD, AlreadyExistsError, Client, ResourceKind
from kaito_core.provisioning import (
    LABEL_PROVISIONER,
    InstanceTypeUnavailableError,
    InsufficientCapacityError,
    NodeRef,
    ProvisionerContext,
    ProvisionerError,
    QuotaExceededError,
    RetryableError,
    node_labels_for,
    node_taints_for,
    parse_timestamp,
    taint_matches,
)

__all__ = [
    "LABEL_NODEPOOL",
    "NODECLAIM",
    "NODECLAIM_CRD",
    "NODEPOOL",
    "NODE_CLASS_GROUPS",
    "KarpenterProvisioner",
    "KarpenterSettings",
    "node_pool_manifest",
    "node_pool_name",
    "nodeclaim_conditions",
]

#: Karpenter's NodeClaim (cluster-scoped).
NODECLAIM: Final = ResourceKind("karpenter.sh", "v1", "NodeClaim", "nodeclaims", namespaced=False)
NODECLAIM_CRD: Final = "nodeclaims.karpenter.sh"
#: Karpenter's NodePool (cluster-scoped); the plugin makes one per Workspace with ``node_pool_per_workspace``.
NODEPOOL: Final = ResourceKind("karpenter.sh", "v1", "NodePool", "nodepools", namespaced=False)
_MAX_NAME = 253
LABEL_NODEPOOL: Final = "karpenter.sh/nodepool"
#: The API group of each NodeClass kind we know (``node_class_group`` overrides).
NODE_CLASS_GROUPS: Final = {
    "AKSNodeClass": "karpenter.azure.com",
    "EC2NodeClass": "karpenter.k8s.aws",
    "KWOKNodeClass": "karpenter.kwok.sh",
    "KaitoNodeClass": "kaito.sh",
}
_NOT_REQUESTED = ("storage", "ephemeral-storage")
_LIFECYCLE = ("Launched", "Registered", "Initialized")
#: Reasons of an Unknown condition that is merely waiting, not failing (operatorpkg's initial one).
_WAITING_REASONS = frozenset({"", "AwaitingReconciliation"})


class KarpenterSettings(BaseSettings):
    """Settings of the ``karpenter`` provisioner (environment: ``KAITO_KARPENTER_<FIELD>``)."""

    model_config = SettingsConfigDict(env_prefix="KAITO_KARPENTER_", use_attribute_docstrings=True,
                                      extra="forbid")

    node_class_kind: str = "AKSNodeClass"
    """Kind of the NodeClass the NodeClaims reference: AKSNodeClass, EC2NodeClass, KWOKNodeClass,
    KaitoNodeClass (or any other your Karpenter provider serves, with ``node_class_group``)."""
    node_class_group: str | None = None
    """API group of that kind (None: the known group of ``node_class_kind``)."""
    node_class_name: str = "default"
    """Name of the NodeClass object."""
    node_pool: str | None = "kaito"
    """Value of the ``karpenter.sh/nodepool`` label and requirement on each NodeClaim (None: none)."""
    name_prefix: str = ""
    """Prefix of NodeClaim names (``<prefix><machine name>``)."""
    os: str | None = "linux"
    """Required ``kubernetes.io/os`` of the node (None: no requirement)."""
    check_crd: bool = True
    """On start, fail unless the NodeClaim CRD (``nodeclaims.karpenter.sh``) is installed."""
    delete_failed_nodeclaims: bool = True
    """Delete a NodeClaim whose launch failed, so the next attempt asks Karpenter afresh."""
    extra_labels: dict[str, str] = Field(default_factory=dict)
    """Labels added to every NodeClaim (and so to its Node)."""
    node_pool_per_workspace: bool = False
    """Make one NodePool per Workspace, named ``<namespace>-<workspace>`` as Kaito v0.12 names it, and
    put each NodeClaim in its Workspace's pool (instead of in ``node_pool``); the pool is deleted with
    the Workspace's last NodeClaim. Needs RBAC on ``nodepools.karpenter.sh`` (get, list, create,
    patch, delete)."""

    def node_class_ref(self) -> dict[str, str]:
        group = self.node_class_group or NODE_CLASS_GROUPS.get(self.node_class_kind)
        if not group:
            raise ValueError(f"unknown NodeClass kind {self.node_class_kind!r}: set node_class_group "
                             f"(known kinds: {', '.join(NODE_CLASS_GROUPS)})")
        return {"group": group, "kind": self.node_class_kind, "name": self.node_class_name}


def node_pool_name(namespace: str, workspace: str) -> str:
    """``<namespace>-<workspace>``, as Kaito v0.12 names a Workspace's NodePool (hash-suffixed past 253)."""
    full = f"{namespace}-{workspace}"
    if len(full) <= _MAX_NAME:
        return full
    return f"{full[:_MAX_NAME - 10]}-{hashlib.sha256(full.encode()).hexdigest()[:9]}"


def node_pool_manifest(name: str, node_class_ref: Mapping[str, str], *, labels: Mapping[str, str] | None = None,
                       instance_types: Sequence[str] = (),
                       taints: Sequence[Mapping[str, str]] = (GPU_TAINT,)) -> dict[str, Any]:
    """A NodePool for NodeClaims made by this plugin, one that Karpenter never grows nor shrinks.

    The NodeClaims are ours, not Karpenter's provisioner's: ``limits.nodes: 0`` keeps it from adding
    nodes of its own to the pool for pending pods, and a zero-node budget with ``consolidateAfter:
    Never`` keeps its disruption controller from removing a GPU node that is empty while its model
    loads (Karpenter's NodeClaim lifecycle itself needs no NodePool).
    """
    requirements: list[dict[str, Any]] = [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]
    if instance_types:
        requirements = [{"key": LABEL_INSTANCE_TYPE, "operator": "In", "values": list(instance_types)}]
    return {
        "apiVersion": NODEPOOL.api_version,
        "kind": NODEPOOL.kind,
        "metadata": {"name": name, "labels": dict(labels or {})},
        "spec": {
            "template": {
                "metadata": {"labels": dict(labels or {})},
                "spec": {"nodeClassRef": dict(node_class_ref), "requirements": requirements,
                         "taints": [dict(t) for t in taints], "expireAfter": "Never"},
            },
            "limits": {"nodes": "0"},
            "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "Never",
                           "budgets": [{"nodes": "0"}]},
        },
    }


def nodeclaim_conditions(nodeclaim: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The NodeClaim's conditions by type."""
    return {str(c.get("type")): dict(c) for c in (nodeclaim.get("status") or {}).get("conditions") or ()}


def _summary(nodeclaim: Mapping[str, Any]) -> str:
    conditions = nodeclaim_conditions(nodeclaim)
    parts = []
    for type_ in _LIFECYCLE:
        cond = conditions.get(type_)
        if cond is None:
            parts.append(f"{type_}=Unknown")
            continue
        text = f"{type_}={cond.get('status')}"
        if cond.get("status") != "True" and (cond.get("reason") or cond.get("message")):
            text += f" ({cond.get('reason') or ''}{': ' if cond.get('message') else ''}{cond.get('message') or ''})"
        parts.append(text)
    return f"NodeClaim {nodeclaim['metadata']['name']}: " + ", ".join(parts)


def _registered(nodeclaim: Mapping[str, Any]) -> bool:
    return (nodeclaim_conditions(nodeclaim).get("Registered") or {}).get("status") == "True"


def _launch_failed(nodeclaim: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Launched condition when the launch failed (and no instance exists), else None."""
    if (nodeclaim.get("status") or {}).get("providerID"):
        return None
    launched = nodeclaim_conditions(nodeclaim).get("Launched") or {}
    status, reason = launched.get("status"), str(launched.get("reason") or "")
    # Karpenter's launch controller sets Unknown/LaunchFailed (or a provider's CreateError reason);
    # False is what other NodeClaim controllers (and older Karpenters) may write.
    if status == "False" or (status == "Unknown" and reason not in _WAITING_REASONS):
        return launched
    return None


def _launch_error(nodeclaim: Mapping[str, Any], cond: Mapping[str, Any]) -> ProvisionerError:
    reason = str(cond.get("reason") or "")
    message = str(cond.get("message") or "")
    text = (f"Karpenter could not launch NodeClaim {nodeclaim['metadata']['name']}: "
            f"{reason}{': ' if message else ''}{message}")
    blob = f"{reason} {message}".lower()
    if "insufficientcapacity" in blob or "insufficient capacity" in blob:
        return InsufficientCapacityError(text + "; kaito retries with a fresh NodeClaim")
    if "quota" in blob:
        return QuotaExceededError(text + "; raise the quota or pick another instance type")
    if "instancetype" in blob or "instance type" in blob or "offering" in blob:
        return InstanceTypeUnavailableError(text + "; check the instance type and the NodeClass")
    return RetryableError(text + "; retrying with a fresh NodeClaim", after=10.0)


class KarpenterProvisioner:
    """Asks Karpenter for GPU nodes through NodeClaims. See the module docstring."""

    name: ClassVar[str] = "karpenter"
    settings_model: ClassVar[type[KarpenterSettings]] = KarpenterSettings

    def __init__(self, settings: KarpenterSettings | None = None):
        self.settings = settings or KarpenterSettings()
        self.settings.node_class_ref()  # fail at load time on an unknown NodeClass kind
        self._client: Client | None = None
        #: NodeClaims this process made that have not launched yet (Machine name -> uid): one
        #: that vanishes from here was deleted by Karpenter, which is how it reports no capacity.
        self._launching: dict[str, str] = {}

    async def start(self, ctx: ProvisionerContext) -> None:
        self._client = ctx.client
        if self.settings.check_crd and await self.client.get_or_none(CRD, NODECLAIM_CRD) is None:
            raise RuntimeError(f"the CRD {NODECLAIM_CRD} is not installed: is Karpenter (v1) running in this "
                               "cluster? Install Karpenter or pick another provisioner")

    async def close(self) -> None:
        self._client = None

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("the karpenter provisioner was not started (call start(ctx) first)")
        return self._client

    # -- the NodeClaim

    def nodeclaim_name(self, machine: Machine) -> str:
        return f"{self.settings.name_prefix}{machine.name}"

    def pool_of(self, machine: Machine) -> str | None:
        """The NodePool the Machine's NodeClaim belongs to: its Workspace's, or ``node_pool``."""
        own = machine.metadata.labels or {}
        if self.settings.node_pool_per_workspace and own.get(LABEL_WORKSPACE) and own.get(LABEL_WORKSPACE_NAMESPACE):
            return node_pool_name(own[LABEL_WORKSPACE_NAMESPACE], own[LABEL_WORKSPACE])
        return self.settings.node_pool

    def nodepool_for(self, machine: Machine) -> dict[str, Any] | None:
        """The Workspace's NodePool (None unless ``node_pool_per_workspace``)."""
        own = machine.metadata.labels or {}
        pool = self.pool_of(machine)
        if not self.settings.node_pool_per_workspace or pool is None or pool == self.settings.node_pool:
            return None
        labels = {key: own[key] for key in (LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE)}
        labels[LABEL_PROVISIONER] = self.name
        return node_pool_manifest(pool, self.settings.node_class_ref(), labels=labels,
                                  instance_types=[machine.spec.instance_type] if machine.spec.instance_type else [])

    def nodeclaim_for(self, machine: Machine) -> dict[str, Any]:
        """The NodeClaim manifest for ``machine``."""
        instance_type = machine.spec.instance_type
        labels = {**self.settings.extra_labels, **node_labels_for(machine, self.name)}
        requirements: list[dict[str, Any]] = []
        if instance_type:
            requirements.append({"key": LABEL_INSTANCE_TYPE, "operator": "In", "values": [instance_type]})
        if pool := self.pool_of(machine):
            labels[LABEL_NODEPOOL] = pool
            requirements.append({"key": LABEL_NODEPOOL, "operator": "In", "values": [pool]})
        if self.settings.os:
            requirements.append({"key": "kubernetes.io/os", "operator": "In", "values": [self.settings.os]})
        seen = {r["key"] for r in requirements}
        for req in machine.spec.requirements or ():
            if req.key not in seen:
                requirements.append(req.model_dump(mode="json", exclude_none=True))
        taints = node_taints_for(machine, startup=False)
        if not any(taint_matches(t, GPU_TAINT) for t in taints):
            taints.insert(0, dict(GPU_TAINT))
        startup = [t for t in node_taints_for(machine) if not any(taint_matches(t, r) for r in taints)]
        requests = {k: v for k, v in ((machine.spec.resources.requests if machine.spec.resources else None)
                                      or {}).items() if k not in _NOT_REQUESTED}
        spec: dict[str, Any] = {
            "nodeClassRef": self.settings.node_class_ref(),
            "requirements": requirements,
            "taints": taints,
            "expireAfter": "Never",
        }
        if startup:
            spec["startupTaints"] = startup
        if requests:
            spec["resources"] = {"requests": requests}
        metadata: dict[str, Any] = {"name": self.nodeclaim_name(machine), "labels": labels}
        if machine.metadata.uid:
            metadata["ownerReferences"] = [{"apiVersion": machine.api_version, "kind": machine.kind,
                                            "name": machine.name, "uid": machine.metadata.uid,
                                            "blockOwnerDeletion": False}]
        return {"apiVersion": NODECLAIM.api_version, "kind": NODECLAIM.kind, "metadata": metadata, "spec": spec}

    @staticmethod
    def _ref(nodeclaim: Mapping[str, Any]) -> NodeRef:
        meta = nodeclaim.get("metadata") or {}
        status = nodeclaim.get("status") or {}
        labels = dict(meta.get("labels") or {})
        initialized = nodeclaim_conditions(nodeclaim).get("Initialized") or {}
        return NodeRef(
            provider_id=str(status.get("providerID") or ""),
            node_name=status.get("nodeName") or None,
            instance_type=labels.get(LABEL_INSTANCE_TYPE),
            ready=initialized.get("status") == "True",
            labels=labels,
            machine_name=labels.get(LABEL_MACHINE),
            created_at=parse_timestamp(meta.get("creationTimestamp")),
            message=_summary(nodeclaim),
        )

    async def _own(self, machine: Machine) -> dict[str, Any] | None:
        nodeclaim = await self.client.get_or_none(NODECLAIM, self.nodeclaim_name(machine))
        if nodeclaim is None:
            return None
        owner = ((nodeclaim.get("metadata") or {}).get("labels") or {}).get(LABEL_MACHINE)
        if owner != machine.name:
            raise ProvisionerError(
                f"NodeClaim {self.nodeclaim_name(machine)} exists but belongs to {owner or 'no Machine'}; "
                "delete it or set name_prefix")
        return nodeclaim

    # -- the protocol

    async def create(self, machine: Machine) -> NodeRef:
        nodeclaim = await self._own(machine)
        if nodeclaim is None and machine.name in self._launching:
            # Karpenter deletes a NodeClaim it cannot launch for want of capacity or of a ready
            # NodeClass (and says why only in an Event): report it, then ask afresh next time.
            self._launching.pop(machine.name)
            name = self.nodeclaim_name(machine)
            raise InsufficientCapacityError(
                f"Karpenter deleted NodeClaim {name} before it launched: insufficient capacity for "
                f"{machine.spec.instance_type or 'the node'}, or the {self.settings.node_class_kind} "
                f"{self.settings.node_class_name!r} is missing or not ready (kubectl get events "
                f"--field-selector involvedObject.name={name} says which); kaito retries with a fresh NodeClaim")
        if nodeclaim is None:
            if (pool := self.nodepool_for(machine)) is not None:
                await self.client.apply(pool, kind=NODEPOOL, force=True)
            try:
                nodeclaim = await self.client.create(self.nodeclaim_for(machine), kind=NODECLAIM)
            except AlreadyExistsError:
                nodeclaim = await self.client.get(NODECLAIM, self.nodeclaim_name(machine))
        if (nodeclaim.get("metadata") or {}).get("deletionTimestamp"):
            raise RetryableError(f"NodeClaim {self.nodeclaim_name(machine)} is still terminating; "
                                 "a new one is made once it is gone", after=5.0)
        launched = _launch_failed(nodeclaim)
        if launched is not None:
            error = _launch_error(nodeclaim, launched)
            if self.settings.delete_failed_nodeclaims:
                await self.client.delete(NODECLAIM, self.nodeclaim_name(machine), missing_ok=True)
            self._launching.pop(machine.name, None)
            raise error
        ref = self._ref(nodeclaim)
        if ref.provider_id and _registered(nodeclaim):
            self._launching.pop(machine.name, None)
            return ref
        if not ref.provider_id:
            self._launching[machine.name] = str((nodeclaim.get("metadata") or {}).get("uid") or "")
        # Karpenter's Node exists before Karpenter has registered it: until then it carries the
        # karpenter.sh/unregistered:NoExecute taint and lacks the NodeClaim's labels, taints and
        # startup taints, which Karpenter copies over at registration. Handing out the providerID
        # now would let the Machine take that Node for finished (and, say, find no startup taint
        # to remove before Karpenter adds it), so the launch is reported once Registered=True.
        return dataclasses.replace(ref, provider_id="", node_name=None)

    async def get(self, machine: Machine) -> NodeRef | None:
        nodeclaim = await self._own(machine)
        return self._ref(nodeclaim) if nodeclaim is not None else None

    async def delete(self, machine: Machine) -> None:
        self._launching.pop(machine.name, None)
        nodeclaim = await self.client.get_or_none(NODECLAIM, self.nodeclaim_name(machine))
        if nodeclaim is None:
            return
        owner = ((nodeclaim.get("metadata") or {}).get("labels") or {}).get(LABEL_MACHINE)
        if owner == machine.name and not (nodeclaim.get("metadata") or {}).get("deletionTimestamp"):
            await self.client.delete(NODECLAIM, self.nodeclaim_name(machine), missing_ok=True)
        if owner == machine.name:
            await self._drop_pool_if_unused(machine)

    async def _drop_pool_if_unused(self, machine: Machine) -> None:
        """Delete the Workspace's NodePool once none of its NodeClaims but this Machine's is left."""
        pool = self.nodepool_for(machine)
        if pool is None:
            return
        name = pool["metadata"]["name"]
        others = [nc for nc in (await self.client.list(NODECLAIM, label_selector=f"{LABEL_NODEPOOL}={name}")).items
                  if ((nc.get("metadata") or {}).get("labels") or {}).get(LABEL_MACHINE) != machine.name]
        if not others:
            await self.client.delete(NODEPOOL, name, missing_ok=True)

    async def list(self) -> builtins.list[NodeRef]:
        nodeclaims = await self.client.list(NODECLAIM, label_selector=f"{LABEL_PROVISIONER}={self.name}")
        return [self._ref(nc) for nc in nodeclaims.items]
