"""The ``byo`` (bring your own) provisioner: no provisioning, only matching.

A Machine is satisfied by an existing Node that is Ready, schedulable, matches the
Machine (instance type, ``spec.requirements``, allocatable GPUs, an optional label
selector from the settings) and is not claimed by another Machine. ``create`` claims
it by labelling it ``kaito.sh/machine=<machine>`` with an optimistic-concurrency
patch, so two Machines never claim the same Node; calling it again finds the claim.
When no Node matches, it raises :class:`NoMatchingNodeError` whose message lists
each candidate and why it does not fit, so a person knows which node to add or free.

The nodes are not ours: ``keeps_nodes`` tells the Machine reconciler never to cordon
or delete them; ``delete`` only removes the claim.
"""

from __future__ import annotations

import builtins
import contextlib
import time
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from kaito_core.api.constants import (
    LABEL_INSTANCE_TYPE,
    LABEL_MACHINE,
    LABEL_WORKSPACE,
    LABEL_WORKSPACE_NAMESPACE,
)
from kaito_core.api.machine import Machine
from kaito_core.engine.client import Client
from kaito_core.engine.errors import ConflictError, NotFoundError
from kaito_core.engine.objects import meta, spec_of
from kaito_core.engine.resources import NODE
from kaito_core.provisioning.nodes import (
    LABEL_PROVISIONER,
    machine_gpu_request,
    node_is_ready,
    node_problem,
    requirement_problem,
)
from kaito_core.provisioning.protocol import InsufficientCapacityError, NodeRef, ProvisionerContext

__all__ = ["ANNOTATION_CLAIMED_AT", "BYOProvisioner", "BYOSettings", "NoMatchingNodeError"]

#: On a claimed Node: when (Unix seconds) the claim was made.
ANNOTATION_CLAIMED_AT = "kaito.sh/claimed-at"
_MAX_LISTED = 10


class NoMatchingNodeError(InsufficientCapacityError):
    """No free, Ready Node matches the Machine."""

    reason = "NoMatchingNode"
    retry_after = 15.0


