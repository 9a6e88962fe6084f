"""The ``kaito`` command.

=====================  =========================================================
``kaito up``           local control plane + simulated GPU nodes + the operator
``kaito controller``   the operator against the current kubeconfig / in-cluster
``kaito validate F``   check Workspace manifests offline (same validator, same messages)
``kaito presets [M]``  list model presets and the instance types that fit them
=====================  =========================================================
"""

from __future__ import annotations

import argparse

from kaito_core.cli import controller, offline, up

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kaito", description="kaito-core: large AI models on Kubernetes")
    sub = parser.add_subparsers(dest="command", required=True)
    up.add_parser(sub)
    offline.add_parsers(sub)
    controller.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result
