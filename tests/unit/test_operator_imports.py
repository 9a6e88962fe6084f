"""The operator process carries only what it uses: not kubernetes_asyncio's generated API and models
(70 MiB of resident memory), not the local control plane toolkit of ``kaito up``. And code that
does want the generated client in the same process still gets all of it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

KUBECONFIG = {
    "apiVersion": "v1", "kind": "Config", "current-context": "c",
    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}}],
    "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    "users": [{"name": "u", "user": {"token": "t0k3n"}}],
}

# What `kaito controller` does before it first talks to the API server: parse its flags, load the
# kubeconfig, build the manager, load the provisioner plugin, wire both controllers.
WIRE_THE_OPERATOR = """
import asyncio, json, resource, sys
from kaito_core.cli import build_parser
from kaito_core.cli.controller import settings_from_args
from kaito_core.controllers.machine import add_machine_controller
from kaito_core.controllers.workspace import add_workspace_controller
from kaito_core.engine import Manager
from kaito_core.manager import Operator
from kaito_core.provisioning import load_provisioner

async def main():
    args = build_parser().parse_args(["controller", "--kubeconfig", sys.argv[1], "--no-webhook",
                                      "--provisioner=simulated"])
    settings = settings_from_args(args)
    manager = await Manager.from_kubeconfig(args.kubeconfig, settings=settings.manager)
    auth = await manager.client.transport._api.configuration.auth_settings()
    plugin = load_provisioner(settings.provisioner, settings.provisioner_settings)
    add_machine_controller(manager, plugin, settings.machine)
    add_workspace_controller(manager, settings.workspace)
    await manager.client.close()
    return auth

auth = asyncio.run(main())
print(json.dumps({"modules": sorted(sys.modules), "auth": auth,
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _run(code: str, *args: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_operator_does_not_import_the_generated_client(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps(KUBECONFIG))
    result = _run(WIRE_THE_OPERATOR, str(kubeconfig))
    modules = list(result["modules"])  # type: ignore[call-overload]
    generated = [m for m in modules
                 if m.startswith(("kubernetes_asyncio.client.models.", "kubernetes_asyncio.client.api."))]
    assert generated == [], f"{len(generated)} generated modules imported, e.g. {generated[:5]}"
    assert not [m for m in modules if m.startswith(("kaito_core.testing", "kaito_core.cli.realnodes"))]
    # Without its webhook (--no-webhook) the operator loads no certificate code (cryptography: 8 MiB).
    assert not [m for m in modules if m.startswith(("cryptography", "kaito_core.manager.webhook_certs"))]
    # ... while the kubeconfig really was loaded by kubernetes_asyncio's own loader.
    assert "kubernetes_asyncio.config.kube_config" in modules
    assert result["auth"] == {"BearerToken": {"type": "api_key", "in": "header", "key": "authorization",
                                              "value": "Bearer t0k3n"}}


def test_the_generated_client_is_whole_when_asked_for(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps(KUBECONFIG))
    result = _run("""
        import asyncio, json, sys
        from kaito_core.engine import ApiClientTransport
        transport = asyncio.run(ApiClientTransport.from_kubeconfig(sys.argv[1]))
        light = len([m for m in sys.modules if m.startswith("kubernetes_asyncio.client.models.")])
        import kubernetes_asyncio
        from kubernetes_asyncio import client, watch
        from kubernetes_asyncio.client import V1ObjectMeta
        from kubernetes_asyncio.client.models import V1Pod as Pod
        pod = transport._api.sanitize_for_serialization(Pod(metadata=V1ObjectMeta(name="p")))
        print(json.dumps({"light": light, "api": client.CoreV1Api.__name__, "watch": watch.Watch.__name__,
                          "same_api_client": type(transport._api) is client.ApiClient,
                          "models": client.models.V1Pod is Pod, "pod": pod,
                          "version": kubernetes_asyncio.__version__}))
        asyncio.run(transport.close())
    """, str(kubeconfig))
    assert result["light"] == 0
    assert result["api"] == "CoreV1Api" and result["watch"] == "Watch" and result["models"] is True
    assert result["same_api_client"] is True  # one class: the light load and the whole one are the same modules
    assert result["pod"] == {"metadata": {"name": "p"}}
    assert isinstance(result["version"], str) and result["version"]
