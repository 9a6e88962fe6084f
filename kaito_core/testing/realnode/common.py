"""Addresses of a run's network namespace and the small helpers every part of the real nodes uses.

Node ``n`` is ``10.231.0.<n>``, its pods ``10.232.<n>.0/24``; the namespace also holds the address
where host ports are exposed and the cluster DNS. The helpers find a run's mounts and processes
(every process a run starts names its folder on its command line) and read CRI container logs.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

NODE_NET = "10.231.0"
POD_NET = "10.232"
#: The namespace's address where :meth:`RealNodes.expose_host_port` makes host ports reachable (pods too).
HOST_SERVICES_IP = f"{NODE_NET}.254"
#: The cluster DNS (CoreDNS) every node's pods are told to use (the kubelet's ``clusterDNS``).
CLUSTER_DNS_IP = f"{NODE_NET}.253"
CLUSTER_DOMAIN = "cluster.local"
_TASK_DIR = "io.containerd.runtime.v2.task"
_K8S_NS = "k8s.io"


def mounts_under(folder: Path) -> list[str]:
    """Mount points (from /proc/mounts) at or below ``folder``, deepest first."""
    prefix = str(folder.resolve())
    found = []
    for line in Path("/proc/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if target == prefix or target.startswith(prefix + "/"):
            found.append(target)
    return sorted(set(found), key=lambda path: path.count("/"), reverse=True)


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (the run's folder names every process it started)."""
    pids = []
    needle = text.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def parse_cri_log(raw: str) -> str:
    """The text of a CRI container log: ``<time> <stream> <P|F> <message>`` lines, partial (P) ones joined."""
    out: list[str] = []
    for line in raw.splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 3:
            continue
        message = parts[3] if len(parts) == 4 else ""
        out.append(message if parts[2] == "P" else message + "\n")
    return "".join(out)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
