"""Issue 19: an adapter strength vLLM cannot apply holds the Workspace at reconcile (WorkspaceReady False,
ValidationFailed, naming the field), on the full control plane; choosing the transformers runtime, which
blends adapters by strength, lets it go on."""

from __future__ import annotations

import pytest
import yaml
from workspace_support import EXAMPLES, condition, eventually, kubectl, running_controller

from kaito_core.controllers.workspace import WORKSPACE
from kaito_core.engine import DEPLOYMENT
from kaito_core.testing import Cluster

pytestmark = pytest.mark.e2e


async def test_a_strength_under_vllm_is_refused_and_transformers_accepts_it(kube_cluster: Cluster,
                                                                            kube_namespace: str) -> None:
    ns, name = kube_namespace, "workspace-phi-3-mini-adapter"
    doc = yaml.safe_load((EXAMPLES / "kaito_workspace_phi_3_with_adapters.yaml").read_text())
    doc["inference"]["adapters"][0]["strength"] = "0.5"
    async with running_controller(kube_cluster, ns) as (_, client):
        await kubectl(kube_cluster, "apply", "-n", ns, "-f", "-", input=yaml.safe_dump(doc))

        async def refused() -> bool:
            cond = condition(await client.get_or_none(WORKSPACE, name, ns), "WorkspaceReady")
            return cond is not None and cond.get("reason") == "ValidationFailed"

        await eventually(refused, 90, message="WorkspaceReady False, ValidationFailed")
        cond = condition(await client.get(WORKSPACE, name, ns), "WorkspaceReady")
        assert cond is not None and cond["status"] == "False"
        assert "inference.adapters[0].strength: strength '0.5' cannot be applied under vLLM" in cond["message"]
        assert await client.get_or_none(DEPLOYMENT, name, ns) is None  # nothing started

        await kubectl(kube_cluster, "annotate", "-n", ns, "workspace", name, "kaito.sh/runtime=transformers")

        async def deployed() -> bool:
            return await client.get_or_none(DEPLOYMENT, name, ns) is not None

        await eventually(deployed, 90, message="the Deployment once the runtime is transformers")
        cond = condition(await client.get(WORKSPACE, name, ns), "WorkspaceReady")
        assert cond is None or cond.get("reason") != "ValidationFailed"
