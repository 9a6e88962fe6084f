"""``kaito up``: the embedded default, the whole product on one machine.

A local control plane built from source (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler) with kwok simulating GPU nodes and
their pods, the CRDs, and the operator running in this process with the
``simulated`` provisioner and the admission webhook (``--real-nodes``: real
kubelet nodes that run the pods, see :mod:`kaito_core.cli.realnodes`).
``--apply`` applies manifests once it is up; a status table follows the Workspaces until Ctrl-C,
when everything stops and nothing is left running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from kaito_core.api.crd import all_crds
from kaito_core.engine import configure_logging
from kaito_core.engine.settings import ManagerSettings
from kaito_core.manager import Operator, OperatorSettings, WebhookSettings

if TYPE_CHECKING:
    # Imported where used: `kaito controller` shares this CLI, and its process must not carry the
    # local control plane's toolkit (which brings the whole generated Kubernetes client).
    from kaito_core.cli.realnodes import RealNodeStack
    from kaito_core.testing import ControlPlane

__all__ = ["add_parser"]

NAMESPACE = "kaito-system"
_WALKTHROUGH = (
    "  # once WORKSPACEREADY is True:\n"
    '  export CLUSTERIP=$(kubectl get svc workspace-phi-3-mini -o jsonpath="{.spec.clusterIPs[0]}")\n'
    "  kubectl run -it --rm --restart=Never curl --image=curlimages/curl -- curl -X POST http://$CLUSTERIP/chat "
    '-H "accept: application/json" -H "Content-Type: application/json" -d "{\\"prompt\\":\\"YOUR QUESTION HERE\\"}"\n'
)


def _default_state_dir() -> Path:
    return Path.cwd() / ".kaito"


def _prepare_cluster(plane: ControlPlane, args: argparse.Namespace) -> None:
    """CRDs, the operator's namespace, and any pre-made GPU nodes."""
    from kaito_core.testing import gpu_node_manifest

    for crd in all_crds():
        plane.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(crd))
    plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    plane.kubectl("create", "namespace", NAMESPACE)
    for index in range(args.gpu_nodes):
        manifest = gpu_node_manifest(f"gpu-node-{index}", instance_type=args.instance_type, gpus=args.gpus)
        plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    if args.gpu_nodes:
        plane.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=60s")


def _operator_settings(args: argparse.Namespace, stack: RealNodeStack | None) -> OperatorSettings:
    extra: dict[str, Any] = {}
    if stack is not None:
        assert stack.workspace_settings is not None
        extra["workspace"] = stack.workspace_settings
        extra["machine"] = stack.machine_settings
    return OperatorSettings(
        namespace=NAMESPACE,
        provisioner="realnode" if stack is not None else args.provisioner,
        **extra,
        manager=ManagerSettings(http_port=args.http_port, bind_address="127.0.0.1"),
        # The apiserver dials the webhook on loopback; the operator registers it itself.
        webhook=WebhookSettings(port=0, bind_address="127.0.0.1", host="127.0.0.1", register_configuration=True),
        log_format="console",
        log_level=args.log_level,
    )


async def _apply_when_ready(plane: ControlPlane, operator: Operator, files: list[str]) -> None:
    for _ in range(600):  # the webhook must be registered before Workspaces arrive
        if operator.webhook is not None and operator.manager.cache is not None:
            break
        await asyncio.sleep(0.1)
    for path in files:
        proc = await asyncio.to_thread(plane.kubectl, "apply", "-f", path, check=False)
        print((proc.stdout or proc.stderr).strip(), flush=True)


async def _follow(plane: ControlPlane, interval: float) -> None:
    """Print `kubectl get workspace,machines` whenever it changes: the live status."""
    last = ""

    def without_age(text: str) -> str:  # AGE changes every tick; only a real change reprints
        return "\n".join(line.rsplit(None, 1)[0] if line.strip() else line for line in text.splitlines())

    while True:
        proc = await asyncio.to_thread(
            plane.kubectl, "get", "workspaces.kaito.sh", "-A", "-o", "wide", check=False)
        machines = await asyncio.to_thread(plane.kubectl, "get", "machines.kaito.sh", check=False)
        text = proc.stdout.strip() or "no workspaces yet"
        text += "\n\n" + (machines.stdout.strip() or "no machines yet")
        if without_age(text) != last:
            print(f"\n--- {time.strftime('%H:%M:%S')} ---\n{text}", flush=True)
            last = without_age(text)
        await asyncio.sleep(interval)


