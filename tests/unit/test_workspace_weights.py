"""Where a Workspace's weights come from, and how the pod gets them: pure manifest builders."""

from __future__ import annotations

from typing import Any

import pytest
from kaito_presets import default_catalog

from kaito_core.api import Workspace, parse_weights_source, validate_workspace
from kaito_core.controllers.workspace.context import BuildContext
from kaito_core.controllers.workspace.inference import inference_workload
from kaito_core.controllers.workspace.settings import WeightsCacheSettings, WorkspaceSettings
from kaito_core.controllers.workspace.status import inference_check
from kaito_core.controllers.workspace.tuning import tuning_job
from kaito_core.controllers.workspace.weights import weights_cache_claim

CATALOG = default_catalog()
SETTINGS = WorkspaceSettings(image_registry="reg.example/kaito-core", image_tag="9.9.9",
                             weights_registry="weights.example/kaito")


def ws(annotations: dict[str, str] | None = None, preset: str = "phi-3-mini-4k-instruct",
       options: dict[str, Any] | None = None, **extra: Any) -> Workspace:
    spec: dict[str, Any] = {"name": preset}
    if options:
        spec.update(options)
    obj: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
        "metadata": {"name": "w", "namespace": "ns", "uid": "u", "annotations": annotations or {}},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}},
        "inference": {"preset": spec},
    }
    obj.update(extra)
    return Workspace.model_validate(obj)


def pod_spec(workspace: Workspace, settings: WorkspaceSettings = SETTINGS) -> dict[str, Any]:
    ctx = BuildContext(ws=workspace, settings=settings, preset=CATALOG.find_model(workspace.preset.name)
                       if workspace.preset else None, sku=CATALOG.find_sku("Standard_NC24ads_A100_v4"), nodes=["n0"])
    return inference_workload(ctx, config_data={})["spec"]["template"]["spec"]


def puller(spec: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in spec["initContainers"] if c["name"] == "model-weights-downloader")


def test_the_transformers_runtime_image_serves_a_transformers_workspace() -> None:
    spec = pod_spec(ws({"kaito.sh/runtime": "transformers"}))
    assert spec["containers"][0]["image"] == "reg.example/kaito-core/kaito-runtime:9.9.9"
    assert puller(spec)["image"] == "reg.example/kaito-core/kaito-runtime:9.9.9"
    custom = WorkspaceSettings(runtime_images={"transformers": "mine.example/rt:1"})
    assert pod_spec(ws({"kaito.sh/runtime": "transformers"}), custom)["containers"][0]["image"] == "mine.example/rt:1"


def test_a_gated_preset_downloads_from_hugging_face_at_its_pinned_revision_with_the_token() -> None:
    spec = pod_spec(ws(preset="llama-3.1-8b-instruct", options={"presetOptions": {"modelAccessSecret": "hf"}}))
    pull = puller(spec)
    preset = CATALOG.model("llama-3.1-8b-instruct")
    assert pull["command"] == ["python", "-m", "kaito_presets.runtime.weights", "pull", "--hf-repo",
                               "meta-llama/Llama-3.1-8B-Instruct", "--revision", preset.revision,
                               "--dest", "/workspace/weights"]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN"}}} in pull["env"]
    # The token stays in the init container; the server never needs it.
    assert all(e["name"] != "HF_TOKEN" for e in spec["containers"][0]["env"])


def test_the_annotation_overrides_the_source() -> None:
    spec = pod_spec(ws({"kaito.sh/model-weights": "hf://org/tiny@" + "a" * 40}))
    assert puller(spec)["command"][4:8] == ["--hf-repo", "org/tiny", "--revision", "a" * 40]
    spec = pod_spec(ws({"kaito.sh/model-weights": "oci://my.registry.io/weights/phi:1"}))
    assert puller(spec)["command"][4:6] == ["--image", "my.registry.io/weights/phi:1"]
    spec = pod_spec(ws({"kaito.sh/model-weights": "pvc://models/phi-3/mini"}))
    assert all(c["name"] != "model-weights-downloader" for c in spec.get("initContainers", []))
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["model-weights-volume"] == {
        "name": "model-weights-volume", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}}
    assert {"name": "model-weights-volume", "mountPath": "/workspace/weights", "readOnly": True,
            "subPath": "phi-3/mini"} in spec["containers"][0]["volumeMounts"]


