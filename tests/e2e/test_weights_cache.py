"""Where the weights come from, through the real reconciler and apiserver: the override annotation
is admitted or refused, and an operator with a weights cache gives each Workspace its own claim."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from workspace_support import EXAMPLES, eventually, is_true, kubectl, running_controller

from kaito_core.controllers.workspace import WORKSPACE, WorkspaceSettings
from kaito_core.controllers.workspace.settings import WeightsCacheSettings
from kaito_core.engine import DEPLOYMENT, PERSISTENTVOLUMECLAIM
from kaito_core.testing import Cluster

pytestmark = pytest.mark.e2e


async def test_a_weights_cache_claim_per_workspace_and_the_override(kube_cluster: Cluster, kube_namespace: str,
                                                                    tmp_path: Path) -> None:
    ns = kube_namespace
    name = "workspace-phi-3-mini"
    settings = WorkspaceSettings(weights_cache=WeightsCacheSettings(size="20Gi"))
    obj = yaml.safe_load((EXAMPLES / "kaito_workspace_phi_3.yaml").read_text())
    obj["metadata"]["annotations"] = {"kaito.sh/model-weights": "oci://my.registry.io/weights/phi-3:7"}
    manifest = tmp_path / "ws.yaml"
    manifest.write_text(yaml.safe_dump(obj))
    # No storage provisioner runs here: a volume made for the claim stands in for one.
    volume = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"pv-{ns}"},
              "spec": {"capacity": {"storage": "20Gi"}, "accessModes": ["ReadWriteMany"],
                       "hostPath": {"path": "/tmp/kaito-weights"}, "storageClassName": "",
                       "claimRef": {"namespace": ns, "name": f"{name}-weights"}}}
    async with running_controller(kube_cluster, ns, settings=settings) as (_, client):
        await kubectl(kube_cluster, "apply", "-f", "-", input=yaml.safe_dump(volume))
        await kubectl(kube_cluster, "apply", "-n", ns, "-f", str(manifest))

        async def ready() -> bool:
            return is_true(await client.get_or_none(WORKSPACE, name, ns), "WorkspaceReady")

        await eventually(ready, 90, message=f"{name} WorkspaceReady")
        claim = await client.get(PERSISTENTVOLUMECLAIM, f"{name}-weights", ns)
        assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
        assert claim["metadata"]["ownerReferences"][0]["kind"] == "Workspace"
        spec = (await client.get(DEPLOYMENT, name, ns))["spec"]["template"]["spec"]
        puller = spec["initContainers"][0]
        assert puller["command"][4:6] == ["--image", "my.registry.io/weights/phi-3:7"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["model-weights-volume"]["persistentVolumeClaim"]["claimName"] == f"{name}-weights"

        # A source that does not parse is refused with the annotation named (the validator's message).
        obj["metadata"]["name"] = "bad-weights"
        obj["metadata"]["annotations"] = {"kaito.sh/model-weights": "hf://org/name"}
        manifest.write_text(yaml.safe_dump(obj))
        await kubectl(kube_cluster, "apply", "-n", ns, "-f", str(manifest))

        async def refused() -> bool:
            ws = await client.get_or_none(WORKSPACE, "bad-weights", ns)
            conds = {c["type"]: c for c in ((ws or {}).get("status") or {}).get("conditions", [])}
            message = conds.get("WorkspaceReady", {}).get("message", "")
            return "kaito.sh/model-weights" in message and "pins no revision" in message

        await eventually(refused, 60, message="the bad weights source is reported on the Workspace")
    await kubectl(kube_cluster, "delete", "pv", f"pv-{ns}", "--wait=false")
