"""Issue 19: every preset's workload, on its smallest Azure and AWS instance type (several nodes for the
presets that split), is one the apiserver accepts (a server-side dry run: schema and defaulting, the
pod spec included)."""

from __future__ import annotations

from typing import Any

import pytest
from kaito_presets import default_catalog
from kaito_presets.sizing import smallest_fit
from kubernetes_asyncio import client

from kaito_core.api import Workspace
from kaito_core.controllers.workspace import WorkspaceSettings
from kaito_core.controllers.workspace.context import BuildContext
from kaito_core.controllers.workspace.inference import headless_service, inference_service, inference_workload

CATALOG = default_catalog()
SETTINGS = WorkspaceSettings(image_registry="registry.example/kaito-core", image_tag="1.2.3",
                             weights_registry="weights.example/kaito")


def context(preset_name: str, sku: str, nodes: int, namespace: str) -> BuildContext:
    preset = CATALOG.model(preset_name)
    options = {"presetOptions": {"modelAccessSecret": "hf-token"}} if preset.gated else {}
    ws = Workspace.model_validate({
        "metadata": {"name": "ws-preset", "namespace": namespace, "uid": "00000000-0000-0000-0000-000000000001"},
        "resource": {"instanceType": sku, "count": nodes, "labelSelector": {"matchLabels": {"apps": "x"}}},
        "inference": {"preset": {"name": preset_name, **options}}})
    return BuildContext(ws=ws, settings=SETTINGS, preset=preset, sku=CATALOG.sku(sku),
                        nodes=[f"node-{i}" for i in range(nodes)], revision="r1")


async def test_every_preset_workload_passes_a_server_side_dry_run(kube_api: Any, kube_namespace: str) -> None:
    # Plain dicts go in, as the operator writes them (the typed models would re-check nothing).
    apps: Any = client.AppsV1Api(kube_api)
    core: Any = client.CoreV1Api(kube_api)
    checked: list[str] = []
    for preset in CATALOG.models:
        for cloud in ("azure", "aws"):
            fit = smallest_fit(CATALOG, preset, cloud)
            assert fit is not None, f"{preset.name}: nothing fits on {cloud}"
            sku, nodes = fit
            ctx = context(preset.name, sku.name, nodes, kube_namespace)
            body = inference_workload(ctx)
            where = f"{preset.name} on {nodes} x {sku.name}"
            try:
                if body["kind"] == "StatefulSet":
                    answer = await apps.create_namespaced_stateful_set(kube_namespace, body, dry_run="All")
                    await core.create_namespaced_service(kube_namespace, headless_service(ctx), dry_run="All")
                else:
                    answer = await apps.create_namespaced_deployment(kube_namespace, body, dry_run="All")
                await core.create_namespaced_service(kube_namespace, inference_service(ctx), dry_run="All")
            except client.ApiException as exc:  # pragma: no cover - the failure message
                pytest.fail(f"{where}: the apiserver refused the workload: {exc.body!r}")
            (container,) = answer.spec.template.spec.containers
            assert container.resources.limits["nvidia.com/gpu"] == str(sku.gpu_count), where
            assert answer.spec.replicas == nodes, where
            checked.append(where)
    assert len(checked) == 2 * len(CATALOG.models) == 60
    assert "deepseek-v3-0324 on 2 x p5.48xlarge" in checked