def test_a_private_preset_pulls_its_weights_artifact_with_the_pull_secret() -> None:
    spec = pod_spec(ws(options={"accessMode": "private", "presetOptions": {
        "image": "private.example/phi:2", "imagePullSecrets": ["regcred", "other"]}}))
    pull = puller(spec)
    assert pull["command"][4:6] == ["--image", "private.example/phi:2"]
    assert pull["command"][-2:] == ["--docker-config", "/mnt/weights-pull-secret/config.json"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["weights-pull-secret"]["secret"]["secretName"] == "regcred"


def test_registry_mirrors_reach_every_pull_and_push_tool() -> None:
    settings = WorkspaceSettings(registry_mirrors={"ACR_REPO_HERE.azurecr.io": "127.0.0.1:5000"},
                                 insecure_registries=["10.0.0.5:5000", "reg.local"])
    workspace = ws(inference={"preset": {"name": "phi-3-mini-128k-instruct"}, "adapters": [
        {"source": {"name": "a", "image": "ACR_REPO_HERE.azurecr.io/a:1"}}]})
    spec = pod_spec(workspace, settings)
    for init in spec["initContainers"]:
        assert {"name": "KAITO_REGISTRY_MIRRORS", "value": '{"ACR_REPO_HERE.azurecr.io": "127.0.0.1:5000"}'} \
            in init["env"], init["name"]
        assert {"name": "KAITO_INSECURE_REGISTRIES", "value": "10.0.0.5:5000,reg.local"} in init["env"]


def test_a_weights_cache_is_a_claim_per_workspace() -> None:
    settings = WorkspaceSettings(weights_cache=WeightsCacheSettings(storage_class="fast", size="20Gi"))
    workspace = ws()
    spec = pod_spec(workspace, settings)
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["model-weights-volume"]["persistentVolumeClaim"] == {"claimName": "w-weights"}
    ctx = BuildContext(ws=workspace, settings=settings, preset=CATALOG.model("phi-3-mini-4k-instruct"))
    claim = weights_cache_claim(ctx)
    assert claim is not None and claim["metadata"]["name"] == "w-weights"
    assert claim["metadata"]["ownerReferences"][0]["uid"] == "u"
    assert claim["spec"] == {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "20Gi"}},
                             "storageClassName": "fast"}
    # No claim for weights that are already on the user's own claim, nor without a cache.
    assert weights_cache_claim(BuildContext(ws=ws({"kaito.sh/model-weights": "pvc://mine"}), settings=settings,
                                            preset=ctx.preset)) is None
    assert weights_cache_claim(BuildContext(ws=workspace, settings=SETTINGS, preset=ctx.preset)) is None