async def _operate(plane: ControlPlane, args: argparse.Namespace, stack: RealNodeStack | None) -> int:
    settings = _operator_settings(args, stack)
    provisioner = stack.provisioner if stack is not None else None
    operator = await Operator.create(settings, kubeconfig=plane.kubeconfig, provisioner=provisioner)
    run = asyncio.create_task(operator.run(), name="operator")
    helpers = [asyncio.create_task(_apply_when_ready(plane, operator, args.apply or []))]
    if not args.quiet:
        helpers.append(asyncio.create_task(_follow(plane, args.status_interval)))
    try:
        await run  # returns when the manager stops (Ctrl-C / SIGTERM)
    finally:
        for task in helpers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    from kaito_core.cli.realnodes import SYSTEM_NODE, RealNodeStack
    from kaito_core.testing import ControlPlane, ControlPlaneMode, ToolchainMissingError

    workdir: Path = args.state_dir
    # A fresh cluster each time: stale etcd data from a killed run is worth nothing.
    shutil.rmtree(workdir, ignore_errors=True)
    plane = ControlPlane(mode=ControlPlaneMode.FULL, workdir=workdir)
    stack: RealNodeStack | None = None

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # Installed explicitly: a shell may start us with SIGINT ignored (background jobs).
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    configure_logging(args.log_level, json=False)
    started = time.monotonic()
    try:
        print("kaito up: starting the local control plane (the first run builds it from source)...", flush=True)
        plane.start()
        _prepare_cluster(plane, args)
        assert plane.binaries is not None
        nodes = "kwok GPU nodes"
        provisioner = args.provisioner
        if args.real_nodes:
            print("kaito up: --real-nodes: real kubelet nodes, the local registry, stand-in weights...", flush=True)
            stack = RealNodeStack(plane, workdir, [Path(p) for p in args.apply or []])
            stack.start()
            nodes, provisioner = f"real nodes ({SYSTEM_NODE} now, a GPU node per Machine)", "realnode"
        print(
            f"\nkaito up: control plane ready in {time.monotonic() - started:.0f}s "
            f"(Kubernetes, {nodes}, CRDs); operator starting with the {provisioner!r} provisioner.\n"
            f"  export KUBECONFIG={plane.kubeconfig}\n"
            f"  alias kubectl={plane.binaries / 'kubectl'}   # the kubectl built with the control plane\n"
            "  kubectl apply -f examples/kaito_workspace_phi_3.yaml\n"
            "  kubectl get workspace\n"
            + (_WALKTHROUGH if stack is not None else "")
            + "Press Ctrl-C to stop everything.",
            flush=True,
        )
        for sig, handler in previous.items():  # the operator's manager handles signals from here
            signal.signal(sig, handler if sig != signal.SIGINT else signal.default_int_handler)
        return asyncio.run(_operate(plane, args, stack))
    except KeyboardInterrupt:
        return 0
    except ToolchainMissingError as exc:
        print(f"kaito up: {exc}", file=sys.stderr)
        return 3
    finally:
        print("\nkaito up: stopping...", flush=True)
        if stack is not None:
            stack.stop()
        plane.stop()
        print("kaito up: stopped; nothing left running.", flush=True)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = sub.add_parser("up", help="run everything locally: control plane, kwok GPU nodes, the operator")
    up.add_argument("--apply", nargs="+", metavar="FILE", help="manifests to apply once the operator is up")
    up.add_argument("--state-dir", type=Path, default=_default_state_dir(),
                    help="where the kubeconfig, certificates, etcd data and logs go (default: ./.kaito)")
    up.add_argument("--provisioner", default="simulated", help="provisioner plugin (default: simulated)")
    up.add_argument("--real-nodes", action="store_true",
                    help="real kubelet + containerd nodes that run the pods (root; images built from this tree, "
                         "stand-in weights: answers are noise)")
    up.add_argument("--gpu-nodes", type=int, default=0,
                    help="GPU nodes to create up front (default 0: the provisioner makes them on demand)")
    up.add_argument("--instance-type", default="Standard_NC6s_v3", help="instance type of those nodes")
    up.add_argument("--gpus", type=int, default=1, help="nvidia.com/gpu per pre-made node")
    up.add_argument("--http-port", type=int, default=0, help="port of /healthz /readyz /metrics (0: any free)")
    up.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    up.add_argument("--status-interval", type=float, default=2.0, help="seconds between status checks")
    up.add_argument("--quiet", action="store_true", help="no status table")
    up.set_defaults(func=_cmd_up)
