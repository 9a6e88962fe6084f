"""The Workspace controller: nodes, inference and tuning workloads, adapters, status, teardown.

Wire it into a manager::

    from kaito_core.controllers.workspace import WorkspaceSettings, add_workspace_controller

    add_workspace_controller(manager, WorkspaceSettings())
    await manager.run()

It reconciles Workspaces (v1beta1, the storage version), owns Deployments, StatefulSets,
Services, ConfigMaps, Jobs and ControllerRevisions, and watches Machines (by their
``kaito.sh/workspace*`` labels), Nodes (readiness, labels, GPUs), Pods (labelled
``kaito.sh/workspace``) and ConfigMaps a Workspace names in ``inference.config``/``tuning.config``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kaito_core.api import LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE
from kaito_core.controllers.cached_fields import keep_read_fields
from kaito_core.controllers.workspace.kinds import CONTROLLERREVISION, MACHINE, WORKSPACE
from kaito_core.controllers.workspace.nodes import matches_selector
from kaito_core.controllers.workspace.reconciler import WorkspaceReconciler
from kaito_core.controllers.workspace.settings import WorkspaceSettings
from kaito_core.engine import (
    CONFIGMAP,
    DEPLOYMENT,
    JOB,
    NODE,
    PERSISTENTVOLUMECLAIM,
    POD,
    SERVICE,
    STATEFULSET,
    Controller,
    Manager,
    Predicate,
    Request,
    SharedCache,
    meta,
    resource_version_changed,
    spec_of,
)
from kaito_core.provisioning import allocatable_gpus, node_is_ready
from kaito_core.provisioning.identity import InstallIdentity

__all__ = [
    "CONTROLLERREVISION",
    "MACHINE",
    "WORKSPACE",
    "WorkspaceReconciler",
    "WorkspaceSettings",
    "add_workspace_controller",
    "workspace_controller",
]


def machine_to_workspace(obj: Mapping[str, Any]) -> Iterable[Request]:
    labels = meta(obj).labels
    if LABEL_WORKSPACE in labels and LABEL_WORKSPACE_NAMESPACE in labels:
        return (Request(labels[LABEL_WORKSPACE_NAMESPACE], labels[LABEL_WORKSPACE]),)
    return ()


def pod_to_workspace(obj: Mapping[str, Any]) -> Iterable[Request]:
    name = meta(obj).labels.get(LABEL_WORKSPACE)
    namespace = meta(obj).namespace
    return (Request(namespace, name),) if name and namespace else ()


def _node_facts(node: Mapping[str, Any]) -> tuple[Any, ...]:
    view, spec = meta(node), spec_of(node)
    return (dict(view.labels), node_is_ready(node), allocatable_gpus(node), view.deletion_timestamp,
            spec.get("unschedulable"), spec.get("taints"))


#: Nodes change every heartbeat; only labels, readiness, GPUs, cordons and taints matter to a
#: Workspace (for a node a user brings: a Machine's node reaches it through its Machine's Ready).
node_facts_changed = Predicate(update=lambda old, new: _node_facts(old) != _node_facts(new),
                               name="node_facts_changed")


#: Workspaces by each ``key=value`` of ``resource.labelSelector.matchLabels`` ("*" when it has none):
#: a Node event looks up its own labels instead of testing every Workspace's selector.
INDEX_WORKSPACE_SELECTOR = "workspace-selector-label"
#: Workspaces by the ConfigMap they name in ``inference.config`` / ``tuning.config``.
INDEX_WORKSPACE_CONFIG = "workspace-config"
_ANY_SELECTOR = "*"


def workspace_selector_index(ws: Mapping[str, Any]) -> Iterable[str]:
    selector = (ws.get("resource") or {}).get("labelSelector") or {}
    pairs = tuple(f"{key}={value}" for key, value in (selector.get("matchLabels") or {}).items())
    return pairs or (_ANY_SELECTOR,)


def workspace_config_index(ws: Mapping[str, Any]) -> Iterable[str]:
    names = {(ws.get(section) or {}).get("config") for section in ("inference", "tuning")}
    return tuple(sorted(str(name) for name in names if name))


def _nodes_to_workspaces(cache: SharedCache) -> Any:
    def map_fn(node: Mapping[str, Any]) -> Iterable[Request]:
        out = list(machine_to_workspace(node))
        if out:
            return out  # a node made for a Workspace serves no other (qualified_nodes)
        labels = meta(node).labels
        # Nodes brought by the user: every Workspace whose labelSelector matches.
        seen: set[Request] = set()
        for value in (_ANY_SELECTOR, *(f"{key}={val}" for key, val in labels.items())):
            for ws in cache.by_index(WORKSPACE, INDEX_WORKSPACE_SELECTOR, value, copy=False):
                request = Request.for_object(ws)
                if request in seen:
                    continue
                seen.add(request)
                selector = (ws.get("resource") or {}).get("labelSelector")
                if selector and matches_selector(labels, selector):
                    out.append(request)
        return out

    return map_fn


def _configmaps_to_workspaces(cache: SharedCache) -> Any:
    def map_fn(cm: Mapping[str, Any]) -> Iterable[Request]:
        namespace, name = meta(cm).namespace, meta(cm).name
        return [Request.for_object(ws) for ws in cache.by_index(WORKSPACE, INDEX_WORKSPACE_CONFIG, name, copy=False)
                if meta(ws).namespace == namespace]

    return map_fn


def workspace_controller(manager: Manager, settings: WorkspaceSettings | None = None, *,
                         provisioner: str | None = None, install: InstallIdentity | None = None) -> Controller:
    """The Workspace Controller, built (not yet added to the manager)."""
    settings = settings or WorkspaceSettings()
    cache = manager.cache
    keep_read_fields(cache)
    cache.add_index(WORKSPACE, INDEX_WORKSPACE_SELECTOR, workspace_selector_index)
    cache.add_index(WORKSPACE, INDEX_WORKSPACE_CONFIG, workspace_config_index)
    reconciler = WorkspaceReconciler(manager.client, cache, manager.recorder, settings, provisioner=provisioner,
                                     install=install)
    builder = Controller.for_(WORKSPACE, resource_version_changed)
    if settings.weights_cache is not None:
        # Only an operator that keeps weights in claims watches them (and is granted them by the chart).
        builder = builder.owns(PERSISTENTVOLUMECLAIM, resource_version_changed)
    return (builder
            .owns(DEPLOYMENT, resource_version_changed)
            .owns(STATEFULSET, resource_version_changed)
            .owns(SERVICE, resource_version_changed)
            .owns(CONFIGMAP, resource_version_changed)
            .owns(JOB, resource_version_changed)
            .owns(CONTROLLERREVISION, resource_version_changed)
            .watches(MACHINE, machine_to_workspace, resource_version_changed)
            .watches(NODE, _nodes_to_workspaces(cache), node_facts_changed)
            .watches(POD, pod_to_workspace, resource_version_changed, label_selector=LABEL_WORKSPACE)
            .watches(CONFIGMAP, _configmaps_to_workspaces(cache), resource_version_changed)
            .with_workers(settings.workers)
            .named("workspace")
            .build(reconciler))


def add_workspace_controller(manager: Manager, settings: WorkspaceSettings | None = None, *,
                             provisioner: str | None = None, install: InstallIdentity | None = None) -> Controller:
    """Add the Workspace controller to ``manager`` (before ``manager.run()``); returns it.

    ``provisioner`` names the provisioner plugin written into each Machine's ``spec.provisioner``
    (None: leave it to the Machine controller's default). ``install`` is stamped on each Machine
    (give the Machine controller the same one, or its leak collector collects nothing).
    """
    return manager.add(workspace_controller(manager, settings, provisioner=provisioner, install=install))
