"""The pod specs the Workspace reconciler writes are command lines the runtimes accept.

Two engineers own the two sides (kaito_core.controllers.workspace builds the pods,
kaito_presets.runtime runs in them); this pins the contract between them: every
`python -m kaito_presets.runtime.*` container of the seed workspaces parses with
that module's own argument parser, every path it names is mounted, and the
markers the trainer writes are the ones the push container waits for.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import yaml
from kaito_presets import default_catalog
from kaito_presets.runtime import download, oci, weights
from kaito_presets.runtime.inference import __main__ as inference_main
from kaito_presets.runtime.tuning import __main__ as tuning_main
from kaito_presets.runtime.tuning import config as tuning_config
from kaito_presets.sizing import smallest_fit

from kaito_core.api import Workspace
from kaito_core.controllers.workspace import WorkspaceSettings
from kaito_core.controllers.workspace import runtime as contract
from kaito_core.controllers.workspace.context import BuildContext
from kaito_core.controllers.workspace.inference import inference_workload
from kaito_core.controllers.workspace.tuning import tuning_job

pytestmark = pytest.mark.runtime

EXAMPLES = Path(__file__).parents[2] / "examples"
PARSERS: dict[str, argparse.ArgumentParser] = {
    "kaito_presets.runtime.inference": inference_main.build_parser(),
    "kaito_presets.runtime.tuning": tuning_main.build_parser(),
    "kaito_presets.runtime.download": download.build_parser(),
    "kaito_presets.runtime.oci": oci.build_parser(),
    "kaito_presets.runtime.weights": weights.build_parser(),
}


def _context(example: str) -> BuildContext:
    ws = Workspace.from_dict({**yaml.safe_load((EXAMPLES / example).read_text()),
                              "metadata": {"name": "ws", "namespace": "ns", "uid": "u1"}})
    catalog = default_catalog()
    return BuildContext(ws=ws, settings=WorkspaceSettings(), preset=catalog.find_model(ws.preset.name),
                        sku=catalog.find_sku(ws.resource.instance_type or ""), nodes=["n0"], revision="r1")


def _pod(example: str) -> dict[str, Any]:
    ctx = _context(example)
    if ctx.ws.tuning is not None:
        obj = tuning_job(ctx)
    else:
        obj = inference_workload(ctx, config_data={"inference_config.yaml": ""})
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def _runtime_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        argv = [*container.get("command", []), *container.get("args", [])]
        if "-m" in argv and argv[argv.index("-m") + 1] in PARSERS:
            out.append(container)
    return out


@pytest.mark.parametrize("example", ["kaito_workspace_phi_3.yaml", "kaito_workspace_phi_3_with_adapters.yaml",
                                     "kaito_workspace_tuning_phi_3.yaml"])
def test_every_runtime_container_parses_and_its_paths_are_mounted(example: str) -> None:
    _check_contract(_pod(example))


def _preset_fits() -> list[tuple[str, str, int]]:
    catalog = default_catalog()
    rows = []
    for preset in catalog.models:
        for cloud in ("azure", "aws"):
            fit = smallest_fit(catalog, preset, cloud)
            assert fit is not None, f"{preset.name} fits nothing on {cloud}"
            rows.append((preset.name, fit[0].name, fit[1]))
    return rows


@pytest.mark.parametrize(("preset", "sku", "nodes"), _preset_fits(), ids=str)
def test_every_preset_on_its_smallest_sku_keeps_the_contract(preset: str, sku: str, nodes: int) -> None:
    """Every catalog preset (issue 19: all 30 of Kaito v0.12), on the smallest Azure and AWS instance type
    that serves it, several nodes for the presets that split: the same contract as the seed workspaces."""
    catalog = default_catalog()
    options = {"presetOptions": {"modelAccessSecret": "hf"}} if catalog.model(preset).gated else {}
    ws = Workspace.from_dict({"metadata": {"name": "ws", "namespace": "ns", "uid": "u1"},
                              "resource": {"instanceType": sku, "count": nodes,
                                           "labelSelector": {"matchLabels": {"a": "b"}}},
                              "inference": {"preset": {"name": preset, **options}}})
    ctx = BuildContext(ws=ws, settings=WorkspaceSettings(), preset=catalog.model(preset), sku=catalog.sku(sku),
                       nodes=[f"n{i}" for i in range(nodes)], revision="r1")
    workload = inference_workload(ctx)
    assert workload["kind"] == ("StatefulSet" if nodes > 1 else "Deployment")
    _check_contract(workload["spec"]["template"]["spec"])


def _check_contract(pod: dict[str, Any]) -> None:
    containers = _runtime_containers(pod)
    assert containers, "no runtime container in the pod"
    for container in containers:
        argv = [*container.get("command", []), *container.get("args", [])]
        module = argv[argv.index("-m") + 1]
        args = PARSERS[module].parse_args(argv[argv.index("-m") + 2:])  # SystemExit here = a broken contract
        mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
        for key, value in vars(args).items():
            if key == "adapters_dir" and not any(c["name"].startswith("adapter-") for c in pod.get(
                    "initContainers", [])):
                continue  # no adapters: the runtime treats a missing folder as "none"
            if isinstance(value, (str, Path)) and str(value).startswith(("/mnt/", "/workspace/")):
                assert any(str(value).startswith(m) for m in mounts), (
                    f"{container['name']}: {value} is not under a mount ({mounts})")


def test_markers_and_paths_match_the_runtime() -> None:
    assert contract.TUNING_COMPLETION_MARKER == tuning_config.COMPLETION_MARKER
    assert contract.TUNING_FAILURE_MARKER == tuning_config.FAILURE_MARKER
    assert contract.TUNING_CONFIG_PATH == tuning_config.DEFAULT_CONFIG_PATH
    # The mirrors the operator maps are read under the same names by the tools in the pods.
    assert contract.REGISTRY_MIRRORS_ENV == oci.REGISTRY_MIRRORS_ENV
    assert contract.URL_MIRRORS_ENV == download.URL_MIRRORS_ENV
    assert contract.INSECURE_REGISTRIES_ENV == oci.INSECURE_REGISTRIES_ENV
    pod = _pod("kaito_workspace_tuning_phi_3.yaml")
    push = next(c for c in pod["containers"] if "push" in [*c.get("command", []), *c.get("args", [])])
    argv = [*push.get("command", []), *push.get("args", [])]
    parsed = PARSERS["kaito_presets.runtime.oci"].parse_args(argv[argv.index("-m") + 2:])
    assert str(parsed.wait_for).endswith(tuning_config.COMPLETION_MARKER)
    assert str(parsed.fail_marker).endswith(tuning_config.FAILURE_MARKER)  # a failed trainer ends the pod


def test_adapter_strength_reaches_the_server_env() -> None:
    pod = _pod("kaito_workspace_phi_3_with_adapters.yaml")
    (server,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in server.get("env", [])}
    assert env[contract.ADAPTER_STRENGTHS_ENV] == '{"phi-3-adapter": 1.0}'
    pulls = [c for c in pod["initContainers"] if contract.OCI_MODULE in c.get("command", [])]
    assert len(pulls) == 1
