"""Shared by the reliability suite and benchmarks/bench_scale.py (no tests here).

* :func:`operator_kubeconfig`: a ServiceAccount bound to cluster-admin and a kubeconfig with its
  TokenRequest token, so the apiserver's audit log records every call the operator makes.
* :class:`OperatorProcess`: ``kaito controller`` as a child process (kill -9 it, read its peak RSS
  and CPU seconds from /proc, scrape its /metrics, read its JSON log).
* :class:`Fleet`: informers in the test process on Workspaces, Machines, Nodes and Deployments that
  remember every name ever seen and when each Workspace first turned Ready (time to ready,
  duplicates, leaks).
* :func:`audited_creates`: every create the apiserver's audit log holds for a user, per object
  (a second create of the same Node is a duplicate launch even when it was answered AlreadyExists).
* :func:`objects_left`: what is still there, listed afresh from the apiserver (not from the
  informers a wait already looked at).
* :data:`RESULTS`: rows of the final table (printed by conftest.py, saved as
  benchmarks/results/reliability.json). A test records its row first and fills each figure in as
  soon as it is measured, before asserting on it, so a failed row keeps its counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kaito_core.api import LABEL_MACHINE, LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE
from kaito_core.controllers.workspace import MACHINE, WORKSPACE
from kaito_core.engine import DEPLOYMENT, NODE, ApiClientTransport, Client, Informer
from kaito_core.engine.informer import FuncHandler
from kaito_core.testing import ControlPlane, condition, condition_is_true, free_port
from kaito_core.testing import eventually as testing_eventually

__all__ = [
    "RESULTS",
    "Fleet",
    "OperatorProcess",
    "ReliabilityRow",
    "audit_time",
    "audited_creates",
    "audited_writes",
    "condition",
    "env_int",
    "eventually",
    "is_true",
    "objects_left",
    "operator_kubeconfig",
    "ready_now",
    "record",
    "repeated",
    "workspace_doc",
]

ROOT = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def env_int(name: str, default: int) -> int:
    """A size knob: ``KAITO_RELIABILITY_<NAME>`` overrides the CI default."""
    return int(os.environ.get(f"KAITO_RELIABILITY_{name}", default))


# -- the final table -------------------------------------------------------------------------------


@dataclass
class ReliabilityRow:
    scenario: str
    runs: int = 1
    kills_survived: int = 0
    faults_injected: int = 0
    objects_created: int = 0
    objects_left: int = 0
    duplicates: int = 0
    provider_creates: int = 0
    """Creates that reached the provider: Node POSTs of the simulated one (audit log), agent-pool PUTs
    the fake ARM executed; each object more than once is counted in ``duplicates``."""
    answers_lost: int = 0
    """Faults of the kind "the call took effect, then the caller got an error"."""
    max_convergence_s: float = 0.0
    passed: bool = False
    notes: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


RESULTS: list[ReliabilityRow] = []


def record(row: ReliabilityRow) -> ReliabilityRow:
    RESULTS.append(row)
    return row


def table(rows: Iterable[ReliabilityRow]) -> str:
    head = ("scenario", "runs", "kills survived", "faults injected", "answers lost", "objects created",
            "provider creates", "objects left", "duplicates", "max convergence s", "result")
    body = [(r.scenario, str(r.runs), str(r.kills_survived), str(r.faults_injected), str(r.answers_lost),
             str(r.objects_created), str(r.provider_creates), str(r.objects_left), str(r.duplicates),
             f"{r.max_convergence_s:.1f}", "pass" if r.passed else "FAIL")
            for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(head)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)),
             "-|-".join("-" * w for w in widths)]
    lines += [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in body]
    return "\n".join(lines)


# -- small helpers ---------------------------------------------------------------------------------


# The kit's one ``eventually``, at the suite's pace: poll twice a second, say every 10 s what it waits for.
eventually = functools.partial(testing_eventually, interval=0.5, report_every=10)


# Shared with every test: kaito_core.testing reads conditions from object dicts.
is_true = condition_is_true


def ready_now(ws: dict[str, Any]) -> bool:
    """WorkspaceReady=True computed from the Workspace's current generation (not a stale status)."""
    cond = condition(ws, "WorkspaceReady")
    if cond is None or cond.get("status") != "True":
        return False
    generation = (ws.get("metadata") or {}).get("generation")
    return cond.get("observedGeneration") in (None, generation)


def workspace_doc(name: str, namespace: str, *, count: int = 1, instance_type: str = "Standard_NC6s_v3",
                  preset: str = "phi-3-mini-4k-instruct") -> dict[str, Any]:
    """An inference Workspace (the seed example's shape)."""
    return {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
            "metadata": {"name": name, "namespace": namespace},
            "resource": {"count": count, "instanceType": instance_type,
                         "labelSelector": {"matchLabels": {"apps": name}}},
            "inference": {"preset": {"name": preset}}}


