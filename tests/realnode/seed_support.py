"""Support of the seed-on-real-nodes test (no tests here): a loopback OCI registry, memory of a node."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kaito_core.testing.realnode import RealNode, cgroup_dirs, processes_mentioning


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_registry(root: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """Debian's ``docker-registry`` on 127.0.0.1:<port> (plain HTTP, no auth); yields the port."""
    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    if not Path(binary).exists():
        pytest.fail("the docker-registry binary is missing: apt-get install -y docker-registry")
    port = _free_port()
    config = {"version": 0.1, "log": {"level": "warn", "accesslog": {"disabled": True}},
              "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
              "http": {"addr": f"127.0.0.1:{port}", "secret": "kaito-test"}}
    (root / "config.yml").write_text(json.dumps(config))
    log = (root / "registry.log").open("w")
    proc = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"docker-registry did not start: {(root / 'registry.log').read_text()[-2000:]}")
                time.sleep(0.05)
        yield port, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


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
