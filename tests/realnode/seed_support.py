"""Support of the seed-on-real-nodes tests (no tests here): the memory of a node, from its folder."""

from __future__ import annotations

from pathlib import Path

from kaito_core.testing.realnode import RealNode, cgroup_dirs, processes_mentioning

_TASKS = Path("containerd") / "state" / "io.containerd.runtime.v2.task" / "k8s.io"


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def folder_rss_bytes(root: Path) -> dict[str, int]:
    """Resident memory of the node whose folder is ``root``: its own processes (kubelet, containerd, shims:
    those naming its folder) and every process of its containers (by cgroup). Works from another process
    than the one that started the node (``kaito up --real-nodes``)."""
    out = {"kubelet_containerd_shims": sum(_rss(pid) for pid in processes_mentioning(str(root)))}
    pids: set[int] = set()
    tasks = root / _TASKS
    for cid in sorted(p.name for p in tasks.iterdir()) if tasks.is_dir() else []:
        for folder in cgroup_dirs(f"/k8s.io/{cid}"):
            procs = folder / "cgroup.procs"
            if procs.exists():
                pids.update(int(p) for p in procs.read_text().split())
    out["containers"] = sum(_rss(pid) for pid in pids)
    out["total"] = sum(out.values())
    return out


def node_rss_bytes(node: RealNode) -> dict[str, int]:
    return folder_rss_bytes(node.root)