def operator_kubeconfig(plane: ControlPlane, folder: Path, namespace: str = "kaito-system",
                        account: str = "kaito-operator") -> tuple[Path, str]:
    """A kubeconfig for a ServiceAccount bound to cluster-admin; returns (path, audit username)."""
    plane.kubectl("create", "namespace", namespace, check=False)
    plane.kubectl("create", "serviceaccount", account, "-n", namespace, check=False)
    plane.kubectl("create", "clusterrolebinding", f"{account}-{namespace}", "--clusterrole=cluster-admin",
                  f"--serviceaccount={namespace}:{account}", check=False)
    token = plane.kubectl("create", "token", account, "-n", namespace, "--duration=6h").stdout.strip()
    assert plane.certs is not None
    path = folder / f"{account}.kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "local", "cluster": {"server": plane.server,
                                                  "certificate-authority": str(plane.certs.ca_cert)}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "sa"}}],
    }))
    return path, f"system:serviceaccount:{namespace}:{account}"


def audited_requests(plane: ControlPlane, user: str, since_line: int = 0) -> tuple[int, dict[str, int], int]:
    """(requests, {verb resource: n}, lines read) made by ``user`` after line ``since_line``; one per auditID."""
    ids: set[str] = set()
    by_kind: dict[str, int] = defaultdict(int)
    lines = 0
    for path in (plane.audit_log,):
        if not path.exists():
            continue
        with path.open() as fh:
            for lines, line in enumerate(fh, 1):
                if lines <= since_line or f'"{user}"' not in line:
                    continue
                event = json.loads(line)
                if event.get("user", {}).get("username") != user or event["auditID"] in ids:
                    continue
                ids.add(event["auditID"])
                ref = event.get("objectRef") or {}
                sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
                by_kind[f"{event['verb']} {ref.get('resource', event.get('requestURI', '?'))}{sub}"] += 1
    return len(ids), dict(by_kind), lines


#: The verbs that change something (what the leader and write-count tests call a write).
MUTATING = frozenset({"create", "update", "patch", "delete", "deletecollection"})


def audit_time(stamp: str) -> float:
    """An audit (or structlog) RFC 3339 timestamp as Unix seconds."""
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def audited_writes(plane: ControlPlane, user: str) -> Iterator[tuple[float, dict[str, Any]]]:
    """(received, audit event) of every completed write by ``user``, Leases left out (the elector's own)."""
    for line in plane.audit_log.read_text().splitlines():
        if f'"{user}"' not in line:
            continue
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        if (event.get("user", {}).get("username") != user or event.get("verb") not in MUTATING
                or ref.get("resource") == "leases" or event.get("stage") != "ResponseComplete"):
            continue
        yield audit_time(event["requestReceivedTimestamp"]), event


def audited_creates(plane: ControlPlane, user: str, resource: str = "nodes") -> Counter[str]:
    """Creates of ``resource`` by ``user`` in the audit log, per object name, whatever the answer
    (201, or 409 AlreadyExists: a create attempted twice is a duplicate either way)."""
    creates: Counter[str] = Counter()
    seen: set[str] = set()
    if not plane.audit_log.exists():
        return creates
    with plane.audit_log.open() as fh:
        for line in fh:
            if f'"{user}"' not in line or '"create"' not in line:
                continue
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            if (event.get("user", {}).get("username") != user or event.get("verb") != "create"
                    or ref.get("resource") != resource or ref.get("subresource") or event["auditID"] in seen):
                continue
            seen.add(event["auditID"])
            # A POST names its object in the body; the Metadata-level event has it in objectRef.name.
            creates[str(ref.get("name") or event.get("requestURI"))] += 1
    return creates


def repeated(creates: Counter[str]) -> dict[str, int]:
    """The objects created more than once."""
    return {name: n for name, n in creates.items() if n > 1}


async def objects_left(client: Client, namespaces: Iterable[str]) -> int:
    """Workspaces, Machines, Nodes and Deployments of ``namespaces`` still there: a fresh LIST from the
    apiserver, independent of the Fleet's informers (which the "nothing left" wait already read)."""
    wanted = set(namespaces)
    left = 0
    for ns in wanted:
        left += len((await client.list(WORKSPACE, ns)).items)
        left += len((await client.list(DEPLOYMENT, ns)).items)
    for kind in (MACHINE, NODE):
        for obj in (await client.list(kind, label_selector=LABEL_WORKSPACE_NAMESPACE)).items:
            if ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_WORKSPACE_NAMESPACE) in wanted:
                left += 1
    return left


