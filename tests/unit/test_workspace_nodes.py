"""Workspace controller, pure parts: names, node count, node selection, Machines, ResourceReady."""

from __future__ import annotations

import re
from typing import Any

import pytest
from kaito_presets import default_catalog

from kaito_core.api import Condition, Workspace, machine_ready
from kaito_core.controllers.machine.initialization import node_health
from kaito_core.controllers.workspace.naming import machine_name, machine_slot, truncate
from kaito_core.controllers.workspace.nodes import (
    NodePlan,
    machine_manifest,
    matches_selector,
    plan_nodes,
    qualified_nodes,
    required_node_count,
    resource_state,
)
from kaito_core.testing import gpu_node_manifest

CATALOG = default_catalog()


def ws(*, name: str = "workspace-phi-3-mini", ns: str = "default", count: int = 1,
       instance_type: str | None = "Standard_NC6s_v3", preferred: list[str] | None = None,
       preset: str = "phi-3-mini-4k-instruct", selector: dict[str, Any] | None = None) -> Workspace:
    resource: dict[str, Any] = {"count": count, "labelSelector": selector or {"matchLabels": {"apps": "phi-3"}}}
    if instance_type:
        resource["instanceType"] = instance_type
    if preferred:
        resource["preferredNodes"] = preferred
    return Workspace.model_validate({"metadata": {"name": name, "namespace": ns, "uid": "u1"},
                                     "resource": resource, "inference": {"preset": {"name": preset}}})


