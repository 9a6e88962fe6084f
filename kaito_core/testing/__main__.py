"""``python -m kaito_core.testing [names...]``: build the control-plane binaries (cached); ``node`` builds
what a real node runs, ``karpenter`` Karpenter's kwok cloud provider."""

from __future__ import annotations

import sys

from kaito_core.testing.build import (
    ALL_BINARIES,
    OPTIONAL_BINARIES,
    ToolchainMissingError,
    ensure_binaries,
    ensure_karpenter,
)
from kaito_core.testing.build_node import ensure_node_binaries, ensure_pause_binary


def main(argv: list[str] | None = None) -> int:
    """``python -m kaito_core.testing [names...]``: build and print the folder."""
    args = argv if argv is not None else sys.argv[1:]
    allowed = (*ALL_BINARIES, *OPTIONAL_BINARIES, "node", "karpenter")
    unknown = [name for name in args if name not in allowed]
    if unknown:
        print(f"unknown binaries {unknown}; choose from {', '.join(allowed)}", file=sys.stderr)
        return 2
    try:
        if "node" in args:  # kubelet, kube-proxy, containerd, ctr, containerd-shim-runc-v2
            for path in ensure_node_binaries().values():
                print(path)
            print(ensure_pause_binary())
            args = [name for name in args if name != "node"]
            if not args:
                return 0
        if "karpenter" in args:  # Karpenter's kwok cloud provider (tests/karpenter)
            print(ensure_karpenter())
            args = [name for name in args if name != "karpenter"]
            if not args:
                return 0
        folder = ensure_binaries(tuple(args) or ALL_BINARIES)
    except ToolchainMissingError as exc:
        print(str(exc), file=sys.stderr)
        return 3
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