# -- the operator as a process ----------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the test process dies (no orphaned operators)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class OperatorProcess:
    """``python -m kaito_core.cli controller`` against ``kubeconfig``; kill -9 it at will."""

    def __init__(self, kubeconfig: Path, log_dir: Path, *, namespace: str = "kaito-system",
                 provisioner_settings: dict[str, Any] | None = None, leader_elect: bool = False,
                 identity: str = "operator", extra_env: dict[str, str] | None = None,
                 extra_args: Iterable[str] = (), launcher: Iterable[str] = ()):
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.namespace = namespace
        self.provisioner_settings = {"launch_delay": 0, **(provisioner_settings or {})}
        self.leader_elect = leader_elect
        self.identity = identity
        self.extra_env = extra_env or {}
        self.extra_args = list(extra_args)
        self.launcher = list(launcher) or ["-m"]
        """How Python starts the CLI module: ``-m`` (default) or e.g. a profiler's ``-m pyinstrument ... -m``."""
        self.proc: subprocess.Popen[bytes] | None = None
        self.http_port = 0
        self.starts = 0
        self.log_path = log_dir / f"{identity}.log"
        self._log_file: Any = None

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.http_port = free_port()
        args = [sys.executable, *self.launcher, "kaito_core.cli", "controller", f"--kubeconfig={self.kubeconfig}",
                "--provisioner=simulated", f"--namespace={self.namespace}",
                f"--leader-elect={'true' if self.leader_elect else 'false'}", f"--http-port={self.http_port}",
                "--no-webhook", "--log-format=json", "--log-level=info", *self.extra_args]
        args += [f"--provisioner-setting={k}={v}" for k, v in self.provisioner_settings.items()]
        self.starts += 1
        self._log_file = self.log_path.open("ab")
        self._log_file.write(f'{{"harness": "start", "n": {self.starts}, "t": {time.time()}}}\n'.encode())
        self._log_file.flush()
        env = {**os.environ, "POD_NAME": self.identity, **self.extra_env}
        self.proc = subprocess.Popen(args, stdout=self._log_file, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                     preexec_fn=_die_with_parent)  # noqa: PLW1509 - only prctl, no locks

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._close_log()

    def stop(self, timeout: float = 30) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # -- what it costs

    def peak_rss_bytes(self) -> int:
        """VmHWM of the live process (its high-water resident set)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the live process."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def metric_sum(self, name: str, **labels: str) -> float:
        """Sum of every sample of ``name`` whose labels include ``labels``."""
        total = 0.0
        for line in self.metrics_text().splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            metric, _, label_text = head.partition("{")
            if metric != name:
                continue
            if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
                total += float(value)
        return total

    def ready(self) -> bool:
        """/readyz answers 200; raises if the process has exited (no point waiting for it)."""
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"the operator exited ({self.proc.returncode}):\n{self.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/readyz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        if not self.log_path.exists():
            return out
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    out.append(obj)
        return out

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


# -- watching the fleet from the outside --------------------------------------------------------------


def _key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}" if meta.get("namespace") else str(meta.get("name"))


@dataclass
class Fleet:
    """Everything the test process has seen of Workspaces, Machines, Nodes and Deployments."""

    client: Client
    namespaces: set[str] = field(default_factory=set)
    created_at: dict[str, float] = field(default_factory=dict)
    ready_at: dict[str, float] = field(default_factory=dict)
    machines_seen: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    """Workspace key -> every Machine name ever seen for it (more than its count = a duplicate)."""
    machine_uids: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    """Machine name -> every uid it had (more than one = recreated)."""
    nodes_seen: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    """Machine name -> every Node name ever seen for it (more than one = a duplicate node)."""
    node_uids: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    """Node name -> every uid it had (more than one = a second instance was launched for a Machine)."""
    informers: dict[str, Informer] = field(default_factory=dict)

    @classmethod
    async def connect(cls, kubeconfig: Path) -> Fleet:
        return cls(Client(await ApiClientTransport.from_kubeconfig(kubeconfig)))

    def _ours(self, obj: dict[str, Any]) -> bool:
        return (obj.get("metadata") or {}).get("namespace") in self.namespaces

    def _on_workspace(self, obj: dict[str, Any]) -> None:
        if not self._ours(obj):
            return
        key = _key(obj)
        if key not in self.ready_at and is_true(obj, "WorkspaceReady"):
            self.ready_at[key] = time.monotonic()

    def _on_machine(self, obj: dict[str, Any]) -> None:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if labels.get(LABEL_WORKSPACE_NAMESPACE) not in self.namespaces:
            return
        name = obj["metadata"]["name"]
        self.machines_seen[f"{labels[LABEL_WORKSPACE_NAMESPACE]}/{labels.get(LABEL_WORKSPACE)}"].add(name)
        self.machine_uids[name].add(obj["metadata"].get("uid", ""))

    def _on_node(self, obj: dict[str, Any]) -> None:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if labels.get(LABEL_WORKSPACE_NAMESPACE) in self.namespaces and labels.get(LABEL_MACHINE):
            self.nodes_seen[labels[LABEL_MACHINE]].add(obj["metadata"]["name"])
            self.node_uids[obj["metadata"]["name"]].add(obj["metadata"].get("uid", ""))

    async def start(self, namespaces: Iterable[str]) -> None:
        self.namespaces.update(namespaces)
        specs = {"workspaces": (WORKSPACE, None, self._on_workspace),
                 "machines": (MACHINE, None, self._on_machine),
                 "nodes": (NODE, LABEL_MACHINE, self._on_node),
                 "deployments": (DEPLOYMENT, None, None)}
        for name, (kind, selector, func) in specs.items():
            informer = Informer(self.client, kind, label_selector=selector)
            if func is not None:
                informer.add_handler(FuncHandler(on_add=func, on_update=lambda old, new, f=func: f(new)))
            informer.start()
            self.informers[name] = informer
        for informer in self.informers.values():
            assert await informer.wait_for_sync(120), "fleet informers did not sync"

    async def stop(self) -> None:
        for informer in self.informers.values():
            await informer.stop()
        await self.client.close()

    # -- views over the caches

    def objects(self, kind: str) -> list[dict[str, Any]]:
        items = [obj for _, obj in self.informers[kind].store.items()]
        if kind in ("workspaces", "deployments"):
            return [o for o in items if self._ours(o)]
        return [o for o in items
                if ((o.get("metadata") or {}).get("labels") or {}).get(LABEL_WORKSPACE_NAMESPACE) in self.namespaces]

    def counts(self) -> dict[str, int]:
        return {kind: len(self.objects(kind)) for kind in self.informers}

    def ready_count(self) -> int:
        return sum(1 for ws in self.objects("workspaces") if is_true(ws, "WorkspaceReady"))

    def not_ready(self, limit: int = 5) -> dict[str, Any]:
        out = {}
        for ws in self.objects("workspaces"):
            if not is_true(ws, "WorkspaceReady"):
                out[_key(ws)] = [(c.get("type"), c.get("status"), c.get("reason"), c.get("message"))
                                 for c in (ws.get("status") or {}).get("conditions") or []]
                # What a scheduler sees on the nodes (taints are the usual reason a pod waits).
                nodes = {n["metadata"]["name"]: n for n in self.objects("nodes")}
                for name in (ws.get("status") or {}).get("workerNodes") or []:
                    node = nodes.get(name) or {}
                    out[_key(ws)].append(("node", name, str((node.get("spec") or {}).get("taints")),
                                          str([(c.get("type"), c.get("status"))
                                               for c in (node.get("status") or {}).get("conditions") or []])))
                if len(out) >= limit:
                    break
        return out

    def duplicates(self, expected_per_workspace: dict[str, int]) -> dict[str, Any]:
        """Machines beyond a Workspace's count, Machines recreated, Machines with two Nodes."""
        dup: dict[str, Any] = {}
        for key, names in self.machines_seen.items():
            if len(names) > expected_per_workspace.get(key, 1):
                dup[f"machines of {key}"] = sorted(names)
        for name, uids in self.machine_uids.items():
            if len(uids) > 1:
                dup[f"machine {name} recreated"] = len(uids)
        for machine, nodes in self.nodes_seen.items():
            if len(nodes) > 1:
                dup[f"nodes of {machine}"] = sorted(nodes)
        for node, uids in self.node_uids.items():
            if len(uids) > 1:
                dup[f"node {node} launched {len(uids)} times"] = len(uids)
        return dup

    def time_to_ready(self) -> list[float]:
        return [self.ready_at[k] - self.created_at[k] for k in self.created_at if k in self.ready_at]

    async def create_workspaces(self, docs: list[dict[str, Any]], concurrency: int = 32) -> None:
        sem = asyncio.Semaphore(concurrency)

        async def one(doc: dict[str, Any]) -> None:
            async with sem:
                self.created_at[_key(doc)] = time.monotonic()
                await self.client.create(doc, kind=WORKSPACE)

        await asyncio.gather(*(one(doc) for doc in docs))

    async def delete_workspaces(self, concurrency: int = 32) -> None:
        sem = asyncio.Semaphore(concurrency)

        async def one(ws: dict[str, Any]) -> None:
            async with sem:
                meta = ws["metadata"]
                await self.client.delete(WORKSPACE, meta["name"], meta["namespace"], missing_ok=True)

        await asyncio.gather(*(one(ws) for ws in self.objects("workspaces")))

    def leftovers(self) -> dict[str, int]:
        return {kind: n for kind, n in self.counts().items() if n}