class BYOSettings(BaseModel):
    """Settings of the ``byo`` provisioner."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    node_selector: str | None = None
    """Only Nodes matching this label selector are candidates (e.g. ``kaito.sh/byo=true``)."""
    match_instance_type: bool = True
    """Require the Node's ``node.kubernetes.io/instance-type`` to equal the Machine's instance type."""
    require_gpus: bool = True
    """Require allocatable ``nvidia.com/gpu`` (the Machine's request, else at least one)."""
    retry_after: float = Field(default=15.0, gt=0)
    """Seconds before looking again when no Node matches."""


class BYOProvisioner:
    """Claims existing Nodes for Machines. See the module docstring."""

    name: ClassVar[str] = "byo"
    settings_model: ClassVar[type[BYOSettings]] = BYOSettings
    keeps_nodes: ClassVar[bool] = True

    def __init__(self, settings: BYOSettings | None = None):
        self.settings = settings or BYOSettings()
        self._client: Client | None = None

    async def start(self, ctx: ProvisionerContext) -> None:
        self._client = ctx.client
        await self.client.list_page(NODE, limit=1)

    async def close(self) -> None:
        self._client = None

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("the byo provisioner was not started (call start(ctx) first)")
        return self._client

    # -- matching

    def problem(self, machine: Machine, node: dict[str, Any]) -> str | None:
        """Why ``node`` cannot serve ``machine`` (None when it can)."""
        labels = meta(node).labels
        owner = labels.get(LABEL_MACHINE)
        if owner and owner != machine.name:
            return f"claimed by Machine {owner}"
        # Kubernetes' own "not yet" taints do not stop a claim: the Machine waits for them to go.
        wanted_gpus = (machine_gpu_request(machine) or 1) if self.settings.require_gpus else None
        state = node_problem(node, gpus=wanted_gpus, settled=False)
        if state is not None:
            return str(state)
        wanted_type = machine.spec.instance_type
        if self.settings.match_instance_type and wanted_type and labels.get(LABEL_INSTANCE_TYPE) != wanted_type:
            return f"instance type {labels.get(LABEL_INSTANCE_TYPE) or 'unlabelled'}, not {wanted_type}"
        for requirement in machine.spec.requirements or ():
            why = requirement_problem(labels, requirement.model_dump(exclude_none=True))
            if why:
                return why
        return None

    async def _nodes(self) -> builtins.list[dict[str, Any]]:
        nodes = await self.client.list(NODE, label_selector=self.settings.node_selector)
        return sorted(nodes.items, key=lambda n: meta(n).name)

    @staticmethod
    def _ref(node: dict[str, Any]) -> NodeRef:
        view = meta(node)
        labels, name = view.labels, view.name
        claimed = view.annotations.get(ANNOTATION_CLAIMED_AT)
        return NodeRef(
            provider_id=str(spec_of(node).get("providerID") or f"byo://{name}"),
            node_name=name, instance_type=labels.get(LABEL_INSTANCE_TYPE), ready=node_is_ready(node),
            labels=dict(labels), machine_name=labels.get(LABEL_MACHINE),
            created_at=float(claimed) if claimed and claimed.replace(".", "", 1).isdigit() else None)

    # -- the protocol

    async def create(self, machine: Machine) -> NodeRef:
        nodes = await self._nodes()
        for node in nodes:
            if meta(node).labels.get(LABEL_MACHINE) == machine.name:
                return self._ref(node)
        why: builtins.list[str] = []
        for node in nodes:
            name = meta(node).name
            problem = self.problem(machine, node)
            if problem:
                why.append(f"{name}: {problem}")
                continue
            patch = {"metadata": {"resourceVersion": meta(node).resource_version,
                                  "labels": {LABEL_MACHINE: machine.name, LABEL_PROVISIONER: self.name},
                                  "annotations": {ANNOTATION_CLAIMED_AT: f"{time.time():.0f}"}}}
            try:
                claimed = await self.client.patch(NODE, name, patch)
            except (ConflictError, NotFoundError):
                why.append(f"{name}: changed while claiming it")
                continue
            return self._ref(claimed)
        wanted = machine.spec.instance_type or "any instance type"
        checked = "; ".join(why[:_MAX_LISTED]) + (f"; and {len(why) - _MAX_LISTED} more" if len(why) > _MAX_LISTED
                                                  else "")
        raise NoMatchingNodeError(
            f"no free Ready node matches Machine {machine.name} ({wanted}, "
            f"{machine_gpu_request(machine) or 1} GPU(s)); "
            + (f"{len(nodes)} node(s) checked: {checked}. " if nodes else "the cluster has no candidate nodes. ")
            + "Add a matching node (label node.kubernetes.io/instance-type, allocatable nvidia.com/gpu) "
              "or free one; kaito keeps looking", retry_after=self.settings.retry_after)

    async def get(self, machine: Machine) -> NodeRef | None:
        nodes = await self.client.list(NODE, label_selector=f"{LABEL_MACHINE}={machine.name}")
        return self._ref(nodes.items[0]) if nodes.items else None

    async def delete(self, machine: Machine) -> None:
        """Release the claim: the Node stays, without our labels."""
        nodes = await self.client.list(NODE, label_selector=f"{LABEL_MACHINE}={machine.name}")
        release = {"metadata": {"labels": {LABEL_MACHINE: None, LABEL_PROVISIONER: None, LABEL_WORKSPACE: None,
                                           LABEL_WORKSPACE_NAMESPACE: None},
                                "annotations": {ANNOTATION_CLAIMED_AT: None}}}
        for node in nodes.items:
            with contextlib.suppress(NotFoundError):
                await self.client.patch(NODE, meta(node).name, release)

    async def list(self) -> builtins.list[NodeRef]:
        nodes = await self.client.list(NODE, label_selector=f"{LABEL_PROVISIONER}={self.name}")
        return [self._ref(node) for node in nodes.items]