def test_the_tuning_job_trains_on_the_pulled_weights_offline() -> None:
    workspace = ws(inference=None, tuning={"preset": {"name": "phi-3-mini-128k-instruct"}, "method": "qlora",
                                           "input": {"urls": ["https://example.com/d.parquet"]},
                                           "output": {"volumeSource": {"emptyDir": {}}}})
    ctx = BuildContext(ws=workspace, settings=SETTINGS, preset=CATALOG.model("phi-3-mini-128k-instruct"),
                       sku=CATALOG.find_sku("Standard_NC24ads_A100_v4"), nodes=["n0"])
    spec = tuning_job(ctx)["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["model-weights-downloader", "data-downloader"]
    trainer = spec["containers"][0]
    assert {"name": "model-weights-volume", "mountPath": "/workspace/weights", "readOnly": True} \
        in trainer["volumeMounts"]
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in trainer["env"]


@pytest.mark.parametrize(("value", "complaint"), [
    ("phi-3", "has no scheme"),
    ("oci://phi-3:1", "not an artifact reference"),
    ("oci://nohost/repo:1", "names no registry host"),
    ("hf://org/name", "pins no revision"),
    ("hf://not a repo@abc", "not a Hugging Face repository id"),
    ("pvc://Bad_Name", "not a PersistentVolumeClaim name"),
    ("pvc://claim/../etc", "not a plain relative folder"),
    ("s3://bucket/x", "unknown scheme"),
])
def test_a_bad_source_is_refused_at_admission_naming_the_annotation(value: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_weights_source(value)
    errors = validate_workspace(ws({"kaito.sh/model-weights": value}).to_dict())
    assert [e.path for e in errors] == ["metadata.annotations[kaito.sh/model-weights]"]
    assert complaint in errors[0].message


def test_a_template_workspace_cannot_name_a_weights_source() -> None:
    obj = ws({"kaito.sh/model-weights": "pvc://x"}).to_dict()
    obj["inference"] = {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}
    errors = validate_workspace(obj)
    assert any(e.path == "metadata.annotations[kaito.sh/model-weights]" and "no preset" in e.message
               for e in errors)


def test_the_pullers_termination_message_becomes_the_condition_message() -> None:
    said = ("weights artifact r/kaito-phi:0.2.0 not found in the registry (manifest unknown): publish it or set "
            "the Workspace's weights source")
    pod = {"metadata": {"name": "w-1"}, "status": {"initContainerStatuses": [{
        "name": "model-weights-downloader",
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed container"}},
        "lastState": {"terminated": {"reason": "Error", "exitCode": 1, "message": said}}}]}}
    workload = {"kind": "Deployment", "metadata": {"generation": 1}, "spec": {"replicas": 1},
                "status": {"observedGeneration": 1}}
    check = inference_check(workload, [pod])
    assert check.reason == "InferenceFailed" and said in check.message
    assert "model-weights-downloader" in check.message
    # Just failed, before the back-off: the same message.
    pod["status"]["initContainerStatuses"][0]["state"] = {"terminated": {"reason": "Error", "exitCode": 1,
                                                                         "message": said}}
    check = inference_check(workload, [pod])
    assert check.reason == "InferenceFailed" and said in check.message


def test_url_mirrors_map_the_seed_dataset_host_for_the_downloader() -> None:
    from kaito_presets.runtime.download import load_url_mirrors, mirrored

    settings = WorkspaceSettings(url_mirrors={"huggingface.co": "http://127.0.0.1:8080/base"})
    workspace = ws(inference=None, tuning={"preset": {"name": "phi-3-mini-128k-instruct"}, "method": "qlora",
                                           "input": {"urls": ["https://huggingface.co/d/x.parquet?download=true"]},
                                           "output": {"volumeSource": {"emptyDir": {}}}})
    ctx = BuildContext(ws=workspace, settings=settings, preset=CATALOG.model("phi-3-mini-128k-instruct"),
                       sku=CATALOG.find_sku("Standard_NC24ads_A100_v4"), nodes=["n0"])
    downloader = tuning_job(ctx)["spec"]["template"]["spec"]["initContainers"][1]
    env = {e["name"]: e["value"] for e in downloader["env"]}
    mirrors = load_url_mirrors(env)
    target, allowed = mirrored("https://huggingface.co/d/x.parquet?download=true", mirrors)
    assert target == "http://127.0.0.1:8080/base/d/x.parquet?download=true"
    assert allowed == ["127.0.0.1"]  # the operator's mirror may be private; nothing else is allowed
    assert mirrored("https://example.com/y.parquet", mirrors) == ("https://example.com/y.parquet", [])
