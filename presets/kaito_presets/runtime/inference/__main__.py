"""``python -m kaito_presets.runtime.inference [--config FILE] [flags]`` — serve a model over HTTP."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from .config import DEFAULT_CONFIG_PATH, load_config


def build_parser() -> argparse.ArgumentParser:
    """The command line; the Workspace reconciler's pod specs are tested against it."""
    p = argparse.ArgumentParser(prog="python -m kaito_presets.runtime.inference")
    p.add_argument("--config", default=DEFAULT_CONFIG_PATH, help="inference ConfigMap file (YAML)")
    p.add_argument("--model", help="local model directory")
    p.add_argument("--served-model-name")
    p.add_argument("--backend", choices=["transformers", "vllm"])
    p.add_argument("--dtype")
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--max-new-tokens-limit", type=int)
    p.add_argument("--max-request-bytes", type=int)
    p.add_argument("--max-pending-requests", type=int)
    p.add_argument("--api-key-file", help="file holding the bearer token clients must send (also $KAITO_API_KEY)")
    p.add_argument("--adapters-dir")
    p.add_argument("--device-map")
    p.add_argument("--combination-type")
    p.add_argument("--chat-template")
    p.add_argument("--trust-remote-code", action="store_true", default=None)
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    overrides = {k: v for k, v in vars(args).items() if k != "config"}
    config = load_config(args.config, overrides)

    import uvicorn

    from .base import create_backend
    from .server import create_app

    app = create_app(create_backend(config), config)
    uvicorn.run(app, host=config.host, port=config.port, log_level="info", timeout_keep_alive=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
