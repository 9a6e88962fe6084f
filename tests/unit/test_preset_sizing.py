"""Issue 19: every Kaito preset renders on its smallest fitting SKU (nodes counted for the ones that
split), max_model_len is sized to the GPU, and adapter strengths are refused under vLLM."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kaito_presets import ModelPreset, default_catalog
from kaito_presets.runtime.inference.config import InferenceConfig
from kaito_presets.sizing import max_model_len, smallest_fit

from kaito_core.api import Workspace, parse_workspace, validate_workspace
from kaito_core.controllers.workspace import WorkspaceSettings
from kaito_core.controllers.workspace.context import BuildContext
from kaito_core.controllers.workspace.inference import default_inference_config, inference_workload

CATALOG = default_catalog()
SETTINGS = WorkspaceSettings(image_registry="registry.example/kaito-core", image_tag="1.2.3",
                             weights_registry="weights.example/kaito")
GPU = "nvidia.com/gpu"


def workspace_doc(preset: str, sku: str, *, count: int = 1, gated: bool = False, runtime: str | None = None,
                  adapters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    inference: dict[str, Any] = {"preset": {"name": preset}}
    if gated:
        inference["preset"]["presetOptions"] = {"modelAccessSecret": "hf-token"}
    if adapters:
        inference["adapters"] = adapters
    meta: dict[str, Any] = {"name": "ws", "namespace": "ns", "uid": "uid-1"}
    if runtime:
        meta["annotations"] = {"kaito.sh/runtime": runtime}
    return {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": meta,
            "resource": {"instanceType": sku, "count": count, "labelSelector": {"matchLabels": {"apps": "x"}}},
            "inference": inference}


def build(doc: dict[str, Any], nodes: int = 1) -> BuildContext:
    ws = Workspace.model_validate(doc)
    assert ws.preset is not None and ws.resource.instance_type
    return BuildContext(ws=ws, settings=SETTINGS, preset=CATALOG.model(ws.preset.name),
                        sku=CATALOG.sku(ws.resource.instance_type), nodes=[f"n{i}" for i in range(nodes)],
                        revision="r1")


def fits() -> list[tuple[str, str, str, int]]:
    rows = []
    for preset in CATALOG.models:
        for cloud in ("azure", "aws"):
            fit = smallest_fit(CATALOG, preset, cloud)
            assert fit is not None, f"{preset.name} fits no {cloud} instance type, even on several nodes"
            rows.append((preset.name, cloud, fit[0].name, fit[1]))
    return rows


@pytest.mark.parametrize(("name", "cloud", "sku", "nodes"), fits(), ids=str)
def test_every_preset_renders_on_its_smallest_sku(name: str, cloud: str, sku: str, nodes: int) -> None:
    preset: ModelPreset = CATALOG.model(name)
    doc = workspace_doc(name, sku, count=nodes, gated=preset.gated)
    assert validate_workspace(doc) == []  # the fit check counts the nodes of a preset that splits
    ctx = build(doc, nodes)
    workload = inference_workload(ctx)
    assert workload["kind"] == ("StatefulSet" if nodes > 1 else "Deployment")
    assert workload["spec"]["replicas"] == nodes
    pod = workload["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    gpus = str(CATALOG.sku(sku).gpu_count)
    assert container["resources"] == {"requests": {GPU: gpus}, "limits": {GPU: gpus}}
    assert container["image"].startswith("registry.example/kaito-core/kaito-runtime")
    assert "--served-model-name" in container["command"] and name in container["command"]
    # The server's own config parser accepts what we render, and the context fits the GPUs.
    config = InferenceConfig.model_validate(default_inference_config(ctx))
    assert 0 < config.max_model_len <= preset.context_length  # type: ignore[operator]
    assert config.vllm["max-model-len"] == config.max_model_len
    if nodes > 1:
        assert validate_workspace(workspace_doc(name, sku, count=nodes - 1, gated=preset.gated)), \
            f"{name} on {nodes - 1} x {sku} should not fit"


def test_a_split_preset_on_too_few_nodes_is_told_how_many() -> None:
    errors = validate_workspace(workspace_doc("deepseek-v3-0324", "p5.48xlarge"))
    (error,) = [e for e in errors if e.path == "resource.instanceType"]
    assert "p5.48xlarge has 640Gi GPU memory; deepseek-v3-0324 needs 730Gi" in error.message
    assert "resource.count: 2" in error.message
    llama = validate_workspace(workspace_doc("llama-3.3-70b-instruct", "Standard_NC24ads_A100_v4", gated=True))
    assert any("resource.count: 2" in e.message for e in llama)
    assert validate_workspace(workspace_doc("llama-3.3-70b-instruct", "Standard_NC24ads_A100_v4", count=2,
                                            gated=True)) == []


def test_phi_3_128k_context_is_sized_to_a_16gi_gpu() -> None:
    small = default_inference_config(build(workspace_doc("phi-3-mini-128k-instruct", "Standard_NC6s_v3")))
    assert small["max_model_len"] < 131072
    assert small["vllm"]["max-model-len"] == small["max_model_len"]
    # (16Gi x 0.9 - 2.3Gi - 1.02 x 7.12Gi) / (2 x 32 layers x 32 KV heads x 96 x 2 bytes), to 256s.
    assert small["max_model_len"] == 13056
    big = default_inference_config(build(workspace_doc("phi-3-mini-128k-instruct", "Standard_NC24ads_A100_v4")))
    assert big["max_model_len"] == big["vllm"]["max-model-len"] == 131072
    # What the server reads: max_model_len, and the same as vLLM's engine argument.
    config = InferenceConfig.model_validate(yaml.safe_load(yaml.safe_dump(small)))
    assert config.max_model_len == 13056 and config.vllm["max-model-len"] == 13056


def test_max_model_len_counts_every_gpu_a_replica_spans() -> None:
    preset = CATALOG.model("llama-3.3-70b-instruct")
    a100 = CATALOG.sku("Standard_NC24ads_A100_v4")
    one = max_model_len(preset, gpu_memory_per_gpu=a100.gpu_memory_per_gpu, gpus=1)
    two = max_model_len(preset, gpu_memory_per_gpu=a100.gpu_memory_per_gpu, gpus=2)
    assert one == 256 and 2048 < two < preset.context_length  # on one GPU it does not fit at all
    ctx = build(workspace_doc("llama-3.3-70b-instruct", "Standard_NC24ads_A100_v4", count=2, gated=True), 2)
    assert default_inference_config(ctx)["max_model_len"] == two


def adapter(strength: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"source": {"name": "a1", "image": "registry.example/adapter:1"}}
    if strength is not None:
        entry["strength"] = strength
    return entry


@pytest.mark.parametrize("strength", ["0.5", "0", "0.99"])
def test_vllm_refuses_a_strength_it_cannot_apply(strength: str) -> None:
    errors = validate_workspace(workspace_doc("phi-3-mini-128k-instruct", "Standard_NC6s_v3",
                                              adapters=[adapter(strength)]))
    (error,) = errors
    assert error.path == "inference.adapters[0].strength" and error.rule == "AdapterStrength"
    assert "under vLLM" in error.message and "kaito.sh/runtime: transformers" in error.message


@pytest.mark.parametrize(("strength", "runtime"), [(None, None), ("1.0", None), ("1", "vllm"),
                                                    ("0.5", "transformers"), ("0", "transformers")])
def test_full_strength_or_the_transformers_runtime_is_accepted(strength: str | None, runtime: str | None) -> None:
    assert validate_workspace(workspace_doc("phi-3-mini-128k-instruct", "Standard_NC6s_v3", runtime=runtime,
                                            adapters=[adapter(strength)])) == []


def test_kaito_presets_lists_all_thirty_with_the_fit_table(capsys: pytest.CaptureFixture[str]) -> None:
    from kaito_core.cli import main

    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[0] == "PRESET" and "SMALLEST FIT (AZURE / AWS)" in lines[0]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == set(CATALOG.model_names()) and len(rows) == 30
    assert rows["deepseek-v3-0324"].endswith("Standard_ND96isr_H200_v5 / 2 x p5.48xlarge")
    assert rows["llama-3.3-70b-instruct"].endswith("Standard_NC48ads_A100_v4 / g5.48xlarge")
    assert " yes " in rows["gemma-3-4b-instruct"] and "262144" in rows["ministral-3-8b-instruct"]


def test_the_operators_default_runtime_counts_as_the_reconciler_counts_it() -> None:
    """kaito up --real-nodes runs transformers on CPU nodes (WorkspaceSettings.default_runtime): a
    strength is applied there, so neither admission nor the reconciler may refuse it; an explicit
    kaito.sh/runtime: vllm still is."""
    from kaito_core.api.webhook import admission_review
    from kaito_core.controllers.workspace import WorkspaceSettings
    from kaito_core.controllers.workspace.context import BuildContext

    doc = workspace_doc("phi-3-mini-128k-instruct", "Standard_NC6s_v3", adapters=[adapter("0")])
    assert validate_workspace(doc, default_runtime="transformers") == []
    assert [e.path for e in validate_workspace(doc)] == ["inference.adapters[0].strength"]
    pinned = workspace_doc("phi-3-mini-128k-instruct", "Standard_NC6s_v3", runtime="vllm", adapters=[adapter("0")])
    assert [e.path for e in validate_workspace(pinned, default_runtime="transformers")] == [
        "inference.adapters[0].strength"]
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {"uid": "u", "operation": "CREATE", "object": doc,
                          "kind": {"group": "kaito.sh", "version": "v1alpha1", "kind": "Workspace"}}}
    assert admission_review(review, default_runtime="transformers")["response"]["allowed"] is True
    assert admission_review(review)["response"]["allowed"] is False
    ws, _ = parse_workspace(doc)
    assert ws is not None
    ctx = BuildContext(ws=ws, settings=WorkspaceSettings(default_runtime="transformers"),
                       preset=CATALOG.model("phi-3-mini-128k-instruct"), sku=CATALOG.sku("Standard_NC6s_v3"),
                       nodes=["n0"], revision="r")
    assert ctx.runtime == "transformers"  # the pods the reconciler builds: the same rule
