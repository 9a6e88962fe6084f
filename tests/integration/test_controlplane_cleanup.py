"""Interrupting or killing whatever runs a control plane leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kaito_core.testing import ensure_binaries

pytestmark = pytest.mark.controlplane

RUNNER = """
import json, sys, time
from kaito_core.testing import ControlPlane, ControlPlaneMode
plane = ControlPlane(mode=ControlPlaneMode.FULL)
try:
    plane.start()
    print(json.dumps(plane.pids()), flush=True)
    while True:
        time.sleep(0.1)
finally:
    plane.stop()
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has exited; only its parent's bookkeeping is left


def _start_runner() -> tuple[subprocess.Popen[str], dict[str, int]]:
    ensure_binaries()
    # Restore the default SIGINT disposition, as a terminal's Ctrl-C would find it.
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNNER], stdout=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"runner exited early with {proc.wait()}"
    pids: dict[str, int] = json.loads(line)
    try:
        assert set(pids) == {"etcd", "egress-proxy", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                             "kwok"}
        assert all(_alive(pid) for pid in pids.values())
    except AssertionError:  # a failed check must not leave the runner (and its control plane) running
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        raise
    return proc, pids


def _wait_all_gone(pids: dict[str, int], timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [name for name, pid in pids.items() if _alive(pid)]
        if not left:
            return []
        time.sleep(0.2)
    return left


def test_ctrl_c_stops_every_process() -> None:
    proc, pids = _start_runner()
    proc.send_signal(signal.SIGINT)
    proc.wait(60)
    assert _wait_all_gone(pids) == []


def test_kill_9_of_the_runner_takes_children_down() -> None:
    proc, pids = _start_runner()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert _wait_all_gone(pids) == []
