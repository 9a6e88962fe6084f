"""The command line the operator renders: ``python -m kaito_presets.runtime.weights pull|push ...``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..oci import (
    add_registry_arguments,
)
from .common import DEFAULT_ATTEMPTS, WeightsError, _scrub
from .hf_pull import pull_hf
from .oci_pull import pull_oci
from .push import push_oci

log = logging.getLogger("kaito.weights")


def termination_log_path() -> Path | None:
    env = os.environ.get("KAITO_TERMINATION_LOG")
    if env:
        return Path(env)
    default = Path("/dev/termination-log")
    if default.is_file() and os.access(default, os.W_OK):
        return default
    return None


def report_failure(message: str) -> None:
    """One paragraph on stderr and in the termination-message file (the kubelet keeps 4 KiB)."""
    message = " ".join(message.split())
    print(f"error: {message}", file=sys.stderr, flush=True)
    path = termination_log_path()
    if path is None:
        return
    try:
        path.write_text(message.encode()[:4000].decode(errors="ignore") + "\n")
    except OSError as exc:
        log.warning("cannot write the termination message to %s: %s", path, exc)


def build_parser() -> argparse.ArgumentParser:
    """The command line; the Workspace reconciler's pod specs are tested against it."""
    parser = argparse.ArgumentParser(
        prog="python -m kaito_presets.runtime.weights", description=(__doc__ or "").split("\n")[0]
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_pull = sub.add_parser("pull", help="pull model weights into a directory")
    src = p_pull.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="a ModelPack OCI artifact REGISTRY/REPO:TAG (or @sha256:...)")
    src.add_argument("--hf-repo", help="a Hugging Face repository ORG/NAME (needs --revision)")
    p_pull.add_argument("--revision", help="the Hugging Face revision (a commit sha)")
    p_pull.add_argument("--dest", required=True)
    p_pull.add_argument("--attempts", type=int, default=DEFAULT_ATTEMPTS, help="tries for transient errors")
    p_pull.add_argument("--backoff", type=float, default=2.0, help="seconds before the first retry (doubles)")
    p_push = sub.add_parser("push", help="publish a model directory as a ModelPack OCI artifact")
    p_push.add_argument("--src", required=True)
    p_push.add_argument("--image", required=True)
    for p in (p_pull, p_push):
        add_registry_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("urllib3", "httpx", "httpcore", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    token = os.environ.get("HF_TOKEN") or None
    try:
        if args.cmd == "push":
            digest = push_oci(args.src, args.image, docker_config=args.docker_config, insecure=args.insecure)
            print(json.dumps({"event": "pushed", "image": args.image, "digest": digest}), flush=True)
        elif args.image:
            digest = pull_oci(
                args.image,
                args.dest,
                docker_config=args.docker_config,
                insecure=args.insecure,
                attempts=args.attempts,
                backoff=args.backoff,
            )
            print(
                json.dumps({"event": "pulled", "source": args.image, "dest": args.dest, "digest": digest}), flush=True
            )
        else:
            if not args.revision:
                raise WeightsError(f"--hf-repo {args.hf_repo} needs --revision (a pinned commit)")
            digest = pull_hf(
                args.hf_repo, args.revision, args.dest, token=token, attempts=args.attempts, backoff=args.backoff
            )
            print(json.dumps({"event": "pulled", "source": f"hf://{args.hf_repo}@{args.revision}",
                              "dest": args.dest, "digest": digest}), flush=True)  # fmt: skip
    except WeightsError as exc:
        report_failure(_scrub(str(exc), [token]))
        return 1
    return 0

