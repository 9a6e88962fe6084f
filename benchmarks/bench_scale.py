"""Scale: N inference Workspaces at once, then delete them all; and the control plane's own limit.

    python benchmarks/bench_scale.py [--sizes 100,400,1000] [--nodes byo|simulated] [--namespaces 10]
                                     [--steady 30] [--profile]

For each N a fresh full control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok) is
started; the operator runs as its own process (``kaito controller``, simulated provisioner with zero
launch delay, no webhook, no leader election) authenticated as a ServiceAccount, so the apiserver's
audit log counts exactly the requests it made. N Workspaces (1 node each, phi-3-mini on
Standard_NC6s_v3) spread over ``--namespaces`` namespaces are created at once. ``--nodes byo`` (the
default) makes N Ready kwok GPU nodes first, one labelled for each Workspace (bring-your-own: no
Machine); ``--nodes simulated`` lets the simulated provisioner make a Machine and a Node for each. We report:

* seconds until all are WorkspaceReady, and p50/p99 of each Workspace's time to ready (from its
  create call to the first watch event showing WorkspaceReady=True);
* reconciles per Workspace (controller_runtime_reconcile_total of both controllers, from /metrics);
* apiserver requests per Workspace (the operator's, from the audit log; watches count once);
* the operator's peak RSS (VmHWM) and CPU seconds (utime + stime from /proc), and its share of all the
  CPU the machine spent in that time (/proc/stat);
* writes per Workspace from the audit log (creates, updates, patches, deletes, Events included), the
  Events about Workspaces (objects and writes), the writes in the ``--steady`` seconds after all are
  Ready (a backlog or a write loop shows here) and the reads (GET/LIST, not watches: polling);
* **baseline**: before the operator starts, the same N Deployments and Services the operator would make
  (its own manifest builders, without the owner reference) are created directly on the same kind of
  kwok nodes and timed until every pod is Ready: what this control plane can do; the operator's
  all-Ready time is reported as a ratio to it;
* then every Workspace is deleted: seconds until no Workspace, Machine, Node, Deployment or Pod of
  the run is left, with the reconciles, requests and CPU seconds that took.

Results: a table on stdout and benchmarks/results/scale.json. ``--profile`` runs the operator under
pyinstrument (``pip install pyinstrument``) and writes benchmarks/results/scale-profile-<N>.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "reliability"))  # the operator-process harness lives with that suite

from kaito_presets import default_catalog  # noqa: E402
from reliability_support import (  # noqa: E402
    Fleet,
    OperatorProcess,
    audited_requests,
    eventually,
    operator_kubeconfig,
    workspace_doc,
)

from kaito_core.api import parse_workspace  # noqa: E402
from kaito_core.api.crd import all_crds  # noqa: E402
from kaito_core.controllers.workspace import WorkspaceSettings  # noqa: E402
from kaito_core.controllers.workspace.context import BuildContext  # noqa: E402
from kaito_core.controllers.workspace.inference import (  # noqa: E402
    default_inference_config_data,
    inference_service,
    inference_workload,
)
from kaito_core.engine import DEPLOYMENT, EVENT, NODE, POD, SERVICE, Client, Informer, configure_logging  # noqa: E402
from kaito_core.provisioning import node_problem  # noqa: E402
from kaito_core.testing import ControlPlane, ControlPlaneMode, gpu_node_manifest, install_crds  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SERVICE_CIDR = """apiVersion: networking.k8s.io/v1
kind: ServiceCIDR
metadata: {name: bench-scale}
spec: {cidrs: ["10.96.0.0/16"]}
"""


MUTATING = ("create ", "update ", "patch ", "delete ", "deletecollection ")
READS = ("get ", "list ")


def split_requests(by_kind: dict[str, int]) -> dict[str, int]:
    """{"writes", "event_writes", "reads"} of an audited_requests ``by_kind`` table."""
    writes = sum(n for k, n in by_kind.items() if k.startswith(MUTATING))
    events = sum(n for k, n in by_kind.items() if k.startswith(MUTATING) and k.split(" ", 1)[1] == "events")
    reads = sum(n for k, n in by_kind.items() if k.startswith(READS))
    return {"writes": writes, "event_writes": events, "reads": reads}


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine spent (all cores, not idle or iowait) since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


async def create_ready_nodes(client: Client, names: list[str], labels: dict[str, dict[str, str]],
                             timeout: float) -> None:
    """kwok GPU nodes, 32 creates in flight; returns once every one can take a pod (Ready, untainted)."""
    sem = asyncio.Semaphore(32)

    async def one(name: str) -> None:
        async with sem:
            await client.create(gpu_node_manifest(name, labels=labels.get(name)), kind=NODE)

    await asyncio.gather(*(one(n) for n in names))
    nodes = Informer(client, NODE)
    nodes.start()
    try:
        await nodes.wait_for_sync(60)
        wanted = set(names)

        def usable() -> bool:
            ok = {p["metadata"]["name"] for _, p in nodes.store.items() if node_problem(p, gpus=1) is None}
            return wanted <= ok

        await eventually(usable, timeout, interval=0.5, message=f"{len(names)} kwok nodes usable")
    finally:
        await nodes.stop()


def baseline_manifests(doc: dict[str, Any], node: str) -> list[tuple[Any, dict[str, Any]]]:
    """The Deployment and Service the operator makes for ``doc`` on ``node`` (its builders), unowned."""
    ws, errors = parse_workspace({**doc, "metadata": {**doc["metadata"], "uid": "baseline"}})
    assert ws is not None, errors
    catalog = default_catalog()
    ctx = BuildContext(ws=ws, settings=WorkspaceSettings(), preset=catalog.find_model(ws.preset.name if ws.preset
                                                                                       else ""),
                       sku=catalog.find_sku(ws.resource.instance_type or ""), nodes=[node])
    out = []
    for kind, manifest in ((DEPLOYMENT, inference_workload(ctx, config_data=default_inference_config_data(ctx))),
                           (SERVICE, inference_service(ctx))):
        manifest["metadata"].pop("ownerReferences", None)  # no Workspace owns them: the GC must leave them
        out.append((kind, manifest))
    return out


async def baseline(client: Client, docs: list[dict[str, Any]], nodes: list[str], timeout: float) -> dict[str, Any]:
    """Create the operator's Deployments and Services directly (32 in flight); seconds until all pods Ready."""
    deployments = Informer(client, DEPLOYMENT)
    deployments.start()
    await deployments.wait_for_sync(60)
    sem = asyncio.Semaphore(32)
    names = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs}

    async def one(doc: dict[str, Any], node: str) -> None:
        async with sem:
            for kind, manifest in baseline_manifests(doc, node):
                await client.create(manifest, kind=kind)

    def all_ready() -> bool:
        ready = {(d["metadata"]["namespace"], d["metadata"]["name"]) for _, d in deployments.store.items()
                 if int((d.get("status") or {}).get("readyReplicas") or 0) >= 1}
        return names <= ready

    try:
        t0 = time.monotonic()
        cpu0 = busy_cpu_seconds()
        await asyncio.gather(*(one(doc, node) for doc, node in zip(docs, nodes, strict=True)))
        await eventually(all_ready, timeout, interval=0.25, message="baseline pods Ready")
        result = {"all_ready_s": round(time.monotonic() - t0, 1),
                  "machine_cpu_s": round(busy_cpu_seconds() - cpu0, 1)}
        # Leave the nodes free for the operator's pods: delete, and wait until no pod of the baseline is left.
        for doc in docs:
            meta = doc["metadata"]
            for kind in (DEPLOYMENT, SERVICE):
                await client.delete(kind, meta["name"], meta["namespace"], missing_ok=True,
                                    propagation_policy="Foreground")

        async def gone() -> bool:
            for ns in {d["metadata"]["namespace"] for d in docs}:
                if (await client.list(POD, ns)).items or (await client.list(DEPLOYMENT, ns)).items:
                    return False
            return True

        await eventually(gone, timeout, interval=1.0, message="baseline deleted")
        return result
    finally:
        await deployments.stop()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def machine_info() -> dict[str, Any]:
    mem_gib = 0.0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_gib = round(int(line.split()[1]) / 2**20, 1)
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpus": os.cpu_count(), "memory_gib": mem_gib, "cpu_model": model, "python": platform.python_version(),
            "load_avg_at_start": os.getloadavg()[0]}


