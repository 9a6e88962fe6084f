"""Workspace controller, pure parts: inference, adapters, tuning manifests and revisions,
checked against what the in-pod runtimes read."""

from __future__ import annotations

import json
from typing import Any

import yaml
from kaito_presets import Catalog, default_catalog
from kaito_presets.runtime.inference.config import InferenceConfig
from kaito_presets.runtime.tuning.config import load_training_config

from kaito_core.api import Workspace
from kaito_core.controllers.workspace import WorkspaceSettings
from kaito_core.controllers.workspace.context import BuildContext
from kaito_core.controllers.workspace.inference import (
    CONFIG_HASH_ANNOTATION,
    default_inference_config_data,
    headless_service,
    inference_service,
    inference_workload,
    is_distributed,
)
from kaito_core.controllers.workspace.revision import controller_revision, prune_revisions, spec_hash
from kaito_core.controllers.workspace.tuning import tuning_config_map, tuning_hash, tuning_job

CATALOG = default_catalog()
SETTINGS = WorkspaceSettings(image_registry="registry.example/kaito-core", image_tag="1.2.3",
                             weights_registry="weights.example/kaito")
RUNTIME_IMAGE = "registry.example/kaito-core/kaito-runtime-vllm:1.2.3"  # phi-3's default runtime is vllm


def workspace(**overrides: Any) -> Workspace:
    obj: dict[str, Any] = {
        "metadata": {"name": "workspace-phi-3-mini", "namespace": "ns", "uid": "uid-1"},
        "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": {"apps": "phi-3"}}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }
    obj.update(overrides)
    return Workspace.model_validate(obj)


def ctx_for(ws: Workspace, nodes: list[str] | None = None, catalog: Catalog = CATALOG) -> BuildContext:
    preset = catalog.find_model(ws.preset.name) if ws.preset else None
    sku = catalog.find_sku(ws.resource.instance_type or "")
    return BuildContext(ws=ws, settings=SETTINGS, preset=preset, sku=sku, nodes=nodes or ["n0"], revision="abc")


