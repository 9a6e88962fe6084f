"""A ConfigMap named in inference.config / tuning.config whose contents the runtime cannot use holds the
Workspace with a condition naming the key, on the full control plane; fixing it lets the Workspace go on."""

from __future__ import annotations

import pytest
import yaml
from workspace_support import EXAMPLES, condition, eventually, is_true, kubectl, running_controller

from kaito_core.controllers.workspace import WORKSPACE
from kaito_core.engine import DEPLOYMENT, JOB
from kaito_core.testing import Cluster

pytestmark = pytest.mark.e2e


def config_map(max_model_len: str) -> str:
    inner = yaml.safe_dump({"vllm": {"max-model-len": max_model_len}})
    return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "my-inference"},
                           "data": {"inference_config.yaml": inner}})


async def test_a_bad_inference_config_is_named_in_the_condition(kube_cluster: Cluster, kube_namespace: str) -> None:
    ns, name = kube_namespace, "workspace-phi-3-mini"
    doc = yaml.safe_load((EXAMPLES / "kaito_workspace_phi_3.yaml").read_text())
    doc["inference"]["config"] = "my-inference"
    async with running_controller(kube_cluster, ns) as (_, client):
        await kubectl(kube_cluster, "apply", "-n", ns, "-f", "-", input=config_map("131072"))
        await kubectl(kube_cluster, "apply", "-n", ns, "-f", "-", input=yaml.safe_dump(doc))

        async def refused() -> bool:
            cond = condition(await client.get_or_none(WORKSPACE, name, ns), "InferenceReady")
            return cond is not None and cond["status"] == "False" and "my-inference" in cond.get("message", "")

        await eventually(refused, 90, message="InferenceReady False naming the ConfigMap")
        cond = condition(await client.get(WORKSPACE, name, ns), "InferenceReady")
        assert cond is not None
        assert ("inference.config[inference_config.yaml].vllm.max-model-len: 131072 exceeds "
                "phi-3-mini-4k-instruct's context window of 4096") in cond["message"]
        assert await client.get_or_none(DEPLOYMENT, name, ns) is None  # nothing started from it

        # Fixed, the Workspace goes on by itself (the controller watches the ConfigMaps Workspaces name).
        await kubectl(kube_cluster, "apply", "-n", ns, "-f", "-", input=config_map("4096"))

        async def ready() -> bool:
            return is_true(await client.get_or_none(WORKSPACE, name, ns), "WorkspaceReady")

        await eventually(ready, 90, message="WorkspaceReady after the fix")


async def test_a_bad_tuning_config_holds_the_job_and_names_the_key(kube_cluster: Cluster, kube_namespace: str) -> None:
    ns, name = kube_namespace, "workspace-tuning-phi-3"
    doc = yaml.safe_load((EXAMPLES / "kaito_workspace_tuning_phi_3.yaml").read_text())  # method qlora
    doc["tuning"]["config"] = "my-tuning"
    inner = yaml.safe_dump({"training_config": {"QuantizationConfig": {"load_in_4bit": False}}})
    cm = yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "my-tuning"},
                         "data": {"training_config.yaml": inner}})
    async with running_controller(kube_cluster, ns) as (_, client):
        await kubectl(kube_cluster, "apply", "-n", ns, "-f", "-", input=cm)
        await kubectl(kube_cluster, "apply", "-n", ns, "-f", "-", input=yaml.safe_dump(doc))

        async def refused() -> bool:
            cond = condition(await client.get_or_none(WORKSPACE, name, ns), "JobStarted")
            return cond is not None and cond["status"] == "False" and "my-tuning" in cond.get("message", "")

        await eventually(refused, 90, message="JobStarted False naming the ConfigMap")
        cond = condition(await client.get(WORKSPACE, name, ns), "JobStarted")
        assert cond is not None
        assert ("tuning.config[training_config.yaml].training_config.QuantizationConfig: method qlora needs a "
                "quantized base model") in cond["message"]
        assert await client.get_or_none(JOB, name, ns) is None