async def reconciles(op: OperatorProcess) -> dict[str, float]:
    text_sum = await asyncio.to_thread(op.metric_sum, "controller_runtime_reconcile_total")
    ws = await asyncio.to_thread(op.metric_sum, "controller_runtime_reconcile_total", controller="workspace")
    errors = await asyncio.to_thread(op.metric_sum, "controller_runtime_reconcile_errors_total")
    return {"total": text_sum, "workspace": ws, "machine": text_sum - ws, "errors": errors}


async def run_size(n: int, namespaces: int, workdir: Path, profile: bool, timeout: float, *,
                   operator_env: dict[str, str], nodes_mode: str = "byo", steady_s: float = 30.0) -> dict[str, Any]:
    result: dict[str, Any] = {"workspaces": n, "namespaces": namespaces, "operator_env": operator_env,
                              "nodes": nodes_mode}
    t_plane = time.monotonic()
    plane = ControlPlane(mode=ControlPlaneMode.FULL, workdir=workdir / f"cp-{n}")
    await asyncio.to_thread(plane.start)
    result["control_plane_start_s"] = round(time.monotonic() - t_plane, 1)
    fleet: Fleet | None = None
    op: OperatorProcess | None = None
    pods: Informer | None = None
    try:
        # The test control plane serves ClusterIPs from a /24 (about 250 Services); every Workspace has
        # a Service, so give the apiserver a second range (a ServiceCIDR object, Kubernetes >= 1.33).
        await asyncio.to_thread(plane.kubectl, "apply", "-f", "-", input=SERVICE_CIDR)
        fleet = await Fleet.connect(plane.kubeconfig)
        await install_crds(fleet.client, all_crds())
        crds_at = time.monotonic()
        kubeconfig, user = await asyncio.to_thread(operator_kubeconfig, plane, workdir)
        ns_names = [f"scale-{i:02d}" for i in range(namespaces)]
        for ns in ns_names:
            await asyncio.to_thread(plane.kubectl, "create", "namespace", ns)
        await fleet.start(ns_names)
        pods = Informer(fleet.client, POD)
        pods.start()
        await pods.wait_for_sync(60)
        docs = [workspace_doc(f"ws-{i:04d}", ns_names[i % namespaces]) for i in range(n)]
        # The baseline: the same Deployments and Services on the same kind of nodes, no operator yet.
        node_names = [f"gpu-{i:04d}" for i in range(n)]
        await create_ready_nodes(fleet.client, node_names,
                                 {f"gpu-{i:04d}": {"apps": f"ws-{i:04d}"} for i in range(n)}, timeout)
        base_docs = [{**d, "metadata": {**d["metadata"], "namespace": f"base-{d['metadata']['namespace']}"}}
                     for d in docs]
        for ns in sorted({d["metadata"]["namespace"] for d in base_docs}):
            await asyncio.to_thread(plane.kubectl, "create", "namespace", ns)
        result["baseline"] = await baseline(fleet.client, base_docs, node_names, timeout)
        if nodes_mode != "byo":
            for name in node_names:  # the simulated provisioner makes its own
                await fleet.client.delete(NODE, name, missing_ok=True)

        def our_pods() -> int:
            assert pods is not None
            return sum(1 for _, p in pods.store.items() if p["metadata"].get("namespace") in fleet.namespaces)

        launcher: list[str] = []
        if profile:
            launcher = ["-m", "pyinstrument", "-r", "text", "-o", str(RESULTS / f"scale-profile-{n}.txt"), "-m"]
        op = OperatorProcess(kubeconfig, workdir, identity=f"scale-{n}", launcher=launcher, extra_env=operator_env)
        op.start()
        def ready() -> bool:
            assert op is not None
            if not op.alive():
                raise AssertionError(f"the operator exited: {op.tail()}")
            return op.ready()

        await eventually(ready, 120, message="operator /readyz", describe=op.tail)
        base_reconciles = await reconciles(op)
        base_requests, _, audit_lines = await asyncio.to_thread(audited_requests, plane, user)
        base_cpu = op.cpu_seconds()
        result["operator_idle"] = {"requests_at_start": base_requests, "cpu_s_at_start": round(base_cpu, 2),
                                   "rss_mib_at_start": round(op.peak_rss_bytes() / 2**20, 1)}

        # kube-controller-manager's garbage collector learns of new kinds (the Workspace CRD) on its
        # 30 s discovery resync; until then it cannot collect a Workspace's Deployment. A real cluster
        # had the CRD long before: wait that out so the delete phase measures steady state.
        await asyncio.sleep(max(0.0, 35 - (time.monotonic() - crds_at)))
        _, before_by_kind, _ = await asyncio.to_thread(audited_requests, plane, user, audit_lines)
        timeline: list[tuple[float, int, int, int]] = []
        t0 = time.monotonic()
        machine_cpu0 = busy_cpu_seconds()
        create = asyncio.create_task(fleet.create_workspaces(docs))

        def all_ready() -> bool:
            assert fleet is not None
            now = time.monotonic() - t0
            ready = len([k for k in fleet.ready_at if k in fleet.created_at])
            counts = fleet.counts()
            if not timeline or now - timeline[-1][0] >= 2:
                timeline.append((round(now, 1), ready, counts["machines"], counts["nodes"]))
            if not op.alive():
                raise AssertionError(f"the operator exited: {op.tail()}")
            return create.done() and ready == n

        await eventually(all_ready, timeout, interval=0.25, message=f"{n} Workspaces Ready",
                         describe=lambda: str(fleet.not_ready()) if fleet else "")
        await create
        up_s = time.monotonic() - t0
        machine_cpu_up = busy_cpu_seconds() - machine_cpu0
        ttr = fleet.time_to_ready()
        up_reconciles = await reconciles(op)
        up_requests, up_by_kind, _ = await asyncio.to_thread(audited_requests, plane, user, audit_lines)
        up_cpu = op.cpu_seconds()
        # At rest: what the operator does in the next ``steady_s`` seconds (a backlog or a loop shows here).
        await asyncio.sleep(steady_s)
        _, steady_by_kind, _ = await asyncio.to_thread(audited_requests, plane, user, audit_lines)
        up_split = split_requests(diff(up_by_kind, before_by_kind))
        steady_split = split_requests(diff(steady_by_kind, up_by_kind))
        ws_events = [e for ns in ns_names for e in (await fleet.client.list(EVENT, ns)).items
                     if (e.get("involvedObject") or {}).get("kind") == "Workspace"]
        base_s = result["baseline"]["all_ready_s"]
        # Give the controllers a moment to settle, then see whether anything keeps churning.
        result["create"] = {
            "all_ready_s": round(up_s, 1),
            "ready_per_s": round(n / up_s, 1),
            "time_to_ready_p50_s": round(pct(ttr, 0.5), 2),
            "time_to_ready_p99_s": round(pct(ttr, 0.99), 2),
            "time_to_ready_mean_s": round(statistics.fmean(ttr), 2),
            "reconciles_per_workspace": round((up_reconciles["total"] - base_reconciles["total"]) / n, 2),
            "workspace_reconciles_per_workspace": round(
                (up_reconciles["workspace"] - base_reconciles["workspace"]) / n, 2),
            "machine_reconciles_per_workspace": round(
                (up_reconciles["machine"] - base_reconciles["machine"]) / n, 2),
            "reconcile_errors": up_reconciles["errors"] - base_reconciles["errors"],
            "apiserver_requests_per_workspace": round(up_requests / n, 2),
            "apiserver_requests_by_kind": dict(sorted(up_by_kind.items(), key=lambda kv: -kv[1])),
            "operator_cpu_s": round(up_cpu - base_cpu, 1),
            "operator_cpu_ms_per_workspace": round((up_cpu - base_cpu) * 1000 / n, 1),
            "operator_cpu_share": round((up_cpu - base_cpu) / machine_cpu_up, 3) if machine_cpu_up > 0 else None,
            "writes_per_workspace": round(up_split["writes"] / n, 2),
            "event_writes_per_workspace": round(up_split["event_writes"] / n, 2),
            "workspace_events_per_workspace": round(len(ws_events) / n, 2),
            "workspace_event_occurrences_per_workspace": round(sum(int(e.get("count") or 1) for e in ws_events) / n,
                                                               2),
            "ratio_to_baseline": round(up_s / base_s, 2) if base_s else None,
            "steady_s": steady_s,
            "steady_writes": steady_split["writes"],
            "steady_reads": steady_split["reads"],
            "timeline_t_ready_machines_nodes": timeline,
        }
        dup = fleet.duplicates({})
        result["duplicates"] = len(dup)

        # -- delete everything
        t1 = time.monotonic()
        await fleet.delete_workspaces()
        timeline_del: list[tuple[float, dict[str, int]]] = []

        def nothing_left() -> bool:
            assert fleet is not None
            left = {**fleet.counts(), "pods": our_pods()}
            now = time.monotonic() - t1
            if not timeline_del or now - timeline_del[-1][0] >= 2:
                timeline_del.append((round(now, 1), left))
            return not any(left.values())

        def operator_done() -> bool:
            assert fleet is not None
            left = fleet.counts()
            return not (left["workspaces"] or left["machines"] or left["nodes"])

        await eventually(operator_done, timeout, interval=0.25, message="Workspaces, Machines and Nodes deleted")
        operator_done_s = time.monotonic() - t1
        await eventually(nothing_left, timeout, interval=0.25, message="everything deleted",
                         describe=lambda: str(timeline_del[-1]))
        down_s = time.monotonic() - t1
        # The operator-owned part: Workspaces and Machines gone (the rest is kube GC of children).
        down_reconciles = await reconciles(op)
        down_requests, down_by_kind, _ = await asyncio.to_thread(audited_requests, plane, user, audit_lines)
        down_cpu = op.cpu_seconds()
        result["delete"] = {
            "workspaces_machines_nodes_gone_s": round(operator_done_s, 1),
            "nothing_left_s": round(down_s, 1),
            "reconciles_per_workspace": round((down_reconciles["total"] - up_reconciles["total"]) / n, 2),
            "apiserver_requests_per_workspace": round((down_requests - up_requests) / n, 2),
            "operator_cpu_s": round(down_cpu - up_cpu, 1),
            "timeline": timeline_del,
        }
        result["operator_peak_rss_mib"] = round(op.peak_rss_bytes() / 2**20, 1)
        result["operator_cpu_s_total"] = round(down_cpu, 1)
        result["reconcile_errors_total"] = down_reconciles["errors"]
        result["apiserver_requests_by_kind_total"] = dict(sorted(down_by_kind.items(), key=lambda kv: -kv[1]))
    finally:
        if op is not None:
            await asyncio.to_thread(op.stop)
        if pods is not None:
            await pods.stop()
        if fleet is not None:
            await fleet.stop()
        await asyncio.to_thread(plane.stop)
    return result