def test_single_node_preset_is_a_deployment_with_the_runtime_command() -> None:
    ctx = ctx_for(workspace())
    dep = inference_workload(ctx, config_data={"k": "v"})
    assert dep["kind"] == "Deployment" and dep["spec"]["replicas"] == 1
    assert dep["metadata"]["ownerReferences"][0] == {
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "name": "workspace-phi-3-mini", "uid": "uid-1",
        "controller": True, "blockOwnerDeletion": True}
    assert dep["metadata"]["annotations"]["kaito.sh/revision"] == "abc"
    pod = dep["spec"]["template"]
    assert pod["metadata"]["labels"] == {"kaito.sh/workspace": "workspace-phi-3-mini"}
    assert CONFIG_HASH_ANNOTATION in pod["metadata"]["annotations"]
    spec = pod["spec"]
    (c,) = spec["containers"]
    assert c["image"] == RUNTIME_IMAGE
    assert c["command"][:3] == ["python", "-m", "kaito_presets.runtime.inference"]
    assert c["command"][c["command"].index("--backend") + 1] == "vllm"  # the preset's default runtime
    assert c["command"][c["command"].index("--config") + 1] == "/mnt/config/inference_config.yaml"
    assert c["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": 5000}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    # The default config rides in the pod template; a downwardAPI volume puts it where the server reads it.
    (item,) = volumes[mounts["/mnt/config"]]["downwardAPI"]["items"]
    assert item == {"path": "inference_config.yaml",
                    "fieldRef": {"fieldPath": "metadata.annotations['kaito.sh/inference-config']"}}
    assert "served_model_name: phi-3-mini-4k-instruct" in pod["metadata"]["annotations"]["kaito.sh/inference-config"]
    assert {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in spec["tolerations"]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n0"]}]}]
    # The weights: Kaito's artifact for the preset, pulled by our runtime image into the model volume.
    (puller,) = spec["initContainers"]
    assert puller["name"] == "model-weights-downloader" and puller["image"] == RUNTIME_IMAGE
    assert puller["command"] == ["python", "-m", "kaito_presets.runtime.weights", "pull", "--image",
                                 "weights.example/kaito/kaito-phi-3-mini-4k-instruct:0.2.0",
                                 "--dest", "/workspace/weights"]
    assert volumes[mounts["/workspace/weights"]] == {"name": "model-weights-volume", "emptyDir": {}}
    assert {"name": "model-weights-volume", "mountPath": "/workspace/weights", "readOnly": True} in c["volumeMounts"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["HF_HUB_OFFLINE"] == "1" and "HF_TOKEN" not in env  # the server loads from disk only


def test_runtime_annotation_and_config_change_roll_the_template() -> None:
    ws = workspace(metadata={"name": "w", "namespace": "ns", "uid": "u",
                             "annotations": {"kaito.sh/runtime": "transformers"}})
    dep = inference_workload(ctx_for(ws), config_data={"a": "1"})
    cmd = dep["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[cmd.index("--backend") + 1] == "transformers"
    other = inference_workload(ctx_for(ws), config_data={"a": "2"})
    assert dep["spec"]["template"] != other["spec"]["template"]


def test_several_replicas_spread_one_per_node() -> None:
    ws = workspace(resource={"count": 2, "instanceType": "Standard_NC6s_v3",
                             "labelSelector": {"matchLabels": {"apps": "phi-3"}}})
    dep = inference_workload(ctx_for(ws, ["n0", "n1"]))
    assert dep["kind"] == "Deployment" and dep["spec"]["replicas"] == 2
    anti = dep["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == "kubernetes.io/hostname"
    terms = dep["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert [t["matchFields"][0]["values"] for t in terms] == [["n0"], ["n1"]]


def test_distributed_preset_is_a_statefulset_with_rank_env_and_headless_service() -> None:
    big = CATALOG.model("phi-3-medium-4k-instruct").model_copy(update={"distributed_inference": True})
    catalog = Catalog([big], CATALOG.skus)
    ws = workspace(inference={"preset": {"name": big.name}},
                   resource={"count": 2, "instanceType": "Standard_NC6s_v3",
                             "labelSelector": {"matchLabels": {"apps": "phi-3"}}})
    ctx = ctx_for(ws, ["n0", "n1"], catalog)
    assert is_distributed(ctx)
    sts = inference_workload(ctx)
    assert sts["kind"] == "StatefulSet" and sts["spec"]["replicas"] == 2
    assert sts["spec"]["serviceName"] == "workspace-phi-3-mini-headless"
    c = sts["spec"]["template"]["spec"]["containers"][0]
    assert c["command"][0] == "torchrun" and "--node-rank=$(NODE_RANK)" in c["command"]
    env = {e["name"]: e for e in c["env"]}
    assert env["MASTER_ADDR"]["value"] == "workspace-phi-3-mini-0.workspace-phi-3-mini-headless.ns.svc.cluster.local"
    assert env["MASTER_PORT"]["value"] == "29500" and env["NNODES"]["value"] == "2"
    assert "apps.kubernetes.io/pod-index" in env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    headless = headless_service(ctx)
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["ports"][0]["port"] == 29500
    svc = inference_service(ctx)
    assert svc["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == "workspace-phi-3-mini-0"


def test_service_ports_and_load_balancer_annotation() -> None:
    svc = inference_service(ctx_for(workspace()))
    assert svc["metadata"]["name"] == "workspace-phi-3-mini"
    assert svc["spec"]["type"] == "ClusterIP"
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(80, 5000), (29500, 29500)]
    lb = workspace(metadata={"name": "w", "namespace": "ns", "uid": "u", "annotations": {"kaito.sh/enablelb": "True"}})
    assert inference_service(ctx_for(lb))["spec"]["type"] == "LoadBalancer"


def test_default_inference_config_is_what_the_server_reads() -> None:
    ctx = ctx_for(workspace())
    text = inference_workload(ctx, config_data=default_inference_config_data(ctx))["spec"]["template"][
        "metadata"]["annotations"]["kaito.sh/inference-config"]
    config = InferenceConfig.model_validate(yaml.safe_load(text))
    assert config.model == "/workspace/weights"
    assert config.served_model_name == "phi-3-mini-4k-instruct"
    assert config.port == 5000 and config.adapters_dir == "/mnt/adapter"
    assert config.backend == "vllm" and config.max_model_len == 4096


def test_adapters_are_init_containers_with_strength_env() -> None:
    ws = workspace(inference={"preset": {"name": "phi-3-mini-4k-instruct"}, "adapters": [
        {"source": {"name": "a1", "image": "reg/a1:1"}, "strength": "0.5"},
        {"source": {"name": "a2", "image": "reg/a2:1", "imagePullSecrets": ["s"]}},
    ]})
    spec = inference_workload(ctx_for(ws))["spec"]["template"]["spec"]
    init = spec["initContainers"]
    assert [c["name"] for c in init] == ["model-weights-downloader", "adapter-a1", "adapter-a2"]
    init = init[1:]
    assert init[0]["image"] == RUNTIME_IMAGE
    assert init[0]["command"] == ["python", "-m", "kaito_presets.runtime.oci", "pull", "--image", "reg/a1:1",
                                  "--dest", "/mnt/adapter/a1"]
    assert init[1]["command"][-2:] == ["--docker-config", "/mnt/pull-secret"]
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    assert json.loads(env["KAITO_ADAPTER_STRENGTHS"]) == {"a1": 0.5, "a2": 1.0}
    assert env["a1"] == "0.5"
    assert {"name": "adapter-volume", "mountPath": "/mnt/adapter"} in spec["containers"][0]["volumeMounts"]
    # A different adapter list is a different pod template (the pods roll).
    fewer = workspace(inference={"preset": {"name": "phi-3-mini-4k-instruct"}, "adapters": [
        {"source": {"name": "a1", "image": "reg/a1:1"}, "strength": "0.5"}]})
    assert inference_workload(ctx_for(fewer))["spec"]["template"] != inference_workload(ctx_for(ws))["spec"]["template"]


def test_template_workspace_runs_the_users_pod_on_the_chosen_nodes() -> None:
    template = {"metadata": {"labels": {"app": "mine"}},
                "spec": {"containers": [{"name": "srv", "image": "me/srv:1"}]}}
    ws = workspace(inference={"template": template})
    dep = inference_workload(BuildContext(ws=ws, settings=SETTINGS, sku=CATALOG.sku("Standard_NC6s_v3"),
                                          nodes=["n0"]))
    pod = dep["spec"]["template"]
    assert pod["metadata"]["labels"] == {"app": "mine", "kaito.sh/workspace": "workspace-phi-3-mini"}
    assert pod["spec"]["containers"] == [{"name": "srv", "image": "me/srv:1"}]
    assert "nodeAffinity" in pod["spec"]["affinity"]
    assert any(t["key"] == "sku" for t in pod["spec"]["tolerations"])


def tuning_ws(**tuning: Any) -> Workspace:
    spec = {"preset": {"name": "phi-3-mini-128k-instruct"}, "method": "qlora",
            "input": {"urls": ["https://example.com/data.parquet"]},
            "output": {"image": "reg/out:1", "imagePushSecret": "push"}}
    spec.update(tuning)
    return workspace(inference=None, tuning=spec)


def test_tuning_job_downloads_trains_and_pushes() -> None:
    ctx = ctx_for(tuning_ws())
    job = tuning_job(ctx)
    assert job["kind"] == "Job" and job["metadata"]["name"] == "workspace-phi-3-mini"
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    weights, init = spec["initContainers"]
    assert weights["command"][:4] == ["python", "-m", "kaito_presets.runtime.weights", "pull"]
    assert init["command"][:3] == ["python", "-m", "kaito_presets.runtime.download"]
    assert init["command"][-1] == "https://example.com/data.parquet" and "--max-bytes" in init["command"]
    trainer, pusher = spec["containers"]
    assert trainer["command"] == ["python", "-m", "kaito_presets.runtime.tuning", "--method", "qlora",
                                  "--config", "/mnt/config/training_config.yaml", "--model", "/workspace/weights",
                                  "--data", "/mnt/data", "--output", "/mnt/results"]
    assert trainer["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert "--wait-for" in pusher["command"]
    assert pusher["command"][pusher["command"].index("--wait-for") + 1] == "/mnt/results/fine_tuning_completed.txt"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["push-secret"]["secret"] == {"secretName": "push", "optional": True}
    assert pusher["command"][-1] == "--credentials-optional"
    assert volumes["config-volume"]["configMap"]["name"] == "workspace-phi-3-mini-tuning-config"


def test_tuning_inputs_and_outputs() -> None:
    job = tuning_job(ctx_for(tuning_ws(input={"image": "reg/data:1"}, output={"volumeSource": {"emptyDir": {}}})))
    spec = job["spec"]["template"]["spec"]
    assert spec["initContainers"][1]["image"] == "reg/data:1"
    assert [c["name"] for c in spec["containers"]] == ["tuning"]  # no pusher for a volume output
    job = tuning_job(ctx_for(tuning_ws(input={"volumeSource": {"persistentVolumeClaim": {"claimName": "d"}}})))
    spec = job["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["model-weights-downloader"]  # no data download
    assert {"name": "data-volume", "persistentVolumeClaim": {"claimName": "d"}} in spec["volumes"]


def test_default_tuning_config_is_the_runtime_template(tmp_path: Any) -> None:
    cm = tuning_config_map(ctx_for(tuning_ws()))
    path = tmp_path / "training_config.yaml"
    path.write_text(cm["data"]["training_config.yaml"])
    config = load_training_config(path, "qlora")
    assert config.quantization.load_in_4bit
    cm = tuning_config_map(ctx_for(tuning_ws(method="lora")))
    path.write_text(cm["data"]["training_config.yaml"])
    assert not load_training_config(path, "lora").quantization.enabled


def test_tuning_hash_follows_input_and_output() -> None:
    a = tuning_hash(ctx_for(tuning_ws()))
    assert a == tuning_hash(ctx_for(tuning_ws()))
    assert a != tuning_hash(ctx_for(tuning_ws(input={"urls": ["https://example.com/other.parquet"]})))
    assert a != tuning_hash(ctx_for(tuning_ws(output={"image": "reg/out:2", "imagePushSecret": "push"})))


def test_revisions() -> None:
    ws = workspace()
    digest = spec_hash(ws)
    assert digest == spec_hash(workspace(status={"state": "Ready"}))
    assert digest != spec_hash(workspace(inference={"preset": {"name": "phi-3-mini-4k-instruct"}, "adapters": [
        {"source": {"name": "a", "image": "r/a:1"}}]}))
    first = controller_revision(ws, digest, [])
    assert first["revision"] == 1 and first["data"] == ws.spec_dict()
    assert first["metadata"]["name"] == f"workspace-phi-3-mini-{digest}"
    second = controller_revision(ws, "other", [first])
    assert second["revision"] == 2
    history = [{"metadata": {"name": f"r{i}"}, "revision": i} for i in range(1, 13)]
    assert sorted(prune_revisions(history, 10, "r12")) == ["r1", "r2"]
    assert prune_revisions(history, 10, "r1") == ["r2"]



def test_scaling_labelled_nodes_changes_replicas_not_the_template() -> None:
    """Nodes made for the Workspace are chosen by its labels: 1 -> 2 nodes must not roll the pod
    that serves; a node brought by the user is still pinned by name."""
    def dep_for(count: int, nodes: list[str], labelled: set[str]) -> dict[str, Any]:
        ws = workspace(resource={"count": count, "instanceType": "Standard_NC6s_v3",
                                 "labelSelector": {"matchLabels": {"apps": "phi-3"}}})
        ctx = ctx_for(ws, nodes)
        ctx.labelled_nodes = frozenset(labelled)
        return inference_workload(ctx)

    one, two = dep_for(1, ["n0"], {"n0"}), dep_for(2, ["n0", "n1"], {"n0", "n1"})
    assert (one["spec"]["replicas"], two["spec"]["replicas"]) == (1, 2)
    assert one["spec"]["template"] == two["spec"]["template"]
    terms = two["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [
        {"key": "kaito.sh/workspace", "operator": "In", "values": [two["metadata"]["name"]]},
        {"key": "kaito.sh/workspacenamespace", "operator": "In", "values": [two["metadata"]["namespace"]]}]}]
    mixed = dep_for(2, ["byo-1", "n0"], {"n0"})
    terms = mixed["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[1:] == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["byo-1"]}]}]
    assert "matchExpressions" in terms[0]


def test_a_tuning_job_has_a_deadline_and_its_downloader_one_per_file() -> None:
    settings = WorkspaceSettings()
    job = tuning_job(ctx_for(tuning_ws()))
    assert job["spec"]["activeDeadlineSeconds"] == settings.tuning_active_deadline_seconds == 2 * 24 * 3600
    init = job["spec"]["template"]["spec"]["initContainers"][1]
    deadline = init["command"][init["command"].index("--deadline") + 1]
    assert float(deadline) == settings.download_deadline_seconds == 3600.0
    custom = WorkspaceSettings(tuning_active_deadline_seconds=600, download_deadline_seconds=120.0)
    ctx = BuildContext(ws=tuning_ws(), settings=custom, preset=CATALOG.find_model("phi-3-mini-128k-instruct"),
                       sku=CATALOG.find_sku("Standard_NC6s_v3"), nodes=["gpu-1"])
    job = tuning_job(ctx)
    assert job["spec"]["activeDeadlineSeconds"] == 600
    init = job["spec"]["template"]["spec"]["initContainers"][1]
    assert init["command"][init["command"].index("--deadline") + 1] == "120.0"
    unbounded = WorkspaceSettings(tuning_active_deadline_seconds=None)
    ctx = BuildContext(ws=tuning_ws(), settings=unbounded, preset=CATALOG.find_model("phi-3-mini-128k-instruct"),
                       sku=CATALOG.find_sku("Standard_NC6s_v3"), nodes=["gpu-1"])
    assert "activeDeadlineSeconds" not in tuning_job(ctx)["spec"]
