"""``kaito up``: the embedded default.

A local control plane built from source (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler) with kwok simulating GPU nodes, kept
running until Ctrl-C, when everything stops.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType

__all__ = ["add_parser"]


def _default_state_dir() -> Path:
    return Path.cwd() / ".kaito"


def _cmd_up(args: argparse.Namespace) -> int:
    from kaito_core.testing import ControlPlane, ControlPlaneMode, ToolchainMissingError, gpu_node_manifest

    workdir: Path = args.state_dir
    # A fresh cluster each time: stale etcd data from a killed run is worth nothing.
    shutil.rmtree(workdir, ignore_errors=True)
    plane = ControlPlane(mode=ControlPlaneMode.FULL, workdir=workdir)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # Installed explicitly: a shell may start us with SIGINT ignored (background jobs).
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    started = time.monotonic()
    try:
        print("kaito up: starting the local control plane (the first run builds it from source)...", flush=True)
        plane.start()
        for index in range(args.gpu_nodes):
            manifest = gpu_node_manifest(f"gpu-node-{index}", instance_type=args.instance_type, gpus=args.gpus)
            plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        plane.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=60s")
        assert plane.binaries is not None
        kubectl = plane.binaries / "kubectl"
        print(
            f"\nkaito up: ready in {time.monotonic() - started:.0f}s; {args.gpu_nodes} simulated GPU node(s) "
            f"({args.instance_type}, {args.gpus} x nvidia.com/gpu each).\n"
            f"  export KUBECONFIG={plane.kubeconfig}\n"
            f"  alias kubectl={kubectl}   # the kubectl built with the control plane\n"
            "  kubectl get nodes -L node.kubernetes.io/instance-type\n"
            "Press Ctrl-C to stop everything.",
            flush=True,
        )
        print(plane.kubectl("get", "nodes", "-L", "node.kubernetes.io/instance-type").stdout, flush=True)
        while True:
            time.sleep(1)
            for name in plane.pids():
                plane.process(name).check_alive()
    except KeyboardInterrupt:
        print("\nkaito up: stopping...", flush=True)
        return 0
    except ToolchainMissingError as exc:
        print(f"kaito up: {exc}", file=sys.stderr)
        return 3
    finally:
        plane.stop()
        print("kaito up: stopped; nothing left running.", flush=True)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = sub.add_parser("up", help="run the embedded default: local control plane + simulated GPU nodes")
    up.add_argument("--state-dir", type=Path, default=_default_state_dir(),
                    help="where the kubeconfig, certificates, etcd data and logs go (default: ./.kaito)")
    up.add_argument("--gpu-nodes", type=int, default=2, help="simulated GPU nodes to create (default 2)")
    up.add_argument("--instance-type", default="Standard_NC6s_v3", help="their instance type")
    up.add_argument("--gpus", type=int, default=1, help="nvidia.com/gpu per node")
    up.set_defaults(func=_cmd_up)
