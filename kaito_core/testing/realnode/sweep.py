"""Sweeping: the cgroups of a node's containers, and whatever a run whose owner died left behind."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from kaito_core.testing.netns import list_kaito_netns
from kaito_core.testing.realnode.common import _K8S_NS, _TASK_DIR, _kill, mounts_under, processes_mentioning


def cgroup_dirs(relative: str) -> list[Path]:
    """The folders of cgroup ``relative`` (e.g. ``/kaito-x/node``) in every mounted hierarchy that has it."""
    found = []
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] in ("cgroup", "cgroup2"):
            path = Path(fields[1]) / relative.lstrip("/")
            if path.is_dir():
                found.append(path)
    return found


def _rmdir_retrying(path: Path) -> None:
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:  # processes still leaving
            time.sleep(0.1)


def _remove_container_cgroups(ids: Sequence[str]) -> None:
    """rmdir the cgroup of each of our containers, in every hierarchy (v1 ones and the v2 mount).

    Without QoS cgroups the kubelet gives the CRI no cgroup parent, so containerd
    puts each container at ``/k8s.io/<id>`` (its namespace, fixed for the CRI). runc
    removes them on a clean delete; this catches what a kill left behind. The shared
    ``/k8s.io`` parent goes too, but only when empty (rmdir refuses otherwise).
    """
    for cid in ids:
        for path in cgroup_dirs(f"/{_K8S_NS}/{cid}"):
            _rmdir_retrying(path)
    for path in cgroup_dirs(f"/{_K8S_NS}"):
        with contextlib.suppress(OSError):
            path.rmdir()


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/<pid>/stat): a pid plus this names one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _owner_alive(folder: Path) -> bool:
    try:
        owner = json.loads((folder / "owner.json").read_text())
    except (OSError, ValueError):
        return True  # not ours, or still being written: leave it alone
    return bool(_start_time(int(owner["pid"])) == owner["start"])


def _sweep_folder(folder: Path) -> None:
    """Remove what a dead run left: its processes, containers, cgroups and mounts (then the folder)."""
    ids: list[str] = []
    for tasks in folder.glob(f"*/containerd/state/{_TASK_DIR}/{_K8S_NS}"):
        for task in tasks.iterdir():
            ids.append(task.name)
            with contextlib.suppress(OSError, ValueError):
                _kill(int((task / "init.pid").read_text().strip()))
    for pid in processes_mentioning(str(folder)):
        _kill(pid)
    _remove_container_cgroups(ids)
    for target in mounts_under(folder):
        subprocess.run(["umount", "--lazy", target], capture_output=True)
    shutil.rmtree(folder, ignore_errors=True)


def sweep_stale_runs() -> list[str]:
    """Clean up after runs whose owner died (a ``kill -9`` of the test runner); returns their names.

    kubelet and containerd die with the runner (parent-death signal), but the
    shims and containers were started by containerd and survive it. Each run
    records its owner (pid and start time) in ``<folder>/owner.json``; a run whose
    owner is gone is swept: processes, containers, cgroups, mounts, the network
    namespace. Runs of live owners are never touched.
    """
    swept = []
    for name in list_kaito_netns():
        folder = Path(tempfile.gettempdir()) / name
        if not (folder / "owner.json").exists() or _owner_alive(folder):
            continue
        _sweep_folder(folder)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        swept.append(name)
    return swept
