"""`kaito up` (the README's main command): the seed examples reach the state a user expects,
`kubectl get workspace` shows it, and Ctrl-C leaves nothing running."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kaito_core.testing import asset_dir, ensure_binaries

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("kaito_workspace_*.yaml"))


def _running(state_dir: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", str(state_dir)], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def test_kaito_up_runs_the_seed_examples_and_stops_cleanly(tmp_path: Path) -> None:
    ensure_binaries()
    state = tmp_path / "state"
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kaito_core.cli", "up", "--state-dir", str(state), "--status-interval", "1",
             "--apply", *map(str, EXAMPLES)],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
        )
    kubectl = [str(asset_dir() / "kubectl"), f"--kubeconfig={state / 'kubeconfig'}"]

    def conditions() -> dict[str, dict[str, str]]:
        got = subprocess.run([*kubectl, "get", "workspaces.kaito.sh", "-A", "-o", "json"],
                             capture_output=True, text=True)
        if got.returncode != 0:
            return {}
        return {item["metadata"]["name"]: {c["type"]: c["status"] for c in item.get("status", {}).get("conditions", [])}
                for item in json.loads(got.stdout)["items"]}

    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, f"kaito up exited early:\n{log.read_text()[-3000:]}"
            seen = conditions()
            if (seen.get("workspace-phi-3-mini", {}).get("WorkspaceReady") == "True"
                    and seen.get("workspace-phi-3-mini-adapter", {}).get("WorkspaceReady") == "True"
                    and seen.get("workspace-tuning-phi-3", {}).get("WorkspaceSucceeded") == "True"):
                break
            assert time.monotonic() < deadline, f"not converged: {seen}\n{log.read_text()[-3000:]}"
            time.sleep(1)
        table = subprocess.run([*kubectl, "get", "workspace", "workspace-phi-3-mini"], capture_output=True,
                               text=True, check=True).stdout.splitlines()
        assert table[0].split() == ["NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY", "AGE"]
        assert table[1].split()[:5] == ["workspace-phi-3-mini", "Standard_NC6s_v3", "True", "True", "True"]
        service = json.loads(subprocess.run([*kubectl, "get", "svc", "workspace-phi-3-mini", "-o", "json"],
                                            capture_output=True, text=True, check=True).stdout)
        assert service["spec"]["type"] == "ClusterIP"
        assert sorted(p["port"] for p in service["spec"]["ports"]) == [80, 29500]
        printed = log.read_text()
        assert "export KUBECONFIG=" in printed and "WORKSPACEREADY" in printed  # the live status table
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log.read_text()[-3000:]
    assert "nothing left running" in log.read_text()
    assert _running(state) == []
