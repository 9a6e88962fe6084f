"""Support of the seed-on-real-nodes test (no tests here): the memory of a node."""

from __future__ import annotations

from pathlib import Path

from kaito_core.testing.realnode import RealNode, cgroup_dirs, processes_mentioning


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def node_rss_bytes(node: RealNode) -> dict[str, int]:
    """Resident memory of a node: its own processes (kubelet, containerd, shims: those naming its folder)
    and every process of its containers (by cgroup)."""
    out = {"kubelet_containerd_shims": sum(_rss(pid) for pid in processes_mentioning(str(node.root)))}
    pids: set[int] = set()
    for cid in node.container_ids():
        for folder in cgroup_dirs(f"/k8s.io/{cid}"):
            procs = folder / "cgroup.procs"
            if procs.exists():
                pids.update(int(p) for p in procs.read_text().split())
    out["containers"] = sum(_rss(pid) for pid in pids)
    out["total"] = sum(out.values())
    return out