def node(name: str, *, ready: bool = True, labels: dict[str, str] | None = None, gpus: int = 1,
         instance_type: str = "Standard_NC6s_v3") -> dict[str, Any]:
    obj = gpu_node_manifest(name, instance_type=instance_type, gpus=gpus, labels=labels)
    obj["status"]["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
    return obj


def machine(w: Workspace, slot: int, *, node_name: str | None = None, deleting: bool = False) -> dict[str, Any]:
    m = machine_manifest(w, slot, preset=None, sku=None)
    if node_name:
        m["status"] = {"nodeName": node_name}
    if deleting:
        m["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return m


def machine_on(w: Workspace, slot: int, node_obj: dict[str, Any]) -> dict[str, Any]:
    """A Machine whose Node is ``node_obj``, with the conditions the Machine reconciler writes for it
    (Launched, Registered; Initialized and Ready as :func:`node_health` and :func:`machine_ready` say)."""
    name = node_obj["metadata"]["name"]
    health = node_health(node_obj, 1)
    conditions = [Condition(type="Launched", status="True", reason="Launched"),
                  Condition(type="Registered", status="True", reason="Registered")]
    if health is None:
        conditions.append(Condition(type="Initialized", status="True", reason="Initialized"))
    status, reason, message = machine_ready(conditions, node_name=name,
                                            blocked=(health[1], health[2]) if health else None)
    conditions.append(Condition(type="Ready", status=status, reason=reason, message=message))
    m = machine(w, slot, node_name=name)
    m["status"]["conditions"] = [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions]
    return m


# --- names


def test_machine_names_are_deterministic_short_and_valid() -> None:
    a = machine_name("ns", "a-very-long-workspace-name-" + "x" * 40, 3)
    assert a == machine_name("ns", "a-very-long-workspace-name-" + "x" * 40, 3)
    assert len(a) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", a)
    assert machine_name("ns1", "w", 0) != machine_name("ns2", "w", 0)
    assert machine_name("ns", "w", 0) != machine_name("ns", "w", 1)
    # "a-b"/"c" and "a"/"b-c" must not collide (the separator is part of the hash input).
    assert machine_name("a-b", "c", 0) != machine_name("a", "b-c", 0)
    assert machine_slot("ns", "w", machine_name("ns", "w", 7)) == 7
    assert machine_slot("ns", "other", machine_name("ns", "w", 7)) is None
    with pytest.raises(ValueError):
        machine_name("ns", "w", -1)


def test_truncate_keeps_names_unique_and_within_limit() -> None:
    long_a, long_b = "w" * 60 + "a", "w" * 60 + "b"
    ta, tb = truncate(long_a, suffix="-headless"), truncate(long_b, suffix="-headless")
    assert len(ta) <= 63 and ta.endswith("-headless") and ta != tb
    assert truncate("short", suffix="-x") == "short-x"


# --- node count and selection


def test_required_node_count_is_count_or_gpu_need() -> None:
    phi = CATALOG.model("phi-3-mini-4k-instruct")
    nc6 = CATALOG.sku("Standard_NC6s_v3")
    assert required_node_count(ws(count=1), phi, nc6) == 1
    assert required_node_count(ws(count=3), phi, nc6) == 3
    big = CATALOG.model("phi-3-medium-4k-instruct")  # 28Gi on 16Gi V100s: two nodes
    assert required_node_count(ws(count=1, preset="phi-3-medium-4k-instruct"), big, nc6) == 2
    assert required_node_count(ws(count=1), phi, None) == 1


def test_selector_matching() -> None:
    sel = {"matchLabels": {"apps": "phi-3"},
           "matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]},
                                {"key": "spot", "operator": "DoesNotExist"}]}
    assert matches_selector({"apps": "phi-3", "zone": "a"}, sel)
    assert not matches_selector({"apps": "phi-3", "zone": "c"}, sel)
    assert not matches_selector({"apps": "phi-3", "zone": "a", "spot": "1"}, sel)
    assert not matches_selector({"zone": "a"}, sel)


def test_qualified_nodes_need_ready_labels_and_instance_type_or_preference() -> None:
    w = ws(preferred=["pref"])
    nodes = [
        node("ok", labels={"apps": "phi-3"}),
        node("pref", labels={"apps": "phi-3"}, instance_type="Other"),
        node("wrong-type", labels={"apps": "phi-3"}, instance_type="Other"),
        node("no-label"),
        node("not-ready", labels={"apps": "phi-3"}, ready=False),
        node("other-ws", labels={"apps": "phi-3", "kaito.sh/workspace": "x", "kaito.sh/workspacenamespace": "y"}),
    ]
    assert qualified_nodes(w, nodes) == ["pref", "ok"]


# --- planning


def test_plan_creates_the_lowest_missing_slots() -> None:
    w = ws(count=3)
    plan = plan_nodes(w, 3, [], [])
    assert plan.create_slots == [0, 1, 2]
    plan = plan_nodes(w, 3, [machine(w, 1, node_name="n1")], [])
    assert plan.create_slots == [0, 2]
    assert plan.nodes == ["n1"]


def test_plan_uses_byo_nodes_and_creates_no_machine() -> None:
    w = ws(count=2)
    nodes = [node("a", labels={"apps": "phi-3"}), node("b", labels={"apps": "phi-3"}), node("c")]
    plan = plan_nodes(w, 2, [], nodes)
    assert plan.create_slots == [] and plan.byo == ["a", "b"] and plan.nodes == ["a", "b"]
    plan = plan_nodes(w, 3, [], nodes)
    assert plan.create_slots == [0] and plan.byo == ["a", "b"]


def test_plan_keeps_existing_machines_before_byo_and_deletes_extras() -> None:
    w = ws(count=1)
    nodes = [node("byo", labels={"apps": "phi-3"})]
    plan = plan_nodes(w, 1, [machine(w, 0, node_name="m0")], nodes)
    assert plan.byo == [] and plan.create_slots == [] and plan.nodes == ["m0"]
    plan = plan_nodes(w, 1, [machine(w, 0, node_name="m0"), machine(w, 1, node_name="m1")], [])
    assert plan.delete_machines == [machine_name("default", w.name, 1)]
    assert plan.nodes == ["m0"]


def test_plan_never_reuses_the_slot_of_a_deleting_machine() -> None:
    w = ws(count=1)
    plan = plan_nodes(w, 1, [machine(w, 0, deleting=True)], [])
    assert plan.create_slots == [1]


def test_machine_manifest() -> None:
    w = ws(selector={"matchLabels": {"apps": "phi-3"},
                     "matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1", "z2"]}]})
    m = machine_manifest(w, 0, preset=CATALOG.model("phi-3-mini-4k-instruct"), sku=CATALOG.sku("Standard_NC6s_v3"),
                         provisioner="simulated")
    assert m["apiVersion"] == "kaito.sh/v1alpha1" and m["kind"] == "Machine"
    assert m["metadata"]["name"] == machine_name("default", "workspace-phi-3-mini", 0)
    labels = m["metadata"]["labels"]
    assert labels["kaito.sh/workspace"] == "workspace-phi-3-mini"
    assert labels["kaito.sh/workspacenamespace"] == "default"
    assert labels["apps"] == "phi-3" and labels["zone"] == "z1"
    assert m["spec"]["nodeLabels"] == labels
    assert m["spec"]["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    assert m["spec"]["instanceType"] == "Standard_NC6s_v3"
    assert m["spec"]["resources"]["requests"] == {"nvidia.com/gpu": "1", "storage": "70Gi"}
    assert m["spec"]["provisioner"] == "simulated"
    assert "machine.finalizer.kaito.sh" in m["metadata"]["finalizers"]
    assert matches_selector(labels, w.resource.label_selector.to_dict())


def test_resource_state() -> None:
    w = ws(count=2)
    ready = {"n0": node("n0"), "n1": node("n1")}
    plan = plan_nodes(w, 2, [machine_on(w, 0, ready["n0"]), machine_on(w, 1, ready["n1"])], [])
    assert resource_state(plan, ready).ready
    plan = plan_nodes(w, 2, [machine_on(w, 0, ready["n0"]), machine(w, 1)], [])
    state = resource_state(plan, ready)
    assert not state.ready and state.reason == "ProvisioningNodes"

    # A node of the Workspace's own Machine: the Workspace reads the Machine's Ready condition,
    # which the Machine reconciler keeps true to its Node (node_health); it does not judge the Node again.
    def with_n1(n1: dict[str, Any]) -> NodePlan:
        return plan_nodes(w, 2, [machine_on(w, 0, ready["n0"]), machine_on(w, 1, n1)], [])

    state = resource_state(with_n1(node("n1", gpus=0)), ready)
    assert not state.ready and "nvidia.com/gpu" in state.message
    state = resource_state(with_n1(node("n1", ready=False)), ready)
    assert not state.ready and state.reason == "WaitingForNodes"
    tainted = node("n1")
    tainted["spec"]["taints"].append({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"})
    state = resource_state(with_n1(tainted), ready)
    assert not state.ready and state.reason == "WaitingForNodes"
    assert "Node n1 is Ready but still carries node.kubernetes.io/not-ready:NoSchedule" in state.message

    # A node the user brings (no Machine): the same check (node_problem), read from the Node.
    plan = NodePlan(required=2, byo=["n0", "n1"])
    assert resource_state(plan, ready).ready
    state = resource_state(plan, {"n0": node("n0"), "n1": node("n1", gpus=0)})
    assert not state.ready and "nvidia.com/gpu" in state.message
    state = resource_state(plan, {"n0": node("n0"), "n1": node("n1", ready=False)})
    assert not state.ready and state.reason == "WaitingForNodes"
    # Ready, but the node lifecycle controller has not lifted its not-ready taint: a pod sent
    # there now would be Unschedulable, so the nodes are not ready for the workload yet.
    state = resource_state(plan, {"n0": node("n0"), "n1": tainted})
    assert not state.ready and state.reason == "WaitingForNodes"
    assert "node n1 still carries node.kubernetes.io/not-ready:NoSchedule" in state.message
    # Nor is such a node one to reuse: the same node qualifies once the taint is gone.
    byo = node("n1", labels={"apps": "phi-3"})
    assert qualified_nodes(ws(preferred=["n1"]), [byo]) == ["n1"]
    byo["spec"]["taints"].append({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"})
    assert qualified_nodes(ws(preferred=["n1"]), [byo]) == []
    failing = machine(w, 1)
    failing["status"] = {"conditions": [{"type": "Launched", "status": "False", "reason": "QuotaExceeded",
                                         "message": "quota standardNCSv3Family exhausted"}]}
    state = resource_state(plan_nodes(w, 2, [machine(w, 0, node_name="n0"), failing], []), ready)
    assert state.reason == "QuotaExceeded" and "quota standardNCSv3Family" in state.message


def test_node_events_find_workspaces_through_the_selector_index() -> None:
    """A Node event wakes exactly the Workspaces whose labelSelector it matches (found through an
    index on matchLabels, not a test of every Workspace), and only its owner for a node we made."""
    from kaito_core.controllers.workspace import (
        INDEX_WORKSPACE_SELECTOR,
        _nodes_to_workspaces,
        workspace_selector_index,
    )
    from kaito_core.controllers.workspace.kinds import WORKSPACE
    from kaito_core.engine import Request, SharedCache
    from kaito_core.engine.client import Client

    cache = SharedCache(Client.__new__(Client))
    cache.add_index(WORKSPACE, INDEX_WORKSPACE_SELECTOR, workspace_selector_index)
    store = cache.informer(WORKSPACE).store

    def workspace(name: str, selector: dict[str, Any]) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": "ns"}, "resource": {"labelSelector": selector}}

    store.upsert(workspace("phi", {"matchLabels": {"apps": "phi-3"}}))
    store.upsert(workspace("phi-zone", {"matchLabels": {"apps": "phi-3", "zone": "a"}}))
    store.upsert(workspace("falcon", {"matchLabels": {"apps": "falcon"}}))
    store.upsert(workspace("gpu-any", {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}))
    for i in range(100):
        store.upsert(workspace(f"other-{i}", {"matchLabels": {"apps": f"o{i}"}}))
    map_fn = _nodes_to_workspaces(cache)

    def woken(labels: dict[str, str]) -> list[str]:
        return sorted(r.name for r in map_fn({"metadata": {"name": "n", "labels": labels}}))

    assert woken({"apps": "phi-3"}) == ["phi"]
    assert woken({"apps": "phi-3", "zone": "a", "gpu": "1"}) == ["gpu-any", "phi", "phi-zone"]
    assert woken({"apps": "o7"}) == ["other-7"]
    assert woken({"unrelated": "x"}) == []
    # A node made for a Workspace (our labels) serves only that Workspace.
    assert list(map_fn({"metadata": {"name": "n", "labels": {
        "apps": "phi-3", "kaito.sh/workspace": "phi", "kaito.sh/workspacenamespace": "ns"}}})) == [
        Request("ns", "phi")]


def test_plan_marks_the_nodes_made_for_the_workspace() -> None:
    """plan.labelled: the chosen nodes carrying this Workspace's labels (placed by label, not name)."""
    w = ws(count=2, preferred=["byo-0"])
    ours = node("m0", labels={"apps": "phi-3", "kaito.sh/workspace": w.name,
                              "kaito.sh/workspacenamespace": w.namespace})
    plan = plan_nodes(w, 2, [machine(w, 0, node_name="m0")], [ours, node("byo-0", labels={"apps": "phi-3"})])
    assert plan.nodes == ["byo-0", "m0"]
    assert plan.labelled == {"m0"}