def growth(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure: how it scales from the smallest to the largest N (exponent k in figure ~ N^k)."""
    import math

    if len(rows) < 2:
        return {}
    a, b = rows[0], rows[-1]
    ratio = b["workspaces"] / a["workspaces"]

    def k(x: float, y: float) -> float | None:
        if x <= 0 or y <= 0:
            return None
        return round(math.log(y / x) / math.log(ratio), 2)

    figures = {
        "all_ready_s": (a["create"]["all_ready_s"], b["create"]["all_ready_s"]),
        "time_to_ready_p50_s": (a["create"]["time_to_ready_p50_s"], b["create"]["time_to_ready_p50_s"]),
        "time_to_ready_p99_s": (a["create"]["time_to_ready_p99_s"], b["create"]["time_to_ready_p99_s"]),
        "reconciles_total": (a["create"]["reconciles_per_workspace"] * a["workspaces"],
                             b["create"]["reconciles_per_workspace"] * b["workspaces"]),
        "apiserver_requests_total": (a["create"]["apiserver_requests_per_workspace"] * a["workspaces"],
                                     b["create"]["apiserver_requests_per_workspace"] * b["workspaces"]),
        "operator_cpu_s": (a["create"]["operator_cpu_s"], b["create"]["operator_cpu_s"]),
        "operator_peak_rss_mib": (a["operator_peak_rss_mib"], b["operator_peak_rss_mib"]),
        "delete_operator_done_s": (a["delete"]["workspaces_machines_nodes_gone_s"],
                                   b["delete"]["workspaces_machines_nodes_gone_s"]),
        "delete_nothing_left_s": (a["delete"]["nothing_left_s"], b["delete"]["nothing_left_s"]),
    }
    return {name: {"from": x, "to": y, "exponent": k(x, y)} for name, (x, y) in figures.items()}


def table(rows: list[dict[str, Any]]) -> str:
    lines = [("N workspaces", *(str(r["workspaces"]) for r in rows))]

    def add(label: str, get: Any) -> None:
        values = []
        for r in rows:
            try:
                values.append(str(get(r)))
            except (KeyError, TypeError):
                values.append("-")
        lines.append((label, *values))

    add("nodes", lambda r: r["nodes"])
    add("baseline: Deployments+Services direct, all pods Ready, s", lambda r: r["baseline"]["all_ready_s"])
    add("all WorkspaceReady, s", lambda r: r["create"]["all_ready_s"])
    add("  ratio to the baseline", lambda r: r["create"]["ratio_to_baseline"])
    add("Ready per second", lambda r: r["create"]["ready_per_s"])
    add("time to ready p50, s", lambda r: r["create"]["time_to_ready_p50_s"])
    add("time to ready p99, s", lambda r: r["create"]["time_to_ready_p99_s"])
    add("reconciles / workspace (up)", lambda r: r["create"]["reconciles_per_workspace"])
    add("  of which workspace / machine", lambda r: f"{r['create']['workspace_reconciles_per_workspace']} / "
                                                    f"{r['create']['machine_reconciles_per_workspace']}")
    add("apiserver requests / workspace (up)", lambda r: r["create"]["apiserver_requests_per_workspace"])
    add("writes / workspace (up, Events included)", lambda r: r["create"]["writes_per_workspace"])
    add("  of which Event writes", lambda r: r["create"]["event_writes_per_workspace"])
    add("Events / workspace (about the Workspace)", lambda r: r["create"]["workspace_events_per_workspace"])
    add("writes in the steady window after Ready", lambda r: f"{r['create']['steady_writes']} "
                                                             f"in {r['create']['steady_s']:.0f} s")
    add("reads (GET/LIST) in the steady window", lambda r: r["create"]["steady_reads"])
    add("operator CPU s (up)", lambda r: r["create"]["operator_cpu_s"])
    add("operator CPU ms / workspace (up)", lambda r: r["create"]["operator_cpu_ms_per_workspace"])
    add("operator share of the machine's CPU (up)", lambda r: f"{100 * r['create']['operator_cpu_share']:.0f} %")
    add("operator peak RSS, MiB", lambda r: r["operator_peak_rss_mib"])
    add("delete: workspaces+machines+nodes gone, s", lambda r: r["delete"]["workspaces_machines_nodes_gone_s"])
    add("delete: nothing left (+ workloads, pods), s", lambda r: r["delete"]["nothing_left_s"])
    add("reconciles / workspace (delete)", lambda r: r["delete"]["reconciles_per_workspace"])
    add("apiserver requests / workspace (delete)", lambda r: r["delete"]["apiserver_requests_per_workspace"])
    add("operator CPU s (delete)", lambda r: r["delete"]["operator_cpu_s"])
    add("reconcile errors", lambda r: r["reconcile_errors_total"])
    add("duplicate Machines/Nodes", lambda r: r["duplicates"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for j, line in enumerate(lines):
        out.append(" | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths,
                                                                                                   strict=True))))
        if j == 0:
            out.append("-|-".join("-" * w for w in widths))
    return "\n".join(out)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    report: dict[str, Any] = {"benchmark": "scale", "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                              "machine": machine_info(), "command": " ".join(["python", *sys.argv]), "sizes": []}
    workdir = Path(tempfile.mkdtemp(prefix="kaito-bench-scale-"))
    try:
        for n in sizes:
            print(f"-- N = {n} ...", file=sys.stderr, flush=True)
            env = {f"KAITO_{k.upper()}": v for k, v in (kv.split("=", 1) for kv in args.operator_setting)}
            row = await run_size(n, min(args.namespaces, n), workdir, args.profile, args.timeout,
                                 operator_env=env, nodes_mode=args.nodes, steady_s=args.steady)
            report["sizes"].append(row)
            print(json.dumps({k: v for k, v in row.items() if not isinstance(v, dict)}), file=sys.stderr, flush=True)
            args.out.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"work folder kept: {workdir}", file=sys.stderr)
    report["growth"] = growth(report["sizes"])
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=os.environ.get("KAITO_BENCH_SCALE_SIZES", "100,400,1000"),
                        help="numbers of Workspaces (default 100,400,1000; env KAITO_BENCH_SCALE_SIZES)")
    parser.add_argument("--nodes", choices=("byo", "simulated"),
                        default=os.environ.get("KAITO_BENCH_SCALE_NODES", "byo"),
                        help="byo: N pre-made kwok nodes, one labelled per Workspace (default); "
                             "simulated: the simulated provisioner makes a Machine and Node each")
    parser.add_argument("--steady", type=float, default=float(os.environ.get("KAITO_BENCH_SCALE_STEADY", "30")),
                        help="seconds watched after all are Ready for writes and reads (default 30)")
    parser.add_argument("--namespaces", type=int, default=10, help="namespaces the Workspaces are spread over")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed for each phase")
    parser.add_argument("--operator-setting", action="append", default=[], metavar="KEY=VALUE",
                        help="operator setting as KAITO_<KEY> in its environment, e.g. workspace__workers=16")
    parser.add_argument("--profile", action="store_true", help="run the operator under pyinstrument")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, audit log)")
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    configure_logging("warning", json=False)
    report = asyncio.run(main_async(args))
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    m = report["machine"]
    print(f"scale benchmark, {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Python {m['python']}")
    print(table(report["sizes"]))
    if report["growth"]:
        print("\ngrowth from the smallest to the largest N (figure ~ N^k; k = 1 is linear):")
        for name, g in report["growth"].items():
            print(f"  {name}: {g['from']} -> {g['to']}  k = {g['exponent']}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
