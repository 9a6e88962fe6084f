"""A public LoadBalancer Workspace never starts open: the operator makes its token Secret once,
the server's pods read it, a spec change keeps the same token, and the Secret goes with the
Workspace. A user's own Secret is used as it is and never written."""

from __future__ import annotations

import asyncio
import base64

import pytest
import yaml
from test_workspace_examples import wait_true
from workspace_support import EXAMPLES, eventually, kubectl, running_controller

from kaito_core.engine import DEPLOYMENT, SECRET, SERVICE
from kaito_core.testing import Cluster

pytestmark = pytest.mark.e2e


def _seed(name: str, annotations: dict[str, str]) -> str:
    doc = yaml.safe_load((EXAMPLES / "kaito_workspace_phi_3.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["metadata"].setdefault("annotations", {}).update(annotations)
    return yaml.safe_dump(doc)


def _key_ref(deployment: dict) -> dict:  # type: ignore[type-arg]
    env = [e for c in deployment["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])
           if e["name"] == "KAITO_API_KEY"]
    assert len(env) == 1, env
    return env[0]["valueFrom"]["secretKeyRef"]  # type: ignore[no-any-return]


async def test_a_load_balancer_gets_a_token_secret_once(kube_cluster: Cluster, kube_namespace: str) -> None:
    ns = kube_namespace
    async with running_controller(kube_cluster, ns) as (_, client):
        await kubectl(kube_cluster, "apply", "-n", ns, "-f", "-", input=_seed("public", {"kaito.sh/enablelb": "True"}))
        ws = await wait_true(client, ns, "public", "WorkspaceReady")
        assert (await client.get(SERVICE, "public", ns))["spec"]["type"] == "LoadBalancer"
        secret = await client.get(SECRET, "public-api-key", ns)
        assert secret["metadata"]["ownerReferences"][0]["uid"] == ws["metadata"]["uid"]
        token = base64.b64decode(secret["data"]["api-key"]).decode()
        assert len(token) == 64
        assert _key_ref(await client.get(DEPLOYMENT, "public", ns)) == {"name": "public-api-key", "key": "api-key"}

        # Reconciled again (a touch of the Workspace), the token stays: the Secret is not rewritten.
        await kubectl(kube_cluster, "annotate", "-n", ns, "workspace", "public", "example.com/touched=1")

        async def reconciled() -> bool:
            events = await kubectl(kube_cluster, "get", "workspace", "public", "-n", ns, "-o",
                                   "jsonpath={.metadata.annotations}")
            return "touched" in events

        await eventually(reconciled, 30, message="the Workspace is touched")
        await asyncio.sleep(3)  # its reconcile has run
        again = await client.get(SECRET, "public-api-key", ns)
        assert again["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]

        # The user's own Secret: used as it is, never written; no operator Secret for it.
        await kubectl(kube_cluster, "create", "secret", "generic", "team-token", "-n", ns,
                      "--from-literal=api-key=t0ken")
        await kubectl(kube_cluster, "apply", "-n", ns, "-f", "-", input=_seed(
            "own", {"kaito.sh/enablelb": "True", "kaito.sh/api-key-secret": "team-token"}))
        await wait_true(client, ns, "own", "WorkspaceReady")
        assert _key_ref(await client.get(DEPLOYMENT, "own", ns)) == {"name": "team-token", "key": "api-key"}
        assert await client.get_or_none(SECRET, "own-api-key", ns) is None
        mine = await client.get(SECRET, "team-token", ns)
        assert not mine["metadata"].get("ownerReferences")

        await kubectl(kube_cluster, "delete", "-n", ns, "workspace", "public", "--wait=true")

        async def secret_gone() -> bool:
            return await client.get_or_none(SECRET, "public-api-key", ns) is None

        await eventually(secret_gone, 60, message="the operator's Secret goes with its Workspace")
